"""Shot cuts: where an edited video jumps to another shot (another camera, a jump cut, another person).

Prep never smooths the face across a cut (a Gaussian over the jump draws the mouth between the two head
positions for a few frames), re-acquires the face mesh on the frame after a big change, and takes the
renderer's references, neutral face and rest opening per shot of at least MIN_SHOT_FRAMES, so a cut to
another person is not drawn with the first person's lips.

A cut is a frame whose 32×32 thumbnail differs from the previous one by at least MIN_CHANGE (mean absolute
difference, 0–1) and by MIN_SPIKE times the median change of the NEIGHBOURS frames on either side: an isolated
spike, not fast motion, which changes every frame a lot. Calibrated on the corpus (2026-11-29, BENCHMARKS.md
"Prep: shot cuts"): about 0.1 % of 17,800 simulated cuts between clips of different people are missed (last
frames of one clip, first of the other); 11 of 135 single-shot clips show a spike, which in the ones we
looked at was mostly a real jump cut in the source, else a very fast head turn or an exposure change.

Whether a shot shows the same person as the video's main shot (the one with the most usable frames) is
judged from the shape of the face: the distance between the two shots' neutral faces (canonical space,
mouth closed), over the face-mesh points that are not mouth or jaw, after a similarity alignment. Above
OTHER_PERSON_DISTANCE a shot is reported as likely another person (a reaction shot the user may leave out
with `ranges`); nothing is left out automatically. Calibrated on the corpus (2026-11-29, BENCHMARKS.md "Prep:
another person after a cut"): 1 % of 2-s windows of one shot are further apart than that from each other,
73 % of windows of different people are, and 7 % of windows of the same person in other recordings.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from lipdub.audio.shape import MOUTH_POINTS, similarity

THUMB = 32
MIN_CHANGE = 0.05
MIN_SPIKE = 4.0
NEIGHBOURS = 6
NOISE_FLOOR = 0.004  # change of a static shot (compression noise): the spike ratio's smallest denominator
MIN_SHOT_FRAMES = 25  # 1 s: shorter shots take the rest opening, neutral face and references of a neighbour
OTHER_PERSON_DISTANCE = 0.028  # canonical units (about eye-corner distances); see above
_FACE_SHAPE_POINTS = np.array(sorted(set(range(468)) - set(MOUTH_POINTS)))  # not moved by speech


def thumbnail(frame: np.ndarray) -> np.ndarray:
    # Every k-th pixel first (k leaves at least 2×2 samples per thumbnail pixel): an area resize of the whole
    # analysis frame cost 1.2 ms, a tenth of prep's time per frame.
    k = max(1, min(frame.shape[:2]) // (2 * THUMB))
    small = np.ascontiguousarray(frame[::k, ::k])
    return cv2.resize(small, (THUMB, THUMB), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def change(previous: np.ndarray | None, current: np.ndarray) -> float:
    """How much a frame's thumbnail differs from the previous one (0 for the first frame)."""
    return 0.0 if previous is None else float(np.abs(current - previous).mean())


def is_spike(change: float, around: np.ndarray | list[float]) -> bool:
    """A change big in itself and next to the changes `around` it (frame 0's change is never among them)."""
    typical = float(np.median(around)) if len(around) else 0.0
    return change >= MIN_CHANGE and change >= MIN_SPIKE * max(typical, NOISE_FLOOR)


def find_cuts(changes: np.ndarray) -> list[int]:
    """Frames that start a new shot, from `changes[i]` = change between frames i-1 and i."""
    return [int(i) for i in np.flatnonzero(changes >= MIN_CHANGE) if i > 0 and is_spike(
        float(changes[i]), np.concatenate([changes[max(1, i - NEIGHBOURS):i], changes[i + 1:i + 1 + NEIGHBOURS]]))]


def starts_shot(changes: list[float]) -> bool:
    """Whether the latest frame starts a new shot, judged as it arrives (from the frames before it only;
    `find_cuts` decides with the frames after it too)."""
    return len(changes) > 1 and is_spike(changes[-1], changes[max(1, len(changes) - 1 - NEIGHBOURS):-1])


def shot_ids(cuts: list[int], n: int, min_frames: int = MIN_SHOT_FRAMES) -> np.ndarray:
    """The shot of every frame (0, 1, ...). A cut that would leave a shot shorter than `min_frames` is not a
    shot boundary (the short piece stays with the shot after it, or at the end with the one before): its few
    frames would give a poor rest opening and neutral face (a talking mouth is rarely closed within a
    second), and spikes inside a shot (a flash, a very fast turn) make such pieces too. Smoothing still
    stops at every cut."""
    kept: list[int] = []
    for cut in cuts:
        if cut - (kept[-1] if kept else 0) >= min_frames and n - cut >= min_frames:
            kept.append(cut)
    return np.searchsorted(np.asarray(kept, np.int64), np.arange(n), side="right").astype(np.int32)


def person_distance(a: np.ndarray, b: np.ndarray) -> float:
    """How unlike two neutral faces [478, 3] (canonical space) are: RMS distance of their face-shape points
    after aligning b onto a (scale, rotation, shift)."""
    pa, pb = a[_FACE_SHAPE_POINTS].astype(np.float64), b[_FACE_SHAPE_POINTS].astype(np.float64)
    scale, rot, shift = similarity(pb, pa)
    return float(np.sqrt(((scale * pb @ rot.T + shift - pa) ** 2).sum(1).mean()))


@dataclass(frozen=True)
class Shot:
    start: int  # first frame
    end: int  # one past the last frame
    person_distance: float | None  # from the main shot's face (None: no usable face in the shot)

    @property
    def other_person(self) -> bool:
        """Likely a different person from the main shot's (a reaction shot, say)."""
        return self.person_distance is not None and self.person_distance > OTHER_PERSON_DISTANCE


def shot_spans(cuts: list[int], n: int, distances: list[float | None]) -> list[Shot]:
    """The shots of a prepared source, from its track summary's cuts, frame count and shot_person_distance."""
    shot = shot_ids(cuts, n)
    spans = []
    for k, distance in enumerate(distances):
        frames = np.flatnonzero(shot == k)
        spans.append(Shot(int(frames[0]), int(frames[-1]) + 1, distance))
    return spans
