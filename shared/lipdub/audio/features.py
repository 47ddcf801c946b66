"""DH_live's audio features: kaldi-native-fbank, 80 mel bins, 50 ms window, 20 ms shift → 2 rows per frame."""

from __future__ import annotations

import math

import kaldi_native_fbank as knf
import numpy as np
from scipy.fft import dct, idct

from lipdub import SAMPLE_RATE, SAMPLES_PER_FRAME

N_MELS = 80
FRAME_SHIFT_MS = 20.0
FRAME_LENGTH_MS = 50.0


def fbank_options() -> knf.FbankOptions:
    opts = knf.FbankOptions()
    opts.frame_opts.samp_freq = SAMPLE_RATE
    opts.frame_opts.dither = 0.0
    opts.frame_opts.frame_length_ms = FRAME_LENGTH_MS
    opts.frame_opts.frame_shift_ms = FRAME_SHIFT_MS
    opts.frame_opts.snip_edges = False
    opts.mel_opts.num_bins = N_MELS
    return opts


def n_video_frames(n_samples: int) -> int:
    """25-fps frames covering the audio: the output lasts as long as the audio, within one frame."""
    return math.ceil(n_samples / SAMPLES_PER_FRAME)


def fbank(samples: np.ndarray) -> np.ndarray:
    """[2·T, 80] log-mel features, T = n_video_frames(len(samples)); samples float32 in [-1, 1].

    With snip_edges=False Kaldi centres frame k at k·20 ms, so rows 2t and 2t+1 belong to video frame t.
    The tail is padded by repeating the last row so every video frame gets exactly two rows.
    """
    stream = knf.OnlineFbank(fbank_options())
    stream.accept_waveform(SAMPLE_RATE, np.ascontiguousarray(samples, dtype=np.float32))
    stream.input_finished()
    rows = np.array([stream.get_frame(i) for i in range(stream.num_frames_ready)], dtype=np.float32)
    need = 2 * n_video_frames(len(samples))
    if rows.shape[0] == 0:
        return np.zeros((need, N_MELS), np.float32)
    if rows.shape[0] < need:
        rows = np.concatenate([rows, np.repeat(rows[-1:], need - rows.shape[0], axis=0)])
    return rows[:need]


def lifter(rows: np.ndarray, cepstra: int) -> np.ndarray:
    """[N, 80] fbank rows smoothed across mel bins: each row's first `cepstra` DCT-II (cepstral) coefficients
    kept, the rest zeroed, and transformed back (0 = rows unchanged).

    Low cepstra are the spectral envelope, which the mouth shapes (formants); high ones carry the voice's pitch
    harmonics, which say more about who speaks than about how the mouth moves. Hiding them from the student
    did not help it on new voices pooled (BENCHMARKS.md), so the recipe keeps it off. A constant row (the
    silence padding) is unchanged.
    """
    if cepstra <= 0 or cepstra >= N_MELS:
        return rows
    cep = dct(rows, type=2, norm="ortho", axis=-1)
    cep[..., cepstra:] = 0.0
    return idct(cep, type=2, norm="ortho", axis=-1).astype(np.float32)


def mel_band(low_hz: float, high_hz: float) -> slice:
    """Indices of the mel bins whose centres lie in [low_hz, high_hz] (Kaldi's mel scale, 20 Hz-Nyquist)."""
    def mel(f: float) -> float:
        return 1127.0 * math.log1p(f / 700.0)

    lo, hi = mel(20.0), mel(SAMPLE_RATE / 2)
    step = (hi - lo) / (N_MELS + 1)
    centres = [lo + step * (i + 1) for i in range(N_MELS)]
    idx = [i for i, c in enumerate(centres) if mel(low_hz) <= c <= mel(high_hz)]
    return slice(idx[0], idx[-1] + 1)
