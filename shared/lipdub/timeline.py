"""How the output timeline maps onto source frames and dub-audio frames (the `--sync-mode` policy), and
which output frames are re-animated (the `ranges` option)."""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property

import numpy as np

from lipdub import FPS
from lipdub.config import SyncMode

FADE_FRAMES = 4  # a range's first and last frames blend the dubbed mouth with the source's: no pop at its edges
MAX_RANGES = 500


def dub_ranges(pairs: list[tuple[float, float]] | tuple[tuple[float, float], ...]) -> tuple[tuple[float, float], ...]:
    """Checked dub ranges, in seconds of the output: 0 <= start < end, in time order, not overlapping. Raises
    ValueError saying which range is wrong."""
    out: list[tuple[float, float]] = []
    if len(pairs) > MAX_RANGES:
        raise ValueError(f"at most {MAX_RANGES} ranges, got {len(pairs)}")
    for n, (start, end) in enumerate(pairs, start=1):
        if not (0 <= start < end < float("inf")):
            raise ValueError(f"range {n} ({start:g}-{end:g} s): needs 0 <= start < end")
        if out and start < out[-1][1]:
            raise ValueError(f"range {n} ({start:g}-{end:g} s) starts before range {n - 1} ends "
                             f"({out[-1][1]:g} s); give ranges in time order, without overlaps")
        out.append((float(start), float(end)))
    return tuple(out)


def frames_at(n_frames: int, rate: str) -> int:
    """How many frames at `rate` last as long as `n_frames` at 25 fps (the audio's length at the output rate)."""
    return n_frames if rate == str(FPS) else max(1, round(n_frames * float(Fraction(rate)) / FPS))


@dataclass(frozen=True)
class Timeline:
    """`n_video` source frames and `n_audio` audio frames (both at the output rate `rate`: 25 fps, or the
    source's own) → `n_out` output frames.

    - cut_off: the shorter input wins; the other is cut.
    - loop: the video repeats until the audio ends.
    - bounce: the video plays forward then backward (DH_live's "circle" video) until the audio ends;
      frame indices never jump, so the head never teleports.
    - silence: when the video is longer, the audio is padded with silence (closed mouth) to its end;
      when the audio is longer, the video bounces as above.

    `ranges`, (start, end) seconds of the output, limit the re-animation to those stretches (a reaction shot
    of another person, a part the dub leaves in the original language); elsewhere the source frames are
    kept, while the dub audio still plays under the whole video. Empty: the whole output is dubbed.
    """

    n_video: int
    n_audio: int
    mode: SyncMode
    ranges: tuple[tuple[float, float], ...] = ()
    rate: str = str(FPS)  # the output's frame rate, as ffmpeg takes it ("25", "30000/1001")

    @property
    def fps(self) -> float:
        return float(Fraction(self.rate))

    def track_position(self, k: int) -> float:
        """Where frame k at the output rate falls on a 25-fps track (prep's landmarks, the mouth track)."""
        return k * FPS / self.fps

    @property
    def n_out(self) -> int:
        if self.mode == "cut_off":
            return min(self.n_video, self.n_audio)
        if self.mode == "silence":
            return max(self.n_video, self.n_audio)
        return self.n_audio

    def source_index(self, t: int) -> int:
        n = self.n_video
        if self.mode == "loop":
            return t % n
        if n == 1:
            return 0
        period = 2 * n - 2  # palindrome without repeating the end frames
        i = t % period
        return i if i < n else period - i

    def audio_index(self, t: int) -> int | None:
        """Audio frame that drives output frame t, or None past the end of the dub (mouth at rest)."""
        return t if t < self.n_audio else None

    @cached_property
    def _range_frames(self) -> list[tuple[int, int]]:
        """The ranges as output frames [first, stop), in time order."""
        return [(round(start * self.fps), round(end * self.fps)) for start, end in self.ranges]

    def dub_weight(self, t: int) -> float:
        """How much of output frame t is the dubbed mouth (1) rather than the source's (0): 1 everywhere
        without ranges; inside a range, rising over its first `FADE_FRAMES` frames and falling over its last."""
        if not self.ranges:
            return 1.0
        # The last range starting at or before t (a bisection: this runs for every frame, ranges can be many).
        k = bisect_right(self._range_frames, (t, math.inf)) - 1
        if k < 0 or t >= self._range_frames[k][1]:
            return 0.0
        first, stop = self._range_frames[k]
        edge = min(t - first, stop - 1 - t)  # frames from the nearer edge, 0 at the edge itself
        return min(1.0, (edge + 1) / (FADE_FRAMES + 1))

    def frames_outside_ranges(self) -> int:
        """Output frames the ranges leave as the source's (0 without ranges)."""
        if not self.ranges:
            return 0
        inside = sum(max(0, min(stop, self.n_out) - first) for first, stop in self._range_frames)
        return self.n_out - inside

    def output_runs(self, start: int, end: int) -> list[tuple[int, int]]:
        """The runs [a, b) of output frames showing source frames [start, end) (several in loop/bounce)."""
        t = np.arange(self.n_out)
        n = self.n_video
        if self.mode == "loop":
            shown = t % n
        elif n == 1:
            shown = np.zeros_like(t)
        else:  # source_index, for every frame at once
            i = t % (2 * n - 2)
            shown = np.where(i < n, i, 2 * n - 2 - i)
        inside = np.concatenate([[0], ((shown >= start) & (shown < end)).astype(np.int8), [0]])
        edges = np.flatnonzero(np.diff(inside))
        return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))

    def source_spans_s(self, start: int, end: int) -> list[tuple[float, float]]:
        """The output spans (seconds) showing the source's 25-fps frames [start, end), such as a shot (prep
        marks shots at 25 fps; this timeline may run at the source's own rate)."""
        scale = self.fps / FPS
        return [(a / self.fps, b / self.fps) for a, b in self.output_runs(round(start * scale), round(end * scale))]
