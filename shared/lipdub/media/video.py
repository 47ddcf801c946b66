"""Frame streams over ffmpeg pipes, so no stage ever holds a whole video in memory."""

from __future__ import annotations

import subprocess
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import numpy as np

from lipdub import FPS
from lipdub.errors import ErrorCode, InputError
from lipdub.media.probe import probe

# All-frames-seekable normalized source: H.264 with a keyframe every second, so a seek decodes at most
# FPS frames. Near-lossless (CRF 12) because it is re-encoded once more at the end.
NORMALIZED_ARGS = ["-c:v", "libx264", "-preset", "veryfast", "-crf", "12", "-g", str(FPS), "-pix_fmt", "yuv420p"]


def normalize_video(src: Path, dst: Path, max_height: int = 2160) -> tuple[int, int, int]:
    """Re-time `src` to constant 25 fps, apply its rotation, make sizes even; return (width, height, frames).

    ffmpeg auto-rotates on decode, so phone videos come out upright; the fps filter maps the source
    timeline (VFR or any rate) onto 25-fps slots by nearest timestamp, which is the mapping kept in the
    source track (frame i of the output ↔ source time i / 25 s).
    """
    scale = f"scale=w=-2:h='min({max_height},ih-mod(ih,2))':flags=bicubic"
    vf = f"fps={FPS},{scale},setsar=1"
    tmp = dst.with_suffix(".tmp" + dst.suffix)
    cmd = ["ffmpeg", "-v", "error", "-y", "-i", str(src), "-map", "0:v:0", "-an", "-vf", vf,
           *NORMALIZED_ARGS, "-movflags", "+faststart", str(tmp)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise InputError(ErrorCode.unsupported_video,
                         f"{src.name}: ffmpeg could not decode the video ({result.stderr.strip()[-300:]})")
    tmp.replace(dst)
    info = probe(dst)
    assert info.video is not None
    frames = count_frames(dst)
    return info.video.width, info.video.height, frames


def count_frames(path: Path) -> int:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_packets",
         "-show_entries", "stream=nb_read_packets", "-of", "csv=p=0", str(path)],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    return int(out.split(",")[0])


class FrameReader:
    """Random access to the RGB frames of a constant-25-fps video, in constant memory.

    Sequential reads stream from one ffmpeg process; a jump backwards (the reverse half of `bounce`)
    decodes the block of `block` frames ending at the wanted index once and serves it from a cache.
    """

    def __init__(self, path: Path, width: int, height: int, n_frames: int, block: int = FPS) -> None:
        self.path, self.width, self.height, self.n_frames, self.block = path, width, height, n_frames, block
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._proc: subprocess.Popen[bytes] | None = None
        self._next = 0  # index the running process yields next
        self._frame_bytes = width * height * 3

    def _start(self, index: int, count: int | None = None) -> subprocess.Popen[bytes]:
        cmd = ["ffmpeg", "-v", "error", "-ss", f"{index / FPS:.6f}", "-i", str(self.path)]
        if count is not None:
            cmd += ["-frames:v", str(count)]
        cmd += ["-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)

    def _remember(self, index: int, frame: np.ndarray) -> None:
        self._cache[index] = frame
        self._cache.move_to_end(index)
        while len(self._cache) > self.block * 2:
            self._cache.popitem(last=False)

    def _read(self, proc: subprocess.Popen[bytes]) -> np.ndarray | None:
        assert proc.stdout is not None
        buf = proc.stdout.read(self._frame_bytes)
        if len(buf) < self._frame_bytes:
            return None
        return np.frombuffer(buf, np.uint8).reshape(self.height, self.width, 3)

    def __getitem__(self, index: int) -> np.ndarray:
        if not 0 <= index < self.n_frames:
            raise IndexError(index)
        if index in self._cache:
            return self._cache[index]
        if self._proc is not None and self._next <= index < self._next + self.block:
            while self._next <= index:  # short skip forward: keep streaming
                frame = self._read(self._proc)
                if frame is None:
                    break
                self._remember(self._next, frame)
                self._next += 1
            if index in self._cache:
                return self._cache[index]
        if self._proc is not None and index < self._next:
            # Backwards: decode the block that ends at `index` and serve the following reads from it.
            start = max(0, index - self.block + 1)
            proc = self._start(start, index - start + 1)
            for i in range(start, index + 1):
                frame = self._read(proc)
                if frame is None:
                    break
                self._remember(i, frame)
            proc.wait()
            if index in self._cache:
                return self._cache[index]
        self._stop()
        self._proc, self._next = self._start(index), index
        frame = self._read(self._proc)
        if frame is None:  # the container reported more frames than it decodes: repeat the last one
            return self[index - 1]
        self._remember(index, frame)
        self._next = index + 1
        return frame

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(self.n_frames):
            yield self[i]

    def _stop(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None

    def close(self) -> None:
        self._stop()
        self._cache.clear()

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class VideoWriter:
    """Encode RGB frames to H.264 yuv420p at 25 fps through an ffmpeg pipe."""

    def __init__(self, path: Path, width: int, height: int, crf: int = 18, preset: str = "veryfast") -> None:
        self.path = path
        self._tmp = path.with_suffix(".tmp" + path.suffix)
        cmd = ["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
               "-r", str(FPS), "-i", "pipe:0", "-c:v", "libx264", "-preset", preset, "-crf", str(crf),
               "-pix_fmt", "yuv420p", "-r", str(FPS), "-movflags", "+faststart", str(self._tmp)]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.write(np.ascontiguousarray(frame, dtype=np.uint8).tobytes())
        self.frames += 1

    def close(self) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.close()
        err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
        if self._proc.wait() != 0:
            raise RuntimeError(f"ffmpeg encoder failed: {err.strip()[-500:]}")
        self._tmp.replace(self.path)  # written under a temp name so a crash never leaves a half file

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self._proc.kill()
            self._proc.wait()
            self._tmp.unlink(missing_ok=True)
