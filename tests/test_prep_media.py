"""Generated clips for the prep tests (faces from scikit-image's public-domain astronaut portrait); no tests here."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from lipdub.demo import face_image
from lipdub.media.video import VideoWriter


def face_crop(size: int = 200) -> np.ndarray:
    """The astronaut's head, square, `size` px."""
    img = face_image()
    return cv2.resize(np.ascontiguousarray(img[10:250, 105:345]), (size, size), interpolation=cv2.INTER_AREA)


def write_clip(path: Path, n: int, width: int, height: int, frame: Callable[[int], np.ndarray], crf: int = 18) -> Path:
    with VideoWriter(path, width, height, crf=crf, tune="none") as w:  # the fixtures as they were made
        for i in range(n):
            w.write(frame(i))
    return path


def canvas(width: int, height: int, level: int = 90) -> np.ndarray:
    return np.full((height, width, 3), level, np.uint8)


def paste(dst: np.ndarray, img: np.ndarray, x: int, y: int) -> np.ndarray:
    """Paste `img` with its top-left corner at (x, y), clipped to `dst`."""
    h, w = img.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, dst.shape[1]), min(y + h, dst.shape[0])
    if x1 > x0 and y1 > y0:
        dst[y0:y1, x0:x1] = img[y0 - y:y1 - y, x0 - x:x1 - x]
    return dst


def still_face(path: Path, seconds: float = 3.0, noise: float = 4.0, seed: int = 0) -> Path:
    """A still head with per-frame sensor noise: any landmark motion is jitter."""
    face, rng = face_crop(220), np.random.default_rng(seed)

    def frame(i: int) -> np.ndarray:
        img = paste(canvas(256, 256), face, 18, 18).astype(np.float32)
        return np.clip(img + rng.normal(0, noise, img.shape), 0, 255).astype(np.uint8)

    return write_clip(path, round(seconds * 25), 256, 256, frame)


def sway_face(path: Path, seconds: float = 3.0) -> Path:
    face = face_crop(200)

    def frame(i: int) -> np.ndarray:
        return paste(canvas(256, 256), face, 28 + round(6 * np.sin(i / 8)), 28 + round(4 * np.cos(i / 11)))

    return write_clip(path, round(seconds * 25), 256, 256, frame)


def no_face(path: Path, seconds: float = 2.0) -> Path:
    def frame(i: int) -> np.ndarray:
        x = np.linspace(0, 255, 256, dtype=np.float32)
        g = (x[None, :] + 3 * i + x[:, None] / 2) % 256
        return np.stack([g, 255 - g, np.full_like(g, 120)], -1).astype(np.uint8)

    return write_clip(path, round(seconds * 25), 256, 256, frame)


def two_faces(path: Path, seconds: float = 2.0, right_size: int = 200, right_seconds: float | None = None) -> Path:
    """Two heads side by side (left 200 px, right `right_size` px, shown for `right_seconds` only)."""
    left, right = face_crop(200), face_crop(right_size)

    def frame(i: int) -> np.ndarray:
        img = paste(canvas(480, 256), left, 20 + (i % 4 == 0), 28)
        if right_seconds is None or i < right_seconds * 25:
            img = paste(img, right, 460 - right_size - (i % 5 == 0), 28 + (200 - right_size) // 2)
        return img

    return write_clip(path, round(seconds * 25), 480, 256, frame)


def face_leaves(path: Path, seconds: float = 4.0, gone: tuple[float, float] = (1.5, 2.5)) -> Path:
    """The head slides out of the frame to the left, stays out for `gone`, and slides back."""
    face = face_crop(180)
    slide = 0.3  # seconds to leave / to come back

    def x_at(t: float) -> float:
        home, out = 40.0, -240.0
        if t < gone[0] - slide or t >= gone[1] + slide:
            return home
        if t < gone[0]:
            return home + (out - home) * (t - gone[0] + slide) / slide
        if t < gone[1]:
            return out
        return out + (home - out) * (t - gone[1]) / slide

    return write_clip(path, round(seconds * 25), 256, 256,
                      lambda i: paste(canvas(256, 256), face, round(x_at(i / 25)), 38))


def cylinder_turn(img: np.ndarray, degrees: float) -> np.ndarray:
    """Render a frontal face as if painted on a vertical cylinder turned by `degrees` (a 3D-ish yaw: the
    near cheek widens, the far one foreshortens and the nose moves off-centre)."""
    h, w = img.shape[:2]
    r = w / 2
    xs = (np.arange(w, dtype=np.float32) - r) / r  # output position on the cylinder's silhouette, −1…1
    phi = np.arcsin(np.clip(xs, -1, 1)) - np.radians(degrees)  # angle on the surface before turning
    src_x = np.where(np.abs(phi) < np.pi / 2, r + r * np.sin(phi), -1).astype(np.float32)
    map_x = np.repeat(src_x[None, :], h, 0)
    map_y = np.repeat(np.arange(h, dtype=np.float32)[:, None], w, 1)
    return cv2.remap(img, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(90, 90, 90))


def turned_face(path: Path, seconds: float = 3.0, turn: tuple[float, float] = (0.0, 3.0), degrees: float = 60.0) -> Path:
    """A profile turn: during `turn` the head turns to `degrees` of yaw (ramping over 0.2 s) and back."""
    face = face_crop(200)

    def frame(i: int) -> np.ndarray:
        t = i / 25
        a = 0.0
        if turn[0] <= t < turn[1]:
            a = degrees * min(1.0, (t - turn[0]) / 0.2, (turn[1] - t) / 0.2)
        return paste(canvas(256, 256), cylinder_turn(face, a), 28, 28)

    return write_clip(path, round(seconds * 25), 256, 256, frame)


def rotated_phone(src: Path, dst: Path, degrees: int = 90) -> Path:
    """Re-encode `src` with its pixels rotated and a rotation tag that turns them upright again on display
    (what phones record)."""
    transpose = {90: "transpose=2", 270: "transpose=1", 180: "hflip,vflip"}[degrees]
    sideways = dst.with_name(dst.stem + ".sideways.mp4")
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(src), "-vf", transpose, "-c:v", "libx264",
                    "-crf", "18", "-pix_fmt", "yuv420p", str(sideways)], check=True)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(sideways), "-c", "copy",
                    "-metadata:s:v:0", f"rotate={degrees}", str(dst)], check=True)
    return dst


def variable_rate(src: Path, dst: Path) -> Path:
    """Re-time `src` (25 fps) to a variable frame rate: 25 fps, then 30 fps, then 15 fps, as phones and
    screen recorders produce."""
    pts = "if(lt(N,25),N/25,if(lt(N,55),1+(N-25)/30,2+(N-55)/15))/TB"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(src), "-vf", f"setpts='{pts}'", "-fps_mode", "vfr",
                    "-c:v", "libx264", "-crf", "18", "-pix_fmt", "yuv420p", str(dst)], check=True)
    return dst


def slideshow(path: Path, seconds: float = 4.0) -> Path:
    """A 2-fps 'video' of a face (a slideshow): unsupported."""
    tmp = still_face(path.with_name(path.stem + ".src.mp4"), seconds, noise=0)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(tmp), "-vf", "fps=2", "-c:v", "libx264",
                    "-pix_fmt", "yuv420p", str(path)], check=True)
    return path


def title_then_face(path: Path, seconds: float = 2.0) -> Path:
    """A title card without a face, then a cut to a swaying head: a first shot with nothing to dub."""
    face = face_crop(200)
    n = round(seconds * 25)

    def frame(i: int) -> np.ndarray:
        if i < n:
            card = canvas(256, 256, level=30)
            cv2.putText(card, "lipdub", (40, 140), cv2.FONT_HERSHEY_SIMPLEX, 1.5, (230, 230, 230), 3)
            return card
        return paste(canvas(256, 256), face, 28 + round(4 * np.sin(i / 8)), 28)

    return write_clip(path, 2 * n, 256, 256, frame)


def cut_to_another_face(path: Path, seconds: float = 2.0, stretch: float = 1.15) -> Path:
    """Two shots: the swaying head, then (a hard cut) a head of other proportions, the same one stretched
    `stretch` times in height: a face shape no similarity transform maps onto the first, as another person's."""
    face = face_crop(200)
    tall = cv2.resize(face, (200, round(200 * stretch)), interpolation=cv2.INTER_AREA)
    top = (tall.shape[0] - 200) // 2
    other = np.ascontiguousarray(tall[top: top + 200])
    n = round(seconds * 25)

    def frame(i: int) -> np.ndarray:
        if i < n:
            return paste(canvas(256, 256), face, 20 + round(4 * np.sin(i / 8)), 28)
        return paste(canvas(256, 256, level=40), other, 44 + round(4 * np.sin(i / 8)), 36)

    return write_clip(path, 2 * n, 256, 256, frame)


def cut_to_another_shot(path: Path, seconds: float = 2.0, far: bool = False) -> Path:
    """Two shots: a swaying head on grey, then (a hard cut) a mirrored, recoloured head on a darker
    background: another camera, or another person at a glance; near where the first one was, or (`far`)
    smaller and at the other side of a wider frame."""
    face = face_crop(200)
    other = np.ascontiguousarray((face[:, ::-1] * np.array([0.8, 1.0, 1.15])).clip(0, 255).astype(np.uint8))
    n, width = round(seconds * 25), 448 if far else 256
    if far:
        other = cv2.resize(other, (170, 170), interpolation=cv2.INTER_AREA)

    def frame(i: int) -> np.ndarray:
        if i < n:
            return paste(canvas(width, 256), face, 20 + round(4 * np.sin(i / 8)), 28)
        x = 260 if far else 44
        return paste(canvas(width, 256, level=40), other, x + round(4 * np.sin(i / 8)), 36)

    return write_clip(path, 2 * n, width, 256, frame)


def big_listener(path: Path, seconds: float) -> Path:
    """A head of 320 px on 384×384, swaying and silent: 1.6 times the size of the talking heads."""
    face = face_crop(320)

    def frame(i: int) -> np.ndarray:
        return paste(canvas(384, 384), face, 32 + round(6 * np.sin(i / 8)), 32 + round(4 * np.cos(i / 11)))

    return write_clip(path, round(seconds * 25), 384, 384, frame)


def talking_face(path: Path, speech: Path, seconds: float, workdir: Path) -> Path:
    """The astronaut's head (200 px, on 256×256) saying `speech`: dubbed by lipdub itself (the student audio
    model and the warp renderer), so its lips follow that speech (silent: the caller muxes a soundtrack)."""
    from lipdub.config import Settings
    from lipdub.jobs import JobOptions
    from lipdub.pipeline import dub

    still = sway_face(workdir / f"{path.stem}_still.mp4", seconds)
    settings = Settings(data_dir=workdir / "data", renderer="warp", audio_model="student", sync_estimate=False)
    dub(still, speech, workdir / f"{path.stem}_dubbed.mp4", settings, JobOptions.under(settings, sync_mode="cut_off"))
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(workdir / f"{path.stem}_dubbed.mp4"), "-an", "-c", "copy",
                    str(path)], check=True)
    return path


def side_by_side(path: Path, left: Path, right: Path, audio: Path | None) -> Path:
    """Two clips next to each other, tops aligned (as long as the shorter), with `audio` as the soundtrack."""
    from lipdub.media.probe import probe
    from lipdub.media.video import FrameReader, count_frames

    n = min(count_frames(left), count_frames(right))
    (wa, ha), (wb, hb) = ((probe(c).video.width, probe(c).video.height) for c in (left, right))
    height = max(ha, hb)
    with FrameReader(left, wa, ha, n) as a, FrameReader(right, wb, hb, n) as b:
        silent = write_clip(path.with_suffix(".silent.mp4"), n, wa + wb, height,
                            lambda i: paste(paste(canvas(wa + wb, height), a[i], 0, 0), b[i], wa, 0))
    if audio is None:
        return silent.replace(path)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(silent), "-i", str(audio), "-map", "0:v", "-map", "1:a",
                    "-c:v", "copy", "-c:a", "aac", "-shortest", str(path)], check=True)
    return path
