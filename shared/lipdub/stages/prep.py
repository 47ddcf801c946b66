"""prep: normalise the source video to 25 fps and track the face mesh in every frame.

Writes into `out_dir`: `video.mp4` (the normalised, seekable source), `track.npz` (landmarks, validity)
and `track.json` (summary). The render stage reads only these.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import convolve1d

from lipdub import FPS
from lipdub.config import Settings
from lipdub.errors import ErrorCode, InputError
from lipdub.face import landmarks as L
from lipdub.face.mesh import FaceMesh
from lipdub.media.video import FrameReader, normalize_video
from lipdub.progress import SILENT, Progress

PREP_VERSION = 1  # bump when the track format or the tracking changes: old caches are then ignored

SMOOTH = np.array([0.1, 0.8, 0.1], np.float32)  # zero-phase: removes jitter without lag


@dataclass
class TrackSummary:
    version: int
    width: int
    height: int
    n_frames: int
    fps: int
    face_coverage: float
    face_px: float  # median side of the face-mesh bounding box
    rest_opening: float  # the speaker's mouth opening at rest (10th percentile): audio motion adds to it


@dataclass
class SourceTrack:
    dir: Path
    summary: TrackSummary
    landmarks: np.ndarray  # [N, 478, 3] float32 pixels
    valid: np.ndarray  # [N] bool

    @property
    def video(self) -> Path:
        return self.dir / "video.mp4"

    def reader(self) -> FrameReader:
        s = self.summary
        return FrameReader(self.video, s.width, s.height, s.n_frames)

    @classmethod
    def load(cls, out_dir: Path) -> SourceTrack:
        summary = TrackSummary(**json.loads((out_dir / "track.json").read_text()))
        with np.load(out_dir / "track.npz") as data:
            return cls(out_dir, summary, data["landmarks"], data["valid"])


def smooth_landmarks(points: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Zero-phase temporal smoothing inside each run of valid frames (never across a face-less gap)."""
    out = points.copy()
    idx = np.flatnonzero(valid)
    if idx.size == 0:
        return out
    runs = np.split(idx, np.flatnonzero(np.diff(idx) > 1) + 1)
    for run in runs:
        if run.size >= 3:
            out[run] = convolve1d(points[run], SMOOTH, axis=0, mode="nearest")
    return out


def prepare_source(video: Path, out_dir: Path, settings: Settings, progress: Progress = SILENT) -> SourceTrack:
    out_dir.mkdir(parents=True, exist_ok=True)
    width, height, n = normalize_video(video, out_dir / "video.mp4", settings.max_height)
    if n < settings.min_video_frames:
        raise InputError(ErrorCode.video_too_short,
                         f"{video.name}: {n} frames at {FPS} fps; at least {settings.min_video_frames} are needed")
    landmarks = np.zeros((n, 478, 3), np.float32)
    valid = np.zeros(n, bool)
    with FaceMesh() as mesh, FrameReader(out_dir / "video.mp4", width, height, n) as frames, \
            progress.stage("prep", n) as advance:
        for i, frame in enumerate(frames):
            faces = mesh(frame)
            if faces:
                landmarks[i], valid[i] = faces[0], True
            advance(1)
    coverage = float(valid.mean())
    if coverage < settings.min_face_coverage:
        raise InputError(ErrorCode.no_face,
                         f"{video.name}: a face was found in {coverage:.0%} of frames; "
                         f"at least {settings.min_face_coverage:.0%} are needed")
    sides = np.ptp(landmarks[valid][:, L.FACE_OVAL, :2], axis=1).max(axis=1)
    face_px = float(np.median(sides))
    if face_px < settings.min_face_px:
        raise InputError(ErrorCode.face_too_small,
                         f"{video.name}: the face is {face_px:.0f} px; at least {settings.min_face_px} px are needed")
    landmarks = smooth_landmarks(landmarks, valid)
    rest = float(np.percentile(L.mouth_opening(landmarks[valid]), 10))
    summary = TrackSummary(PREP_VERSION, width, height, n, FPS, coverage, face_px, rest)
    tmp = out_dir / "track.tmp.npz"
    np.savez_compressed(tmp, landmarks=landmarks, valid=valid)
    tmp.replace(out_dir / "track.npz")
    (out_dir / "track.json").write_text(json.dumps(asdict(summary), indent=2))
    return SourceTrack(out_dir, summary, landmarks, valid)
