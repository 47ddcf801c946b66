"""The active speaker: which of several equally prominent faces is talking in the source's own soundtrack.

Without a user's choice, prep dubs the largest, most central, most persistent face; when two or more faces
score about the same (an interview two-shot), it used to give up with `multiple_faces`. The source's own
audio says who talks: the student audio model turns it into a mouth opening per frame, and the face whose
lips follow that opening is the speaker. A face is chosen only when its lips clearly follow the speech
(Pearson r at least MIN_R, at the best lag within ±MAX_LAG frames) and clearly better than every other
tied face's (by MARGIN), over at least MIN_FRAMES frames; otherwise the choice stays the user's.

Calibrated by `python -m bench.active_speaker` on the corpus (BENCHMARKS.md, "Prep: the active speaker"):
with a held-out speaker and another person's face beside them, the speaker is chosen in about 4 cases of 5,
the other face in about 1 of 100, and the rest stay `multiple_faces`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from lipdub.errors import InputError
from lipdub.eval.signals import nan_median3
from lipdub.eval.sync import lagged_correlation
from lipdub.face import landmarks as L
from lipdub.media.audio import load_audio
from lipdub.prep.tracking import FaceTrack

MIN_R = 0.3
MARGIN = 0.15
MAX_LAG = 2  # frames; a source's own audio and video are within a few frames of each other
MIN_FRAMES = 75  # 3 s: over shorter spans an unrelated mouth follows speech by chance too often


@dataclass(frozen=True)
class SpeakerVote:
    """How well each tied face's lips follow the source's speech (None: too few frames to tell)."""

    chosen: FaceTrack | None
    r: dict[int, float | None]  # track id → r

    def describe(self) -> str:
        return ", ".join(f"face {i}: {'too short' if r is None else f'r {r:.2f}'}" for i, r in self.r.items())


@cache
def _student() -> object:
    from lipdub.audio.models import load_model

    return load_model("student")


def soundtrack(video: Path, seconds: float | None = None) -> np.ndarray | None:
    """The source's own audio at 16 kHz (its first `seconds`), or None when it has none ffmpeg can decode
    (a broken soundtrack only costs the speaker vote, not the prep)."""
    try:
        samples = load_audio(video, seconds=seconds)
    except InputError:
        return None
    return samples if samples.size else None


def speech_opening(samples: np.ndarray) -> np.ndarray:
    """The mouth opening the student audio model hears in `samples` (16 kHz), one value per 25-fps frame."""
    model = _student()
    return np.asarray(model(samples).opening, np.float64)  # type: ignore[operator]


def lip_follow(track: FaceTrack, opening: np.ndarray) -> float | None:
    """Best r within ±MAX_LAG frames between the track's mouth opening and the heard opening."""
    n = len(opening)
    frames = [f for f in track.frames if f < n]
    if len(frames) < MIN_FRAMES:
        return None
    mouth = np.full(n, np.nan)
    mouth[frames] = L.mouth_opening(np.stack([p for f, p in zip(track.frames, track.landmarks) if f < n])
                                    .astype(np.float64))
    _, r, used = lagged_correlation(nan_median3(mouth), opening, MAX_LAG)
    return None if used < MIN_FRAMES or np.all(np.isnan(r)) else float(np.nanmax(r))


def active_speaker(tied: list[FaceTrack], samples: np.ndarray) -> SpeakerVote:
    """The one of `tied` whose lips clearly follow the speech in `samples`, if any."""
    return vote(tied, speech_opening(samples))


def vote(tied: list[FaceTrack], opening: np.ndarray) -> SpeakerVote:
    """The one of `tied` whose lips clearly follow `opening` (the heard mouth opening per frame), if any."""
    r = {t.id: lip_follow(t, opening) for t in tied}
    scored = sorted((v, i) for i, v in r.items() if v is not None)
    if len(scored) < len(tied) or scored[-1][0] < MIN_R or (len(scored) > 1 and scored[-1][0] - scored[-2][0] < MARGIN):
        return SpeakerVote(None, r)
    return SpeakerVote(next(t for t in tied if t.id == scored[-1][1]), r)
