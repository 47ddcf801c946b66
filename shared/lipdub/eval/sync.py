"""Audio-visual offset: cross-correlation of mouth opening with the audio envelope (quality_metrics §3.4 c).

A CPU, weight-free analogue of SyncNet's offset / confidence. Sign convention: a positive offset k means the
mouth moves k frames *after* the sound (video lags audio). Natural speech is not at exactly 0 (the mouth
opens slightly before the energy rises), so compare an output's offset with the ground-truth offset of the
same clip and audio (Δk), never with 0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.ndimage import uniform_filter1d

MAX_LAG = 15  # ±15 frames: the search range of the LSE (SyncNet) scripts
MIN_FRAMES = 20  # fewer overlapping frames than this give no correlation
NEAR_ZERO = 2  # "window around zero": natural offsets stay within ±2 frames (80 ms)


@dataclass
class SyncResult:
    offset: float  # sub-frame offset of the correlation peak, frames (positive: video lags audio)
    offset_frames: int  # integer argmax
    peak: float  # r at the peak
    r_zero: float  # r at lag 0
    r_near_zero: float  # best r within ±NEAR_ZERO frames of 0
    confidence: float  # peak − median over lags
    window_offset: float  # median of the offsets of sliding 3-s windows (robust to drift); NaN if too short
    frames: int  # frames used (mouth valid, audio present)
    lags: list[int] = field(default_factory=list)
    curve: list[float] = field(default_factory=list)  # r(k) for each lag

    def summary(self) -> dict[str, float | int]:
        d = asdict(self)
        d.pop("lags")
        d.pop("curve")
        return d


def _highpass(x: np.ndarray, valid: np.ndarray, width: int) -> np.ndarray:
    """Remove the slow trend (1-s moving average over valid frames): head turns and gain drift, not speech."""
    filled = np.where(valid, x, 0.0)
    weight = uniform_filter1d(valid.astype(np.float64), width, mode="nearest")
    trend = uniform_filter1d(filled, width, mode="nearest") / np.maximum(weight, 1e-6)
    return np.where(valid, x - trend, 0.0)


def _zscore(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    if valid.sum() < 2:
        return np.zeros_like(x)
    mu, sd = x[valid].mean(), x[valid].std()
    return np.where(valid, (x - mu) / (sd if sd > 1e-12 else 1.0), 0.0)


def lagged_correlation(mouth: np.ndarray, envelope: np.ndarray, max_lag: int = MAX_LAG,
                       detrend_frames: int = 25) -> tuple[np.ndarray, np.ndarray, int]:
    """r(k) = corr(m[t], e[t − k]) for k in [−max_lag, max_lag]; NaN mouth frames are skipped.

    Returns (lags, r, frames used). Both signals are high-passed and z-scored first.
    """
    n = min(len(mouth), len(envelope))
    m = np.asarray(mouth[:n], np.float64)
    e = np.asarray(envelope[:n], np.float64)
    vm = ~np.isnan(m)
    ve = ~np.isnan(e)
    m = _zscore(_highpass(np.nan_to_num(m), vm, detrend_frames), vm)
    e = _zscore(_highpass(np.nan_to_num(e), ve, detrend_frames), ve)
    lags = np.arange(-max_lag, max_lag + 1)
    r = np.full(lags.size, np.nan)
    for j, k in enumerate(lags):
        if abs(k) >= n:
            continue
        if k >= 0:
            a, b, v = m[k:], e[: n - k], vm[k:] & ve[: n - k]
        else:
            a, b, v = m[: n + k], e[-k:], vm[: n + k] & ve[-k:]
        if v.sum() >= MIN_FRAMES:
            aa, bb = a[v] - a[v].mean(), b[v] - b[v].mean()
            denom = np.sqrt((aa ** 2).sum() * (bb ** 2).sum())
            r[j] = float((aa * bb).sum() / denom) if denom > 0 else 0.0
    return lags, r, int((vm & ve).sum())


def _parabolic(r: np.ndarray, j: int) -> float:
    """Sub-frame refinement of a peak at index j from its two neighbours."""
    if j <= 0 or j >= len(r) - 1 or np.isnan(r[j - 1]) or np.isnan(r[j + 1]):
        return 0.0
    a, b, c = r[j - 1], r[j], r[j + 1]
    denom = a - 2 * b + c
    return float(0.5 * (a - c) / denom) if denom < 0 else 0.0


def estimate_offset(mouth: np.ndarray, envelope: np.ndarray, max_lag: int = MAX_LAG,
                    window: int = 75, hop: int = 25) -> SyncResult:
    """Offset, peak, correlation near zero and confidence of mouth vs audio; see the module doc for signs."""
    lags, r, frames = lagged_correlation(mouth, envelope, max_lag)
    if np.all(np.isnan(r)):
        nan = float("nan")
        return SyncResult(nan, 0, nan, nan, nan, nan, nan, frames, lags.tolist(), r.tolist())
    j = int(np.nanargmax(r))
    zero = int(np.flatnonzero(lags == 0)[0])
    near = r[zero - NEAR_ZERO: zero + NEAR_ZERO + 1]
    offsets = []
    n = min(len(mouth), len(envelope))
    for start in range(0, n - window + 1, hop):
        wl, wr, wf = lagged_correlation(mouth[start:start + window], envelope[start:start + window], max_lag)
        if wf >= window // 2 and not np.all(np.isnan(wr)):
            wj = int(np.nanargmax(wr))
            offsets.append(wl[wj] + _parabolic(wr, wj))
    return SyncResult(
        offset=float(lags[j] + _parabolic(r, j)),
        offset_frames=int(lags[j]),
        peak=float(r[j]),
        r_zero=float(r[zero]),
        r_near_zero=float(np.nanmax(near)) if not np.all(np.isnan(near)) else float("nan"),
        confidence=float(r[j] - np.nanmedian(r)),
        window_offset=float(np.median(offsets)) if offsets else float("nan"),
        frames=frames,
        lags=lags.tolist(),
        curve=[float(x) for x in r],
    )
