"""Landmark tracks of whole videos (raw MediaPipe face mesh, no smoothing) and 25-fps clip preparation.

Every video the metrics compare (ground truth, our output, a baseline) goes through the same detector in
the same mode, so detector bias cancels in LMD and MOC. Tracks are unsmoothed on purpose: jitter is one of
the things measured.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lipdub import FPS, SAMPLE_RATE
from lipdub.errors import ErrorCode, InputError
from lipdub.face.mesh import FaceMesh
from lipdub.media import ffmpeg
from lipdub.media.audio import load_audio
from lipdub.media.probe import probe
from lipdub.media.video import NORMALIZED_ARGS, FrameReader, count_frames


@dataclass
class VideoTrack:
    path: Path
    width: int
    height: int
    landmarks: np.ndarray  # [N, 478, 3] float32 pixels (zeros where no face)
    valid: np.ndarray  # [N] bool

    @property
    def n_frames(self) -> int:
        return len(self.valid)

    def reader(self) -> FrameReader:
        return FrameReader(self.path, self.width, self.height, self.n_frames)

    def take(self, index: np.ndarray) -> VideoTrack:
        """The track of a re-timed copy of this video (frame t of the copy = frame index[t] here)."""
        return VideoTrack(self.path, self.width, self.height, self.landmarks[index], self.valid[index])


def open_25fps(path: Path) -> tuple[int, int, int]:
    """(width, height, frames) of a constant-25-fps video, as FrameReader needs it."""
    info = probe(path)
    if info.video is None:
        raise InputError(ErrorCode.input_unreadable, f"{path.name}: no video stream")
    if abs(info.video.fps - FPS) > 0.01 or info.video.variable_frame_rate or info.video.rotation:
        raise ValueError(f"{path.name}: {info.video.fps:.3f} fps; evaluation reads constant {FPS}-fps files")
    return info.video.width, info.video.height, count_frames(path)


def track_video(path: Path, advance: Callable[[int], None] | None = None) -> VideoTrack:
    """Face-mesh landmarks of every frame of a constant-25-fps video (video mode, largest face)."""
    width, height, n = open_25fps(path)
    landmarks = np.zeros((n, 478, 3), np.float32)
    valid = np.zeros(n, bool)
    with FaceMesh() as mesh, FrameReader(path, width, height, n) as frames:
        for i, frame in enumerate(frames):
            faces = mesh(frame)
            if faces:
                landmarks[i], valid[i] = faces[0], True
            if advance is not None:
                advance(1)
    return VideoTrack(path, width, height, landmarks, valid)


def run_ffmpeg(cmd: list[str], what: str) -> None:
    """`ffmpeg -y *cmd` on an evaluation input; a failure is input_unreadable."""
    ffmpeg.run_ffmpeg(["-y", *cmd], code=ErrorCode.input_unreadable, what=what)


def prepare_clip(video: Path, out_dir: Path, max_seconds: float | None, audio: Path | None = None,
                 start: float = 0.0) -> tuple[Path, Path]:
    """Cut `video` to [start, start + max_seconds), re-time to 25 fps; return (clip.mp4, audio.wav).

    The wav is the clip's own soundtrack (or `audio`, e.g. a paired wav) over the same span, 16 kHz mono.
    The video is near-lossless (CRF 12), silent, with even sizes, like the pipeline's normalised source.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    clip, wav = out_dir / "clip.mp4", out_dir / "audio.wav"
    span = ["-ss", f"{start:.3f}"] + (["-t", f"{max_seconds:.3f}"] if max_seconds else [])
    # -frames:v as well as -t: the fps filter would otherwise emit the frame at exactly t = max_seconds too.
    count = ["-frames:v", str(round(max_seconds * FPS))] if max_seconds else []
    vf = f"fps={FPS},scale=trunc(iw/2)*2:trunc(ih/2)*2,setsar=1"
    run_ffmpeg([*span, "-i", str(video), "-map", "0:v:0", "-an", "-vf", vf, *count, *NORMALIZED_ARGS,
                str(clip)], f"{video.name}: could not cut the clip")
    source = audio or video
    run_ffmpeg([*span, "-i", str(source), "-map", "0:a:0", "-ac", "1", "-ar", str(SAMPLE_RATE), str(wav)],
            f"{source.name}: could not extract the audio")
    return clip, wav


def reverse_clip(clip: Path, out: Path) -> Path:
    """The clip played backwards (video only): a source whose mouth carries no information about the audio."""
    run_ffmpeg(["-i", str(clip), "-vf", "reverse", "-an", *NORMALIZED_ARGS, str(out)],
            f"{clip.name}: could not reverse")
    return out


def cut_frames(clip: Path, out: Path, start: int, count: int) -> Path:
    """Frames [start, start + count) of a 25-fps clip (video only), re-timed to start at 0."""
    out.parent.mkdir(parents=True, exist_ok=True)
    vf = f"trim=start_frame={start}:end_frame={start + count},setpts=PTS-STARTPTS"
    run_ffmpeg(["-i", str(clip), "-vf", vf, "-an", "-frames:v", str(count), *NORMALIZED_ARGS, str(out)],
               f"{clip.name}: could not cut frames {start}-{start + count}")
    return out


def cut_audio(src: Path, dst: Path, max_seconds: float | None) -> Path:
    """The first `max_seconds` of any audio file as 16 kHz mono wav (what the audio stage reads)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    span = ["-t", f"{max_seconds:.3f}"] if max_seconds else []
    run_ffmpeg(["-i", str(src), *span, "-map", "0:a:0", "-ac", "1", "-ar", str(SAMPLE_RATE), str(dst)],
               f"{src.name}: could not decode the audio")
    return dst


def load_wav(path: Path) -> np.ndarray:
    return load_audio(path, SAMPLE_RATE)
