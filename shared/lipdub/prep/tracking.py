"""Face tracks across frames (stable IDs through brief occlusions) and the choice of the target face."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


def landmark_box(points: np.ndarray) -> np.ndarray:
    """Bounding box (x0, y0, x1, y1) of one face's landmarks [478, 2+]."""
    xy = points[:, :2]
    return np.concatenate([xy.min(0), xy.max(0)])


def iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass
class FaceTrack:
    id: int
    frames: list[int] = field(default_factory=list)
    boxes: list[np.ndarray] = field(default_factory=list)
    landmarks: list[np.ndarray] = field(default_factory=list)  # float32 [478, 3] per tracked frame

    @property
    def last_box(self) -> np.ndarray:
        return self.boxes[-1]

    def box_at(self, frame: int) -> np.ndarray | None:
        """The box at `frame`, or at the nearest tracked frame."""
        if not self.frames:
            return None
        pos = int(np.argmin(np.abs(np.asarray(self.frames) - frame)))
        return self.boxes[pos]

    def side(self) -> float:
        """Median face size (larger side of the landmark box) in pixels."""
        boxes = np.asarray(self.boxes)
        return float(np.median(np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])))


class FaceTracker:
    """Greedy association of per-frame faces to tracks.

    A face joins the track whose last box overlaps it most (IoU), or, after a gap (occlusion, the face
    leaving the frame), the track whose last box centre is within one face size; tracks unseen for more
    than `max_gap` frames are closed, so a new face far away never steals an old ID.
    """

    def __init__(self, max_gap: int, min_iou: float = 0.2) -> None:
        self.max_gap, self.min_iou = max_gap, min_iou
        self.tracks: list[FaceTrack] = []

    def update(self, index: int, faces: list[np.ndarray], cut: bool = False) -> list[int]:
        """Assign this frame's faces (landmarks in pixels) to tracks; returns their track IDs. On the first
        frame of a new shot (`cut`), faces that match no track by position continue the tracks left without
        a face, largest face to longest track: the main face of every shot is one track wherever it stands
        (each shot keeps its own references: prep.shots)."""
        live = [t for t in self.tracks if index - t.frames[-1] <= self.max_gap and t.frames[-1] < index]
        boxes = [landmark_box(f) for f in faces]
        pairs = []
        for fi, box in enumerate(boxes):
            for t in live:
                overlap = iou(box, t.last_box)
                side = max(t.last_box[2] - t.last_box[0], t.last_box[3] - t.last_box[1])
                dist = np.linalg.norm((box[:2] + box[2:]) / 2 - (t.last_box[:2] + t.last_box[2:]) / 2)
                if overlap >= self.min_iou or dist < side:
                    pairs.append((overlap - dist / max(side, 1.0), fi, t))
        ids: list[int] = [-1] * len(faces)
        taken: set[int] = set()
        for _, fi, t in sorted(pairs, key=lambda p: -p[0]):
            if ids[fi] == -1 and t.id not in taken:
                ids[fi] = t.id
                taken.add(t.id)
        if cut:
            unmatched = sorted((fi for fi in range(len(faces)) if ids[fi] == -1),
                               key=lambda fi: -float(np.prod(boxes[fi][2:] - boxes[fi][:2])))
            orphans = sorted((t for t in live if t.id not in taken), key=lambda t: -len(t.frames))
            for fi, t in zip(unmatched, orphans):
                ids[fi] = t.id
                taken.add(t.id)
        for fi, face in enumerate(faces):
            if ids[fi] == -1:
                track = FaceTrack(len(self.tracks))
                self.tracks.append(track)
                ids[fi] = track.id
            track = self.tracks[ids[fi]]
            track.frames.append(index)
            track.boxes.append(boxes[fi])
            track.landmarks.append(face.astype(np.float32))
        return ids


@dataclass(frozen=True)
class Target:
    """A user's choice of face: a point (x, y) or a box (x0, y0, x1, y1) in the pixels of the upright
    (rotation applied) source, at `time` seconds."""

    time: float = 0.0
    point: tuple[float, float] | None = None
    box: tuple[float, float, float, float] | None = None

    def __post_init__(self) -> None:
        """The one rule for a user's choice (the CLI's --face and the API's target_face both build a Target)."""
        if (self.point is None) == (self.box is None):
            raise ValueError("give exactly one of a point or a box")
        if not all(math.isfinite(v) for v in (self.time, *(self.point or self.box or ()))):
            raise ValueError("the time and the coordinates must be finite numbers")
        if self.time < 0 or any(v < 0 for v in (self.point or self.box or ())):
            raise ValueError("the time and the coordinates (pixels) can't be negative")
        if self.box is not None and not (self.box[0] < self.box[2] and self.box[1] < self.box[3]):
            raise ValueError("a box is (x0, y0, x1, y1) with x0 < x1 and y0 < y1")

    def key(self) -> str:
        """Stable text for cache keys."""
        if self.box is not None:
            return f"t{self.time:.3f}-box{'-'.join(f'{v:.1f}' for v in self.box)}"
        if self.point is not None:
            return f"t{self.time:.3f}-pt{self.point[0]:.1f}-{self.point[1]:.1f}"
        return ""

    @classmethod
    def from_option(cls, value: object) -> Target | None:
        """The job option `target_face`: "auto" (or absent) means no user choice, else a mapping
        {time, point: [x, y]} or {time, box: [x0, y0, x1, y1]} as the API's schema validated it."""
        if value is None or value == "auto":
            return None
        if not isinstance(value, dict):
            raise ValueError(f"target_face must be 'auto' or an object, not {value!r}")
        point, box = value.get("point"), value.get("box")
        return cls(float(value.get("time") or 0.0),
                   None if point is None else (float(point[0]), float(point[1])),
                   None if box is None else tuple(float(v) for v in box))  # type: ignore[arg-type]

    def scaled(self, factor: float) -> Target:
        """The same target in a frame scaled by `factor` (source → normalised pixels)."""
        return Target(self.time,
                      None if self.point is None else (self.point[0] * factor, self.point[1] * factor),
                      None if self.box is None else tuple(v * factor for v in self.box))  # type: ignore[arg-type]


def track_score(track: FaceTrack, n_frames: int, width: int, height: int) -> float:
    """Larger, more central and more persistent faces score higher (the default target)."""
    persistence = len(track.frames) / max(n_frames, 1)
    size = track.side() / min(width, height)
    centres = np.asarray([(b[:2] + b[2:]) / 2 for b in track.boxes])
    offset = np.linalg.norm(np.median(centres, 0) - (width / 2, height / 2)) / (0.5 * np.hypot(width, height))
    centrality = 1.0 - min(1.0, float(offset))
    return persistence * size * (0.5 + 0.5 * centrality)


def candidate_tracks(tracks: list[FaceTrack], min_frames: int) -> list[FaceTrack]:
    """Tracks long enough to be a real face (the mesh's brief false faces are dropped)."""
    if not tracks:
        return []
    longest = max(len(t.frames) for t in tracks)
    floor = max(min_frames, 0.1 * longest)
    return [t for t in tracks if len(t.frames) >= floor]


def pick_by_target(tracks: list[FaceTrack], target: Target) -> FaceTrack | None:
    """The track under the user's point, or overlapping the user's box most, near the given time."""
    frame = round(target.time * 25)
    best, best_value = None, 0.0
    for t in tracks:
        if not t.frames or min(abs(f - frame) for f in (t.frames[0], t.frames[-1])) > 50 and \
                not (t.frames[0] <= frame <= t.frames[-1]):
            continue
        box = t.box_at(frame)
        assert box is not None
        if target.box is not None:
            value = iou(box, np.asarray(target.box, np.float32))
        else:
            assert target.point is not None
            x, y = target.point
            margin = 0.1 * (box[2] - box[0])
            inside = box[0] - margin <= x <= box[2] + margin and box[1] - margin <= y <= box[3] + margin
            value = 1.0 / (1.0 + float(np.linalg.norm((box[:2] + box[2:]) / 2 - (x, y)))) if inside else 0.0
        if value > best_value:
            best, best_value = t, value
    return best
