"""Mouth tracks (the audio stage's output) and the fast energy-driven mouth model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import median_filter, uniform_filter1d

from lipdub.audio.features import mel_band


@dataclass
class MouthTrack:
    """Per 25-fps audio frame: mouth opening above rest (inner-lip gap / inner mouth width) and voice activity.

    The learned models also give the full lip shape: `coeffs` are the PCA coefficients of the mouth motion
    (lipdub.audio.shape.MouthBasis, normalised units) and `lips` the displacement of the mouth points
    (shape.MOUTH_POINTS, canonical frontal head, inter-ocular distance = 1) from the speaker's neutral shape.
    `opening` is derived from that shape; the energy model has only `opening`.
    """

    opening: np.ndarray  # [T] float32
    speech: np.ndarray  # [T] bool
    coeffs: np.ndarray | None = None  # [T, K] float32
    lips: np.ndarray | None = None  # [T, P, 3] float32
    model: str = "energy"

    def __len__(self) -> int:
        return len(self.opening)

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp.npz")
        extra = {k: v for k, v in (("coeffs", self.coeffs), ("lips", self.lips)) if v is not None}
        np.savez_compressed(tmp, opening=self.opening, speech=self.speech, model=np.array(self.model), **extra)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> MouthTrack:
        with np.load(path) as data:
            return cls(opening=data["opening"], speech=data["speech"],
                       coeffs=data.get("coeffs"), lips=data.get("lips"),
                       model=str(data["model"]) if "model" in data else "energy")


class EnergyMouthModel:
    """Mouth opening from the speech-band energy of the fbank features.

    The fast CPU fallback of the audio stage: loudness in the 300-3000 Hz band tracks jaw opening
    (vowels are loud and open, closures are quiet). Levels are normalised per track, so gain and
    microphone don't matter; non-speech frames map to a closed mouth.
    """

    name = "energy"

    def __init__(self, max_opening: float = 0.45, lead_frames: int = 1) -> None:
        self.max_opening = max_opening
        self.lead_frames = lead_frames  # the mouth opens slightly before the sound it makes
        self.band = mel_band(300.0, 3000.0)

    def energy(self, feats: np.ndarray) -> np.ndarray:
        """Per-frame speech-band log energy (natural-log power units) from [2T, 80] fbank rows."""
        band = np.logaddexp.reduce(feats[:, self.band], axis=1)
        return np.logaddexp(band[0::2], band[1::2])

    def __call__(self, feats: np.ndarray) -> MouthTrack:
        e = self.energy(feats)
        floor, peak = np.percentile(e, 5), np.percentile(e, 97)
        span = max(peak - floor, 1e-6)
        # Voice activity: well above the noise floor (a quarter of the range, and at least 9 dB ≈ 2.07 ln).
        threshold = floor + max(0.25 * span, 2.07)
        speech = median_filter(e > threshold, size=3, mode="nearest")
        level = np.clip((e - threshold) / max(peak - threshold, 1e-6), 0.0, 1.0) ** 0.8
        opening = uniform_filter1d(level * self.max_opening * speech, size=2, mode="nearest")
        if self.lead_frames:
            opening = np.concatenate([opening[self.lead_frames:], np.repeat(opening[-1:], self.lead_frames)])
        return MouthTrack(opening=opening.astype(np.float32), speech=speech.astype(bool))
