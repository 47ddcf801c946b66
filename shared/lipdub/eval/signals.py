"""Per-frame signals the sync metrics compare: mouth opening from landmarks, audio envelope, voice activity.

Definitions follow quality_metrics.md §3.4 (a) and (b): one value per 25-fps video frame.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.ndimage import binary_closing, binary_opening

from lipdub import FPS, SAMPLE_RATE
from lipdub.face import landmarks as L

# Speech band: de-emphasises rumble and hiss, which move the RMS without moving a mouth.
SPEECH_BAND_HZ = (300.0, 3000.0)


def mouth_opening_signal(points: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Inner-lip gap over inner mouth width per frame; NaN where no face; 3-tap median (NaN-aware)."""
    m = np.full(len(valid), np.nan, np.float64)
    if valid.any():
        m[valid] = L.mouth_opening(points[valid].astype(np.float64))
    return nan_median3(m)


def mouth_width_signal(points: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Outer mouth-corner distance (61-291) over the inter-ocular distance per frame (issue 26: spread and
    rounded lips); NaN where no face; 3-tap median like the opening."""
    m = np.full(len(valid), np.nan, np.float64)
    if valid.any():
        p = points[valid].astype(np.float64)
        width = np.linalg.norm(p[:, 61, :2] - p[:, 291, :2], axis=-1)
        m[valid] = width / np.maximum(L.inter_ocular(p), 1e-6)
    return nan_median3(m)


def nan_median3(x: np.ndarray) -> np.ndarray:
    """3-tap median that ignores NaN neighbours and keeps NaN where the centre is NaN (a missed face)."""
    if len(x) < 3:
        return x.copy()
    padded = np.concatenate([x[:1], x, x[-1:]])
    stack = np.stack([padded[:-2], padded[1:-1], padded[2:]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows stay NaN
        out = np.nanmedian(stack, axis=0)
    out[np.isnan(x)] = np.nan
    return out


def audio_envelope(samples: np.ndarray, n_frames: int | None = None, sample_rate: int = SAMPLE_RATE,
                   fps: int = FPS, band: tuple[float, float] | None = SPEECH_BAND_HZ) -> np.ndarray:
    """e[t] = log(RMS + 1e-8) of the 40-ms window centred on video frame t, speech band only.

    Frame t covers samples [t·hop − hop/2, t·hop + hop/2), hop = sample_rate / fps (640 at 16 kHz).
    The log floor of digital silence (-18.4) would dominate a z-score, so values are floored a little below
    the quietest real frames (2nd percentile − 1, i.e. about 9 dB under it).
    """
    x = np.asarray(samples, np.float64)
    if band is not None and x.size > 64:
        # lazy: scipy.signal takes 0.45 s to import, and prep (nan_median3) is on every dub's start-up path
        from scipy.signal import butter, sosfiltfilt

        sos = butter(4, [band[0], band[1]], btype="bandpass", fs=sample_rate, output="sos")
        x = sosfiltfilt(sos, x)
    hop = sample_rate // fps
    n = n_frames if n_frames is not None else int(np.ceil(x.size / hop))
    padded = np.concatenate([np.zeros(hop // 2), x, np.zeros(n * hop + hop)])
    windows = padded[: n * hop].reshape(n, hop)
    env = np.log(np.sqrt(np.mean(windows ** 2, axis=1)) + 1e-8)
    if n and np.ptp(env) > 0:
        env = np.maximum(env, np.percentile(env, 2) - 1.0)
    return env


def voice_activity(envelope: np.ndarray, min_run: int = 3) -> np.ndarray:
    """Speech frames by an energy threshold relative to the clip's own floor and peak.

    Threshold: floor (5th pct) + max(30 % of the floor-to-peak (97th pct) range, 9 dB). Opening then closing
    with `min_run` frames drops clicks and fills short gaps between syllables.
    """
    if envelope.size == 0:
        return np.zeros(0, bool)
    floor, peak = np.percentile(envelope, 5), np.percentile(envelope, 97)
    threshold = floor + max(0.3 * (peak - floor), 9.0 / 20.0 * np.log(10.0))
    speech = envelope > threshold
    structure = np.ones(min_run, bool)
    speech = binary_opening(speech, structure)
    return binary_closing(speech, structure, border_value=0) | speech


def silence_behaviour(opening: np.ndarray, speech: np.ndarray) -> dict[str, float]:
    """Mean mouth opening in non-speech frames, in speech frames, and their ratio (lower = closes in pauses).

    Frames within 2 of a speech boundary are left out: mouths close/open around, not at, the energy edge.
    """
    n = min(len(opening), len(speech))
    m, s = opening[:n], speech[:n].astype(bool)
    edge = np.zeros(n, bool)
    for d in (-2, -1, 1, 2):
        edge |= np.roll(s, d) != s
    sil = ~s & ~edge & ~np.isnan(m)
    spk = s & ~edge & ~np.isnan(m)
    mean_sil = float(np.mean(m[sil])) if sil.sum() >= 3 else float("nan")
    mean_spk = float(np.mean(m[spk])) if spk.sum() >= 3 else float("nan")
    ratio = mean_sil / mean_spk if mean_spk and not np.isnan(mean_spk) and mean_spk > 0 else float("nan")
    return {"silence_opening": mean_sil, "speech_opening": mean_spk, "silence_ratio": ratio,
            "silence_frames": int(sil.sum()), "speech_frames": int(spk.sum())}
