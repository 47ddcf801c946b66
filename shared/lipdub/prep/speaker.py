"""The active speaker: which of several equally prominent faces is talking in the source's own soundtrack.

Without a user's choice, prep dubs the largest, most central, most persistent face; when two or more faces
score about the same (an interview two-shot), it used to give up with `multiple_faces`. The source's own
audio says who talks: the student audio model turns it into a mouth opening per frame, and the face whose
lips follow that opening is the speaker. A face is chosen only when its lips clearly follow the speech
(Pearson r at least MIN_R, at the best lag within ±MAX_LAG frames) and clearly better than every other
tied face's (by MARGIN), over at least MIN_FRAMES frames; otherwise the choice stays the user's.

In a dialogue the faces take turns: over the whole source each one's lips follow the speech half the time,
and the vote could still pick one and dub the other's lines onto it. So the faces are also compared in
windows of TURN_FRAMES: a face leads a window when its lips follow the speech there with r ≥ TURN_R and by
MARGIN more than every other face's. When two faces each lead somewhere, they take turns and the choice
stays the user's (a face per job, the other's lines left out with `ranges`).

Calibrated by `python -m bench.active_speaker` on the corpus (BENCHMARKS.md, "Prep: the active speaker"):
with a held-out speaker and another person's face beside them, the speaker is chosen in about 4 cases of 5,
the other face in about 1 of 100, and the rest stay `multiple_faces`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from lipdub import FPS
from lipdub.audio.models import load_model
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
TURN_FRAMES = 100  # 4-s windows, half overlapping: turns in a dialogue last a few seconds
TURN_R = 0.4  # stricter than MIN_R: many windows give an unrelated mouth more chances to follow by chance


@dataclass(frozen=True)
class Turn:
    """Frames [start, end) in which one face's lips clearly lead the others' in following the speech."""

    face: int
    start: int
    end: int


@dataclass(frozen=True)
class SpeakerVote:
    """How well each tied face's lips follow the source's speech (None: too few frames to tell)."""

    chosen: FaceTrack | None
    r: dict[int, float | None]  # track id → r
    turns: tuple[Turn, ...] = ()

    @property
    def dialogue(self) -> bool:
        """Two or more faces each lead some window: they take turns talking."""
        return len({t.face for t in self.turns}) > 1

    def describe(self) -> str:
        return ", ".join(f"face {i}: {'too short' if r is None else f'r {r:.2f}'}" for i, r in self.r.items())

    def describe_turns(self) -> str:
        return ", ".join(f"face {t.face} at {t.start / FPS:.1f}-{t.end / FPS:.1f} s" for t in self.turns)


@cache
def _student() -> object:
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


def mouth_signal(track: FaceTrack, n: int) -> np.ndarray:
    """The track's mouth opening over frames [0, n), NaN where it has no face."""
    mouth = np.full(n, np.nan)
    frames = [f for f in track.frames if f < n]
    if frames:
        mouth[frames] = L.mouth_opening(np.stack([p for f, p in zip(track.frames, track.landmarks) if f < n])
                                        .astype(np.float64))
    return nan_median3(mouth)


def follow(mouth: np.ndarray, opening: np.ndarray, min_frames: int) -> float | None:
    """Best r within ±MAX_LAG frames between a mouth opening and the heard opening (None: too few frames)."""
    _, r, used = lagged_correlation(mouth, opening, MAX_LAG)
    return None if used < min_frames or np.all(np.isnan(r)) else float(np.nanmax(r))


def lip_follow(track: FaceTrack, opening: np.ndarray) -> float | None:
    """How well the track's lips follow the heard opening over the whole source."""
    return follow(mouth_signal(track, len(opening)), opening, MIN_FRAMES)


def turns(faces: list[FaceTrack], opening: np.ndarray) -> tuple[Turn, ...]:
    """The windows each face leads (overlapping windows of one face merged into one span)."""
    n, hop = len(opening), TURN_FRAMES // 2
    mouths = {t.id: mouth_signal(t, n) for t in faces}
    out: list[Turn] = []
    for start in range(0, max(n - TURN_FRAMES, 0) + 1, hop):
        end = min(start + TURN_FRAMES, n)
        r = {i: follow(m[start:end], opening[start:end], int(0.6 * TURN_FRAMES)) for i, m in mouths.items()}
        scored = sorted(((v, i) for i, v in r.items() if v is not None), reverse=True)
        # A face missing from the window can't be talking in it: only the faces there are compared.
        if not scored or scored[0][0] < TURN_R or (len(scored) > 1 and scored[0][0] - scored[1][0] < MARGIN):
            continue
        face = scored[0][1]
        if out and out[-1].face == face and out[-1].end >= start:
            out[-1] = Turn(face, out[-1].start, end)
        else:
            out.append(Turn(face, start, end))
    return tuple(out)


def vote(tied: list[FaceTrack], opening: np.ndarray) -> SpeakerVote:
    """The one of `tied` whose lips clearly follow `opening` (the heard mouth opening per frame), if any, and
    not only in turns with another face."""
    r = {t.id: lip_follow(t, opening) for t in tied}
    scored = sorted((v, i) for i, v in r.items() if v is not None)
    spans = turns(tied, opening)
    if len({t.face for t in spans}) > 1 or len(scored) < len(tied) or scored[-1][0] < MIN_R or (
            len(scored) > 1 and scored[-1][0] - scored[-2][0] < MARGIN):
        return SpeakerVote(None, r, spans)
    return SpeakerVote(next(t for t in tied if t.id == scored[-1][1]), r, spans)
