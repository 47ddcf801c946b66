"""Audio augmentation for distillation: the student hears degraded audio, the teacher's labels come from clean audio.

Every transform works on float samples in [-1, 1] at 16 kHz, before the fbank, so it really reaches the
features (DH_live's own training added its noise in int16 units, where it vanished; see the reference notes).
Speed perturbation (Kaldi-style resampling, which shifts pitch along with tempo) also returns the time-scale
factor, so frame labels can be stretched to match.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import fftconvolve, lfilter, resample_poly

from lipdub import SAMPLE_RATE
from lipdub.audio.features import n_video_frames


def speed(samples: np.ndarray, factor: float) -> np.ndarray:
    """Play `factor` times faster (and higher); the result lasts len / factor samples."""
    up = 100
    down = round(up * factor)
    return resample_poly(samples, up, down).astype(np.float32)


def stretch_labels(labels: np.ndarray, n_frames: int) -> np.ndarray:
    """Resample [T, K] frame labels to n_frames by linear interpolation over the same time span."""
    src = np.linspace(0.0, 1.0, len(labels))
    dst = np.linspace(0.0, 1.0, n_frames)
    return np.stack([np.interp(dst, src, labels[:, k]) for k in range(labels.shape[1])], 1).astype(np.float32)


def coloured_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """White, pink-ish or brown-ish noise (room hum and fan noise are low-frequency heavy), unit RMS."""
    white = rng.standard_normal(n)
    kind = rng.integers(3)
    if kind == 1:
        noise = lfilter([1.0], [1.0, -0.9], white)
    elif kind == 2:
        noise = lfilter([1.0], [1.0, -0.99], white)
    else:
        noise = white
    return (noise / (np.sqrt(np.mean(noise**2)) + 1e-9)).astype(np.float32)


def add_noise(samples: np.ndarray, snr_db: float, rng: np.random.Generator,
              babble: np.ndarray | None = None) -> np.ndarray:
    """Noise at `snr_db` below the speech level (RMS of the louder half of the signal)."""
    power = np.mean(samples**2)
    frames = samples[: len(samples) // 400 * 400].reshape(-1, 400)
    if len(frames):
        fp = np.mean(frames**2, axis=1)
        power = float(np.mean(fp[fp >= np.median(fp)]))
    if babble is not None and len(babble) >= len(samples):
        start = int(rng.integers(0, len(babble) - len(samples) + 1))
        noise = babble[start: start + len(samples)]
        noise = noise / (np.sqrt(np.mean(noise**2)) + 1e-9)
    else:
        noise = coloured_noise(len(samples), rng)
    return (samples + noise * np.sqrt(power / 10 ** (snr_db / 10))).astype(np.float32)


def reverb(samples: np.ndarray, rt60: float, rng: np.random.Generator, wet: float = 0.5) -> np.ndarray:
    """Synthetic room: exponentially decaying noise impulse response (RT60 seconds), mixed with the dry signal."""
    n = int(rt60 * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    ir = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)
    ir[0] = 0.0
    ir /= np.sqrt(np.sum(ir**2)) + 1e-9
    tail = fftconvolve(samples, ir)[: len(samples)]
    return ((1 - wet) * samples + wet * tail).astype(np.float32)


def gain(samples: np.ndarray, db: float) -> np.ndarray:
    return np.clip(samples * 10 ** (db / 20), -1.0, 1.0).astype(np.float32)


def augment(samples: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
            babble: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One random degradation of (clean samples, their [T, K] labels) → (samples', labels')."""
    x = samples
    if rng.random() < 0.7:
        x = speed(x, float(rng.uniform(0.88, 1.12)))
    if rng.random() < 0.35:
        x = reverb(x, float(rng.uniform(0.15, 0.7)), rng, wet=float(rng.uniform(0.2, 0.6)))
    if rng.random() < 0.8:
        x = add_noise(x, float(rng.uniform(3.0, 30.0)), rng, babble if rng.random() < 0.3 else None)
    x = gain(x, float(rng.uniform(-24.0, 6.0)))
    if rng.random() < 0.5:
        x = -x  # polarity
    return x, stretch_labels(labels, n_video_frames(len(x)))
