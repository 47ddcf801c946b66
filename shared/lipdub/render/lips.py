"""The audio model's predicted lip shapes in frame pixels, for renderers that take target landmarks (DINet).

`MouthTrack.lips` is the motion of the mouth points (`audio.shape.MOUTH_POINTS`, the 40 lip points first) in
the audio basis' canonical head frame (inter-ocular distance 1), relative to a clip's mean mouth; the
learned models ease silence to the basis' rest coefficients. The source track has the speaker's neutral face
(closed, relaxed mouth) in prep's canonical frame and the smoothed head pose of every frame. So the target
lips of source frame i for audio frame a are

    pose_i(neutral[LIPS] + M · (lips[a] − lips_at_rest)),

where M (scale × rotation) maps the audio canonical frame onto prep's (a similarity fitted on the rigid
points both frames share) and lips_at_rest is the basis' rest motion: a resting prediction draws the
speaker's own neutral mouth, an open one the predicted shape on top of it.
"""

from __future__ import annotations

from typing import cast

import numpy as np

from lipdub.audio.models import basis
from lipdub.audio.mouth import MouthTrack
from lipdub.audio.shape import ALIGN_POINTS, similarity
from lipdub.face import landmarks as L
from lipdub.prep.pose import canonical_face


class LipTargets:
    def __init__(self, neutral: np.ndarray, rotation: np.ndarray, translation: np.ndarray, scale: np.ndarray,
                 motion: np.ndarray) -> None:
        """`neutral` [40, 3] lips (prep canonical), per source frame pose (rotation [N, 3, 3], translation
        [N, 3], scale [N]), per audio frame `motion` [T, 40, 3] from the neutral mouth (prep canonical)."""
        self.neutral, self.rotation, self.translation, self.scale = neutral, rotation, translation, scale
        self.motion = motion

    @classmethod
    def for_track(cls, track: object, mouth: MouthTrack) -> LipTargets | None:
        """Targets for a prepared source and a learned model's mouth track; None when either lacks what is
        needed (the energy model has no lip shape, old tracks no pose or neutral face)."""
        names = ("neutral_shape", "rotation", "translation", "scale")
        needed = [getattr(track, name, None) for name in names]
        if mouth.lips is None or any(x is None for x in needed):
            return None
        neutral, rotation, translation, scale = cast(list[np.ndarray], needed)
        b = basis()
        s, r, _ = similarity(b.ref.astype(np.float64), canonical_face()[ALIGN_POINTS])
        n = len(L.LIPS)
        rest = b.motion(b.rest[None])[0, :n]
        motion = (s * (mouth.lips[:, :n] - rest) @ r.T).astype(np.float32)
        return cls(neutral[L.LIPS].astype(np.float32), rotation, translation, scale, motion)

    def __call__(self, i: int, a: int | None) -> np.ndarray:
        """[40, 2] target lip points (frame px, order of `landmarks.LIPS`); past the dub's end: at rest."""
        shape = self.neutral + (self.motion[a] if a is not None else 0.0)
        return (self.scale[i] * shape @ self.rotation[i].T + self.translation[i])[:, :2]
