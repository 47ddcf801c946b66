"""The source track: everything the render stage needs from a prepared source, stored as npz + JSON.

`PREP_VERSION` is part of the file and of the cache key: bump it whenever the tracking, smoothing or the
format changes, and every old cache entry is ignored.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction
from pathlib import Path

import numpy as np

from lipdub import FPS
from lipdub.config import Settings
from lipdub.media.video import FrameReader, RetimedReader

VIDEO = "video.mp4"  # the normalised source of a 25-fps source
NATIVE_VIDEO = "native.mp4"  # ... of a source at another rate, kept at its own

PREP_VERSION = 7  # 3: shot cuts (never smoothed across; references, neutral face and rest opening per shot);
# 4: how far each shot's face is from the main shot's (shot_person_distance); 5: equally prominent faces are
# told apart by the source's own speech (prep.speaker), so cached multiple_faces rejections are judged again;
# 6: a source not at 25 fps is kept at its own rate (native.mp4, analysed at 25 fps), so the output can keep it;
# 7: faces that take turns talking (a dialogue) are not told apart by the speaker vote; other_speaker

# The settings that change what prep makes or decides. A source rejected under one value (say
# min_face_coverage) must be judged again under another: the error message tells users to change them.
PREP_SETTINGS = ("prep_analysis_height", "max_height", "face_track_gap_s", "face_dominance", "min_video_frames",
                 "min_face_coverage", "min_face_px", "max_yaw_deg", "max_pitch_deg")


def prep_version(settings: Settings) -> str:
    """The version part of every prep cache key (local entries, object-store keys, Redis pointers): the prep
    code's PREP_VERSION and a digest of PREP_SETTINGS."""
    values = json.dumps({name: getattr(settings, name) for name in PREP_SETTINGS}, sort_keys=True)
    return f"{PREP_VERSION}.{hashlib.sha256(values.encode()).hexdigest()[:8]}"


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
    # Where another face than the dubbed one talks ([start, end) frames of 25 fps, lipdub.prep.speaker.turns):
    # its lines are dubbed onto this face unless `ranges` leave them out. Empty without a second face or sound.
    other_speaker: list[list[int]] = field(default_factory=list)
    normalization: list[str] = field(default_factory=list)  # what ffmpeg fixed (fps, vfr, rotation, ...)
    flags: list[str] = field(default_factory=list)
    source: dict[str, object] = field(default_factory=dict)  # the original stream: size, fps, rotation, codec
    # The source's own constant rate (an ffmpeg rate: "30000/1001") and its frame count in native.mp4, when
    # it is not 25 fps; None: the source is at 25 fps and video.mp4 is all there is.
    native_rate: str | None = None
    native_frames: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> TrackSummary:
        return cls(**data)  # type: ignore[arg-type]

    def frames_at(self, rate: str) -> int:
        """The source's length in frames at `rate` (25 fps, or its own native_rate)."""
        return self.n_frames if rate == str(FPS) else self.native_frames


def output_rate(native_rate: str | None, frame_rate: str) -> str:
    """The output's frame rate: the source's own (`native_rate`; None when it is 25 fps) when `frame_rate` is
    "source", else 25."""
    return native_rate if frame_rate == "source" and native_rate else str(FPS)


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
        """The normalised source: native.mp4 at the source's own rate, or video.mp4 for a 25-fps source."""
        return self.dir / (NATIVE_VIDEO if self.summary.native_rate else VIDEO)

    def reader(self) -> FrameReader | RetimedReader:
        """The 25-fps frames the track's arrays describe (of native.mp4, the frames prep analysed)."""
        s = self.summary
        if s.native_rate:
            return RetimedReader(self._native_reader(), s.n_frames)
        return FrameReader(self.video, s.width, s.height, s.n_frames)

    def reader_at(self, rate: str) -> FrameReader | RetimedReader:
        """The normalised source's frames at `rate`: 25 fps (`reader`), or the source's own."""
        return self.reader() if rate == str(FPS) else self._native_reader()

    def _native_reader(self) -> FrameReader:
        s = self.summary
        assert s.native_rate is not None
        fps = float(Fraction(s.native_rate))
        return FrameReader(self.dir / NATIVE_VIDEO, s.width, s.height, s.native_frames, block=max(1, round(fps)),
                           fps=fps)

    def landmarks_at(self, position: float) -> np.ndarray:
        """The landmarks at a fractional 25-fps frame `position` (a frame of a source at its own rate falls
        between two): interpolated between the neighbours when both have the face and are of one shot, else
        the nearer one's."""
        i0 = min(int(position), len(self.landmarks) - 1)
        frac = position - i0
        i1 = i0 + 1
        if frac < 1e-6 or i1 >= len(self.landmarks) or not (self.valid[i0] and self.valid[i1]) or \
                (self.shot is not None and self.shot[i0] != self.shot[i1]):
            return self.landmarks[self.nearest(position)]
        return ((1 - frac) * self.landmarks[i0] + frac * self.landmarks[i1]).astype(self.landmarks.dtype)

    def nearest(self, position: float) -> int:
        """The 25-fps frame nearest to `position`."""
        return min(max(0, round(position)), len(self.landmarks) - 1)

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
