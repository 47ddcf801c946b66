"""Preflight: a quick look at the first seconds of a source — summary and predicted gate verdict.

Runs the same face pass, target choice and gate as a full prep on `settings.preflight_seconds` of
frames, without writing a normalised video. The API's preflight endpoint calls `preflight`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from lipdub import FPS
from lipdub.config import Settings
from lipdub.errors import ErrorCode, InputError
from lipdub.media.ffmpeg import FfmpegProcess
from lipdub.media.probe import probe
from lipdub.media.video import plan_normalization
from lipdub.prep.analysis import analyze_faces
from lipdub.prep.gate import Verdict
from lipdub.prep.source import assemble, check_length
from lipdub.prep.speaker import soundtrack
from lipdub.prep.track import TrackSummary
from lipdub.prep.tracking import Target


@dataclass(frozen=True)
class Preflight:
    verdict: Verdict
    summary: TrackSummary | None  # None when the file could not be read at all
    sampled_seconds: float
    duration: float  # of the whole source

    def as_dict(self) -> dict[str, object]:
        return {"verdict": self.verdict.as_dict(), "summary": None if self.summary is None else asdict(self.summary),
                "sampled_seconds": self.sampled_seconds, "duration": self.duration}


def preflight(video: Path, settings: Settings, target: Target | None = None,
              seconds: float | None = None) -> Preflight:
    """Predict the prep verdict from the first `seconds` (default settings.preflight_seconds)."""

    seconds = seconds or settings.preflight_seconds
    try:
        info = probe(video)
        check_length(info, settings)
        plan = plan_normalization(info, settings.max_height, settings.prep_analysis_height)
    except InputError as exc:
        return Preflight(Verdict(exc.code, exc.message), None, 0.0, 0.0)
    duration = max(info.duration, info.video.duration if info.video else 0.0)
    frames = sample_frames(video, plan.analysis_width, plan.analysis_height, seconds)
    faces = analyze_faces(frames, plan.width, plan.height, round(settings.face_track_gap_s * FPS))
    # The sample is short by design: judge its faces, but the length check uses the whole source.
    short = settings.model_copy(update={"min_video_frames": min(settings.min_video_frames, faces.n_frames or 1)})
    result = assemble(video.name, faces, plan, info, short, target,
                      (lambda: soundtrack(video, seconds)) if info.audio is not None else None)
    return Preflight(result.verdict, result.summary, faces.n_frames / FPS, duration)


def sample_frames(video: Path, width: int, height: int, seconds: float) -> Iterator[np.ndarray]:
    """The first `seconds` at 25 fps, upright, at analysis size (RGB frames)."""
    args = ["-t", f"{seconds:.3f}", "-i", str(video), "-map", "0:v:0",
            "-vf", f"fps={FPS},scale={width}:{height}:flags=area,setsar=1", "-f", "rawvideo", "-pix_fmt", "rgb24",
            "pipe:1"]
    size = width * height * 3
    # Never raises: a sample that ends early is judged on the frames it has, as a short source would be.
    proc = FfmpegProcess(args, code=ErrorCode.unsupported_video, what=f"{video.name}: ffmpeg could not decode "
                                                                      "the video", stdout=True)
    try:
        while len(buf := proc.stdout.read(size)) == size:
            yield np.frombuffer(buf, np.uint8).reshape(height, width, 3)
    finally:
        proc.kill()
        proc.close()
