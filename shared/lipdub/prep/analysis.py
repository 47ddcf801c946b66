"""The streaming face pass: every analysis frame goes through the face mesh once and is dropped.

Single-face video (the common case) runs MediaPipe's one-face mesh in tracking mode, which re-detects
only when it loses the face. Every `DETECT_EVERY` frames a full-range face detector counts the faces;
while it sees more than one, a multi-face mesh takes over so every face gets landmarks and a track.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from lipdub import FPS
from lipdub.face.detect import FaceDetector
from lipdub.face.mesh import FaceMesh
from lipdub.prep import shots
from lipdub.prep.tracking import FaceTracker

DETECT_EVERY = 10  # frames between face counts (2.5 per second; each count costs about one mesh run)
MULTI_HOLD = 2 * FPS  # frames the multi-face mesh stays on after the last multi-face count
MAX_FACES = 4


@dataclass
class FaceAnalysis:
    tracker: FaceTracker
    n_frames: int
    width: int  # frame size the landmarks are expressed in (the normalised video)
    height: int
    multi_face_frames: int  # frames analysed with the multi-face mesh
    cuts: list[int] = field(default_factory=list)  # frames that start a new shot (lipdub.prep.shots)


def analyze_faces(frames: Iterable[np.ndarray], width: int, height: int, max_gap: int,
                  advance: Callable[[int], None] | None = None) -> FaceAnalysis:
    """Track faces through analysis frames; landmarks are returned in `width`×`height` pixels."""
    tracker = FaceTracker(max_gap)
    n = multi_frames = 0
    multi_until = -1
    acquired = 0  # faces the current mesh is tracking
    changes: list[float] = []
    thumb: np.ndarray | None = None
    with FaceMesh(max_faces=1) as single, FaceMesh(max_faces=MAX_FACES) as multi, FaceDetector() as detect:
        current = single
        for i, frame in enumerate(frames):
            if i % DETECT_EVERY == 0 and len(detect(frame)) > 1:
                multi_until = i + MULTI_HOLD
            mesh = multi if i <= multi_until else single
            tracked = acquired if mesh is current else 0
            previous, thumb = thumb, shots.thumbnail(frame)
            changes.append(shots.change(previous, thumb))
            faces = mesh(frame)
            if len(faces) > tracked or changes[-1] >= shots.MIN_CHANGE:
                # A newly acquired face's landmarks come from the detector's rough box, and after a cut the
                # tracker's box is the last shot's face; a second run on the same frame starts from the
                # first run's landmarks and fixes the frame (up to ~18° of roll error otherwise).
                faces = mesh(frame)
            acquired, current = len(faces), mesh
            multi_frames += mesh is multi
            scale = width / frame.shape[1]
            if scale != 1.0:
                faces = [f * scale for f in faces]  # x, y and z (z is in units of the frame width)
            tracker.update(i, faces, cut=shots.starts_shot(changes))
            n = i + 1
            if advance is not None:
                advance(1)
    return FaceAnalysis(tracker, n, width, height, multi_frames, shots.find_cuts(np.asarray(changes)))
