"""The source track: everything the render stage needs from a prepared source, stored as npz + JSON.

`PREP_VERSION` is part of the file and of the cache key: bump it whenever the tracking, smoothing or the
format changes, and every old cache entry is ignored.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from lipdub.media.video import FrameReader

PREP_VERSION = 5  # 3: shot cuts (never smoothed across; references, neutral face and rest opening per shot);
# 4: how far each shot's face is from the main shot's (shot_person_distance); 5: equally prominent faces are
# told apart by the source's own speech (prep.speaker), so cached multiple_faces rejections are judged again

ARRAYS = ("landmarks", "valid", "present", "frame_flags", "rotation", "translation", "scale", "angles", "crop",
          "mouth_opening", "reference_frames", "neutral_shape", "shot", "shot_rest_opening", "source_index",
          "source_time")


@dataclass
class TrackSummary:
    version: int
    width: int
    height: int
    n_frames: int
    fps: int
    face_coverage: float  # share of frames where the target face was found
    face_px: float  # median side of the target face's landmark box
    rest_opening: float  # the speaker's mouth opening at rest (10th percentile): audio motion adds to it
    usable_share: float = 1.0  # share of frames rendered (the rest pass through)
    pass_through: int = 0
    yaw: dict[str, float] = field(default_factory=dict)  # degrees: p5, p50, p95, max_abs
    pitch: dict[str, float] = field(default_factory=dict)
    n_faces: int = 1  # face tracks long enough to count
    target_id: int = 0
    target_source: str = "auto"  # auto | user | speaker (the face whose lips follow the source's speech)
    reference_frames: list[int] = field(default_factory=list)
    cuts: list[int] = field(default_factory=list)  # frames after a cut (lipdub.prep.shots); see also `shot`
    # Per shot: its face's distance from the main shot's (lipdub.prep.shots.person_distance; None: no usable
    # face in the shot). Above shots.OTHER_PERSON_DISTANCE the shot likely shows another person.
    shot_person_distance: list[float | None] = field(default_factory=list)
    normalization: list[str] = field(default_factory=list)  # what ffmpeg fixed (fps, vfr, rotation, ...)
    flags: list[str] = field(default_factory=list)
    source: dict[str, object] = field(default_factory=dict)  # the original stream: size, fps, rotation, codec

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> TrackSummary:
        return cls(**data)  # type: ignore[arg-type]


@dataclass
class SourceTrack:
    """Per frame at 25 fps (arrays of length N): landmarks [N, 478, 3] (smoothed, pixels of the normalised
    video), valid (render this frame; else pass through), present (target face found), frame_flags (gate
    bits), head pose (rotation [N, 3, 3], translation [N, 3] px, scale [N] px per canonical unit, angles
    [N, 3] yaw/pitch/roll degrees), crop [N, 4] (x0, y0, x1, y1 px, the renderer's face box), mouth_opening
    [N], shot [N] (0, 1, ...: between cuts, a shot under a second joined to a neighbour); the timeline
    back to the source (source_index, source_time [s]); per shot: reference frames (reference_frames, all
    shots' together), neutral_shape [S, 478, 3] (canonical space, mouth closed) and shot_rest_opening [S];
    and the summary. `for_shot` gives the track as the renderer of one shot sees it."""

    dir: Path
    summary: TrackSummary
    landmarks: np.ndarray
    valid: np.ndarray
    present: np.ndarray | None = None
    frame_flags: np.ndarray | None = None
    rotation: np.ndarray | None = None
    translation: np.ndarray | None = None
    scale: np.ndarray | None = None
    angles: np.ndarray | None = None
    crop: np.ndarray | None = None
    mouth_opening: np.ndarray | None = None
    reference_frames: np.ndarray | None = None
    neutral_shape: np.ndarray | None = None
    shot: np.ndarray | None = None
    shot_rest_opening: np.ndarray | None = None
    source_index: np.ndarray | None = None
    source_time: np.ndarray | None = None

    @property
    def n_shots(self) -> int:
        return int(self.shot[-1]) + 1 if self.shot is not None and len(self.shot) else 1

    def for_shot(self, shot: int) -> SourceTrack:
        """This track as one shot's renderer sees it: only that shot's frames usable and its references, its
        neutral face and rest opening (a cut to another person must not borrow the first one's lips). The
        per-frame arrays are shared, not copied."""
        if self.shot is None or self.neutral_shape is None or self.neutral_shape.ndim == 2:
            return self
        in_shot = self.shot == shot
        refs = self.reference_frames
        rest = (float(self.shot_rest_opening[shot]) if self.shot_rest_opening is not None
                else self.summary.rest_opening)
        return replace(self, summary=replace(self.summary, rest_opening=rest), valid=self.valid & in_shot,
                       reference_frames=None if refs is None else refs[in_shot[refs]],
                       neutral_shape=self.neutral_shape[shot])

    @property
    def video(self) -> Path:
        return self.dir / "video.mp4"

    def reader(self) -> FrameReader:
        s = self.summary
        return FrameReader(self.video, s.width, s.height, s.n_frames)

    def save(self) -> None:
        """Write track.npz and track.json (temp names first: a crash never leaves a half track)."""
        arrays = {name: getattr(self, name) for name in ARRAYS if getattr(self, name) is not None}
        tmp = self.dir / "track.tmp.npz"
        np.savez_compressed(tmp, version=np.int32(PREP_VERSION), **arrays)
        tmp.replace(self.dir / "track.npz")
        tmp_json = self.dir / "track.tmp.json"
        tmp_json.write_text(json.dumps(asdict(self.summary), indent=2))
        tmp_json.replace(self.dir / "track.json")

    @classmethod
    def load(cls, out_dir: Path) -> SourceTrack:
        summary = TrackSummary.from_dict(json.loads((out_dir / "track.json").read_text()))
        if summary.version != PREP_VERSION:
            raise ValueError(f"{out_dir}: prep version {summary.version}, this code writes {PREP_VERSION}")
        with np.load(out_dir / "track.npz") as data:
            arrays = {name: data[name] for name in ARRAYS if name in data.files}
        return cls(out_dir, summary, **arrays)
