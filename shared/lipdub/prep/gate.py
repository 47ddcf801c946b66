"""The prep quality gate: per-frame pass-through flags and the verdict on the source as a whole.

Frames that fail on their own (no target face, turned too far, too small) are rendered unchanged
(pass-through); only a source that fails as a whole is rejected, with a machine-readable code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lipdub import FPS
from lipdub.config import Settings
from lipdub.errors import ErrorCode, InputError
from lipdub.prep.speaker import SpeakerVote

# Per-frame flag bits (frame_flags in the track).
NO_FACE = 1
NOT_FRONTAL = 2
TOO_SMALL = 4


@dataclass(frozen=True)
class Verdict:
    code: ErrorCode | None  # None: the source passes
    message: str

    @property
    def ok(self) -> bool:
        return self.code is None

    def raise_for_code(self) -> None:
        if self.code is not None:
            raise InputError(self.code, self.message)

    def as_dict(self) -> dict[str, object]:
        return {"ok": self.ok, "code": None if self.code is None else str(self.code), "message": self.message}


PASS = Verdict(None, "ok")


def frame_flags(present: np.ndarray, angles: np.ndarray, face_px: np.ndarray, settings: Settings) -> np.ndarray:
    """Bitmask per frame; 0 = the frame is usable."""
    flags = np.where(present, 0, NO_FACE).astype(np.uint8)
    turned = (np.abs(angles[:, 0]) > settings.max_yaw_deg) | (np.abs(angles[:, 1]) > settings.max_pitch_deg)
    flags[present & turned] |= NOT_FRONTAL
    flags[present & (face_px < 0.5 * settings.min_face_px)] |= TOO_SMALL  # a brief far-away moment
    return flags


def judge(name: str, n_frames: int, present: np.ndarray, flags: np.ndarray, face_px: np.ndarray,
          settings: Settings) -> Verdict:
    """Whole-source verdict from the target face's per-frame measurements (in gate order)."""
    if n_frames < settings.min_video_frames:
        return Verdict(ErrorCode.video_too_short,
                       f"{name}: {n_frames} frames ({n_frames / FPS:.2f} s at {FPS} fps); "
                       f"at least {settings.min_video_frames} are needed")
    coverage = float(present.mean()) if n_frames else 0.0
    if coverage < settings.min_face_coverage:
        return Verdict(ErrorCode.no_face, f"{name}: a face was found in {coverage:.0%} of frames; at least "
                                          f"{settings.min_face_coverage:.0%} are needed")
    size = float(np.median(face_px[present]))
    if size < settings.min_face_px:
        return Verdict(ErrorCode.face_too_small, f"{name}: the face is {size:.0f} px; at least "
                                                 f"{settings.min_face_px} px are needed")
    frontal = float(((flags & NOT_FRONTAL) == 0)[present].mean() * coverage)
    if frontal < settings.min_face_coverage:
        return Verdict(ErrorCode.face_not_frontal,
                       f"{name}: the face is turned away (beyond {settings.max_yaw_deg:.0f}° yaw or "
                       f"{settings.max_pitch_deg:.0f}° pitch) in most frames; only {frontal:.0%} are frontal "
                       f"enough, at least {settings.min_face_coverage:.0%} are needed")
    return PASS


def multiple_faces(name: str, n_faces: int, best: float, second: float, vote: SpeakerVote | None = None) -> Verdict:
    """`vote`: how well each tied face's lips followed the source's own speech (lipdub.prep.speaker), when
    the source has a soundtrack; None when it has none."""
    choose = "choose the speaker with a point or box at a time"
    if vote is None:
        heard = "; the source has no soundtrack to tell the speaker by"
    elif vote.dialogue:
        heard = f"; they take turns talking in the source's own speech ({vote.describe_turns()})"
        choose += " (and leave the other's lines out with ranges)"
    else:
        heard = f"; no face's lips clearly follow the source's own speech ({vote.describe()})"
    return Verdict(ErrorCode.multiple_faces,
                   f"{name}: {n_faces} faces and none dominates (scores {best:.3f} vs {second:.3f}){heard}; {choose}")
