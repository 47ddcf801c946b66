"""The mouth window: a square crop of the lower face, normalised for roll and scale.

Its placement depends only on landmarks a moving mouth does not move (outer eye corners, sub-nasal point),
so the same face gives the same window whatever the mouth does, in training and at inference. Measured on
the corpus in units of the outer inter-ocular distance (iod) below the sub-nasal point: mouth centre ≈0.17,
chin ≈0.85, mouth corners ≈±0.3 — the window spans −0.15…0.85 iod vertically and ±0.5 iod across.
"""

from __future__ import annotations

import cv2
import numpy as np

from lipdub.face import landmarks as L

SIDE_IOD = 1.0  # window side in inter-ocular distances
CENTRE_IOD = 0.35  # window centre below the sub-nasal point, in inter-ocular distances


def window_affine(points: np.ndarray, size: int, margin: int = 0) -> np.ndarray:
    """2×3 affine mapping frame pixels into a (size + 2·margin)² window (the margin leaves room for jitter)."""
    xy = points[:, :2].astype(np.float64)
    axis = xy[L.EYE_CORNERS[3]] - xy[L.EYE_CORNERS[0]]  # 33 → 263: image right for a frontal face
    iod = max(float(np.linalg.norm(axis)), 1e-6)
    ex = axis / iod
    ey = np.array([-ex[1], ex[0]])  # image down
    centre = xy[L.NOSE_BOTTOM] + CENTRE_IOD * iod * ey
    k = size / (SIDE_IOD * iod)
    rot = np.stack([ex, ey]) * k
    offset = size / 2 + margin - rot @ centre
    return np.hstack([rot, offset[:, None]]).astype(np.float32)


def scale(affine: np.ndarray) -> float:
    """Window px per frame px of a (similarity) affine."""
    return float(np.sqrt(abs(np.linalg.det(affine[:, :2]))))


def invert(affine: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(affine)


def apply(affine: np.ndarray, xy: np.ndarray) -> np.ndarray:
    return (xy[..., :2] @ affine[:, :2].T + affine[:, 2]).astype(np.float32)


def crop(frame: np.ndarray, affine: np.ndarray, side: int) -> np.ndarray:
    """The window's pixels; strong downscales are pre-blurred so the crop does not alias."""
    k = scale(affine)
    if k < 0.6:
        # Blur only the frame region under the window (a full 720p blur per frame would dominate the cost).
        corners = apply(invert(affine), np.array([[0, 0], [side, 0], [0, side], [side, side]], np.float32))
        pad = int(np.ceil(3 / k))
        h, w = frame.shape[:2]
        x0, y0 = np.maximum(np.floor(corners.min(0)).astype(int) - pad, 0)
        x1, y1 = np.minimum(np.ceil(corners.max(0)).astype(int) + pad, (w, h))
        if x1 > x0 and y1 > y0:
            frame = cv2.GaussianBlur(frame[y0:y1, x0:x1], (0, 0), 0.45 / k)
            affine = affine.copy()
            affine[:, 2] += affine[:, :2] @ np.array([x0, y0], np.float32)
    return cv2.warpAffine(frame, affine, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
