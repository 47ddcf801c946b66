"""How the output timeline maps onto source frames and dub-audio frames (the `--sync-mode` policy)."""

from __future__ import annotations

from dataclasses import dataclass

from lipdub.config import SyncMode


@dataclass(frozen=True)
class Timeline:
    """`n_video` source frames and `n_audio` audio frames (both at 25 fps) → `n_out` output frames.

    - cut_off: the shorter input wins; the other is cut.
    - loop: the video repeats until the audio ends.
    - bounce: the video plays forward then backward (DH_live's "circle" video) until the audio ends;
      frame indices never jump, so the head never teleports.
    - silence: when the video is longer, the audio is padded with silence (closed mouth) to its end;
      when the audio is longer, the video bounces as above.
    """

    n_video: int
    n_audio: int
    mode: SyncMode

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
