"""Training data of the renderer: mouth windows of the corpus' talking and silent clips, cut once and cached.

Cutting windows needs decoded frames and face meshes, which is the slow part, so every clip is processed
once into `<cache>/<clip>.npz` (under the data dir, never in git: the footage and anything derived from it
stay local). Landmarks cached by the audio model's corpus extraction are reused when present (same 25-fps,
480-px normalisation); other clips get MediaPipe on the sampled frames only.

Samples are self-supervised (DH_live/DINet recipe): the target is a real window, the prompt comes from that
frame's own landmarks, the references are other frames of the same clip, taken from its more open frames.
Every sample is a pure function of (seed, step, slot), so training is deterministic and resumable.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from lipdub import FPS
from lipdub.errors import ErrorCode
from lipdub.face import landmarks as L
from lipdub.face.mesh import FaceMesh
from lipdub.media.ffmpeg import FfmpegProcess
from lipdub.media.probe import probe
from lipdub.render import prompt, window

MAX_HEIGHT = 480  # decode height: the audio model's corpus cache uses the same, so its landmarks fit
FOLDERS = ("talking", "silent")


@dataclass(frozen=True)
class CorpusVideo:
    name: str
    path: Path
    identity: str
    license: str
    source_repo: str
    held_out: bool


def identity_key(guess: str) -> str:
    """Group key of a manifest identity (eval_clips.json: "Obama (per filename)" and "Obama" are one person;
    "looks like same person as X" joins X's group)."""
    text = guess.strip().lower()
    marker = "looks like same person as"
    if marker in text:
        return text.split(marker, 1)[1].strip(" )").split()[0].strip(",;")
    return text.split("(")[0].strip()


def held_out_identities() -> set[str]:
    data = json.loads(resources.files("lipdub.eval").joinpath("eval_clips.json").read_text())
    return {identity_key(i) for i in data["exclude_identities"]}


def corpus_videos(corpus: Path) -> list[CorpusVideo]:
    held = held_out_identities()
    out = []
    with open(corpus / "manifest.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["folder"] not in FOLDERS:
                continue
            ident = identity_key(row["identity_guess"])
            out.append(CorpusVideo(row["file"], corpus / row["folder"] / row["file"], ident, row["license"],
                                   row["source_repo"], ident in held))
    return out


def decode_frames(path: Path, keep: set[int] | None = None) -> tuple[list[np.ndarray], int]:
    """25-fps RGB frames scaled to at most MAX_HEIGHT (the `normalize_video` mapping); only indices in `keep`
    are returned (all if None) with the total frame count."""
    info = probe(path)
    assert info.video is not None
    w, h = info.video.display_size
    oh = min(MAX_HEIGHT, h - h % 2)
    ow = round(oh * w / (h * 2)) * 2
    vf = f"fps={FPS},scale=w={ow}:h={oh}:flags=bicubic,setsar=1"
    proc = FfmpegProcess(["-i", str(path), "-map", "0:v:0", "-vf", vf, "-f", "rawvideo", "-pix_fmt", "rgb24",
                          "pipe:1"], code=ErrorCode.input_unreadable, what=f"{path.name}: ffmpeg could not decode",
                         stdout=True)
    frames, n, size = [], 0, ow * oh * 3
    try:
        while True:
            buf = proc.stdout.read(size)
            if len(buf) < size:
                break
            if keep is None or n in keep:
                frames.append(np.frombuffer(buf, np.uint8).reshape(oh, ow, 3))
            n += 1
    finally:
        # Unchecked exit: a clip that fails part-way keeps the frames it gave (cut_clip skips it when short).
        proc.kill()
        proc.close()
    return frames, n


def cut_clip(video: CorpusVideo, size: int, margin: int, max_frames: int,
             landmark_cache: Path | None) -> dict[str, np.ndarray] | None:
    """Windows (size + 2·margin px) of up to `max_frames` evenly spaced frames with a face."""
    marks = None
    if landmark_cache is not None and (landmark_cache / f"{video.name}.npz").is_file():
        with np.load(landmark_cache / f"{video.name}.npz") as d:
            marks = d["landmarks"][..., :2]
    if marks is not None:
        ok = np.flatnonzero(~np.isnan(marks[:, 0, 0]))
        pick = ok[np.linspace(0, len(ok) - 1, min(max_frames, len(ok))).round().astype(int)] if len(ok) else ok
        frames, _ = decode_frames(video.path, set(pick.tolist()))
        if len(frames) != len(pick):
            return None
        points = [marks[i] for i in pick]
    else:
        _, n = decode_frames(video.path, set())
        want = np.unique(np.linspace(0, n - 1, min(max_frames, n)).round().astype(int))
        frames_all, _ = decode_frames(video.path, set(want.tolist()))
        frames, points = [], []
        with FaceMesh(tracking=False) as mesh:
            for frame in frames_all:
                faces = mesh(frame)
                if faces:
                    frames.append(frame)
                    points.append(faces[0][:, :2])
    if len(frames) < 8:
        return None
    side = size + 2 * margin
    crops, wpts = [], []
    for frame, pts in zip(frames, points):
        a = window.window_affine(pts, size, margin)
        crops.append(window.crop(frame, a, side))
        wpts.append(window.apply(a, pts))
    wp = np.stack(wpts)
    return {"crops": np.stack(crops), "points": wp.astype(np.float32),
            "opening": L.mouth_opening(wp).astype(np.float32)}


def build_cache(corpus: Path, cache: Path, size: int, margin: int, max_frames: int = 80,
                landmark_cache: Path | None = None, log: bool = True) -> list[Path]:
    """Cut every corpus clip not cached yet; returns the cache files (training and held-out alike)."""
    cache.mkdir(parents=True, exist_ok=True)
    paths = []
    for v in corpus_videos(corpus):
        out = cache / f"{v.name}.npz"
        skipped = cache / f"{v.name}.skip"  # remembered, so a rerun does not search the same clip again
        if skipped.is_file():
            continue
        if not out.is_file():
            data = cut_clip(v, size, margin, max_frames, landmark_cache)
            if data is None:
                skipped.write_text("too few frames with a face\n")
                if log:
                    print(f"skip {v.name}: too few frames with a face", flush=True)
                continue
            tmp = out.with_suffix(f".{os.getpid()}.tmp.npz")  # ranks of a torchrun may cut the same clip
            np.savez(tmp, **data, identity=v.identity, held_out=v.held_out)
            tmp.replace(out)
            if log:
                print(f"cut {v.name}: {len(data['crops'])} windows", flush=True)
        paths.append(out)
    return paths


@dataclass
class ClipWindows:
    name: str
    identity: str
    held_out: bool
    crops: np.ndarray  # [n, S+2m, S+2m, 3] uint8
    points: np.ndarray  # [n, 478, 2] window coordinates (margin included)
    opening: np.ndarray  # [n]

    @classmethod
    def load(cls, path: Path) -> ClipWindows:
        with np.load(path) as d:
            return cls(path.name.removesuffix(".npz"), str(d["identity"]), bool(d["held_out"]), d["crops"],
                       d["points"], d["opening"])


class WindowSampler:
    """Builds training/evaluation batches: (source [B,5,S,S], refs [B,4K,S,S], target [B,3,S,S]) as numpy."""

    def __init__(self, clips: list[ClipWindows], size: int, refs: int, seed: int, augment: bool = True) -> None:
        if not clips:
            raise ValueError("no clips to sample from")
        self.clips, self.size, self.refs, self.seed, self.augment = clips, size, refs, seed, augment
        self.margin = (clips[0].crops.shape[1] - size) // 2
        # Reference pool per clip: frames above the ⅓ opening quantile (the DH_live training rule).
        self.pool = [np.flatnonzero(c.opening >= np.quantile(c.opening, 1 / 3)) for c in clips]
        # Clips are drawn with weight √n so long clips don't dominate but still count more.
        w = np.sqrt([len(c.crops) for c in clips])
        self.clip_p = w / w.sum()

    def _window(self, clip: ClipWindows, i: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        m = self.margin
        dx, dy = (rng.integers(0, 2 * m + 1, 2) if self.augment and m else (m, m))
        img = clip.crops[i, dy:dy + self.size, dx:dx + self.size]
        return img, clip.points[i] - (dx, dy)

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ci = int(rng.choice(len(self.clips), p=self.clip_p))
        clip = self.clips[ci]
        t = int(rng.integers(len(clip.crops)))
        pool = self.pool[ci][self.pool[ci] != t]
        if pool.size < self.refs:
            pool = np.flatnonzero(np.arange(len(clip.crops)) != t)
        ref_idx = rng.choice(pool, self.refs, replace=pool.size < self.refs)
        target, tpts = self._window(clip, t, rng)
        refs = [self._window(clip, int(r), rng) for r in ref_idx]
        target = target.astype(np.float32)
        if self.augment:
            # Colour changes shared by target and references (lighting/white balance), plus a small offset on
            # the references only so the generator takes colour from the source, not from the references.
            gain = rng.uniform(0.85, 1.15, 3).astype(np.float32) * rng.uniform(0.9, 1.1)
            target = np.clip(target * gain, 0, 255)
            refs = [(np.clip(img.astype(np.float32) * gain + rng.uniform(-10, 10, 3).astype(np.float32), 0, 255), p)
                    for img, p in refs]
        src = prompt.source_input(target, tpts)
        ref = np.concatenate([prompt.reference_input(img, p) for img, p in refs])
        return src, ref, target.transpose(2, 0, 1) / 255.0

    def batch(self, seed_key: tuple[int, ...], n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rng = np.random.default_rng((self.seed, *seed_key))
        items = [self.sample(rng) for _ in range(n)]
        return tuple(np.stack([it[k] for it in items]).astype(np.float32) for k in range(3))


def load_clips(paths: list[Path]) -> tuple[list[ClipWindows], list[ClipWindows]]:
    """(training clips, held-out clips)."""
    clips = [ClipWindows.load(p) for p in sorted(paths)]
    return [c for c in clips if not c.held_out], [c for c in clips if c.held_out]
