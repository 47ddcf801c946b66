"""Landmark metrics: LMD on lips and jaw after a similarity alignment, mouth-opening correlation, jitter.

Scale: distances ×100 / inter-ocular distance (outer eye corners 33–263) of the reference face, so numbers
don't depend on resolution. This is our own scale (quality_metrics.md §3.4 d): compare only within this
harness, never with published LMD tables.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lipdub.face import landmarks as L
from lipdub.face.landmarks import umeyama


def align_to(points: np.ndarray, reference: np.ndarray, anchors: list[int] = L.STABLE) -> np.ndarray:
    """`points` [478, 2+] mapped by the similarity that best fits its `anchors` onto the reference's."""
    s, rot, t = umeyama(points[anchors, :2].astype(np.float64), reference[anchors, :2].astype(np.float64))
    return (s * (rot @ points[:, :2].astype(np.float64).T)).T + t


@dataclass
class LmdResult:
    lips: float  # mean LMD over the 40 lip landmarks, ×100 / inter-ocular
    jaw: float  # the same on the jaw line (F-LMD): paste-back drift
    frames: int  # frames where both faces were found
    skipped: int  # frames skipped because either detection failed


def landmark_distance(generated: np.ndarray, gen_valid: np.ndarray, reference: np.ndarray,
                      ref_valid: np.ndarray) -> LmdResult:
    """LMD of generated frame t against reference frame t (self-reenactment), per §3.4 (d) option (ii)."""
    n = min(len(gen_valid), len(ref_valid))
    both = gen_valid[:n] & ref_valid[:n]
    lips, jaw = [], []
    for t in np.flatnonzero(both):
        ref = reference[t, :, :2].astype(np.float64)
        aligned = align_to(generated[t], ref)
        iod = float(L.inter_ocular(ref))
        if iod <= 1e-6:
            continue
        lips.append(np.linalg.norm(aligned[L.LIPS] - ref[L.LIPS], axis=1).mean() * 100.0 / iod)
        jaw.append(np.linalg.norm(aligned[L.JAW] - ref[L.JAW], axis=1).mean() * 100.0 / iod)
    nan = float("nan")
    return LmdResult(float(np.mean(lips)) if lips else nan, float(np.mean(jaw)) if jaw else nan,
                     len(lips), int(n - len(lips)))


def mouth_opening_correlation(generated: np.ndarray, reference: np.ndarray) -> float:
    """MOC: Pearson r of two mouth-opening signals frame by frame (NaN frames skipped)."""
    n = min(len(generated), len(reference))
    a, b = generated[:n], reference[:n]
    ok = ~np.isnan(a) & ~np.isnan(b)
    if ok.sum() < 3 or np.std(a[ok]) < 1e-12 or np.std(b[ok]) < 1e-12:
        return float("nan")
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def lip_jitter(points: np.ndarray, valid: np.ndarray) -> float:
    """Mean |second difference| of the lip landmarks, head motion removed, ×100 / inter-ocular.

    Each frame is aligned (similarity on the stable points) onto the clip's median face first, so what is
    left is lip motion; the second difference of smooth motion is small, frame-to-frame flicker is not.
    Only runs of three consecutive detected frames count.
    """
    idx = np.flatnonzero(valid)
    if idx.size < 3:
        return float("nan")
    template = np.median(points[idx, :, :2], axis=0)
    iod = float(L.inter_ocular(template))
    aligned = np.full((len(valid), len(L.LIPS), 2), np.nan)
    for t in idx:
        aligned[t] = align_to(points[t], template)[L.LIPS]
    second = aligned[2:] - 2 * aligned[1:-1] + aligned[:-2]
    ok = valid[2:] & valid[1:-1] & valid[:-2]
    if not ok.any() or iod <= 1e-6:
        return float("nan")
    return float(np.linalg.norm(second[ok], axis=-1).mean() * 100.0 / iod)
