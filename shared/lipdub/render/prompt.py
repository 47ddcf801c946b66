"""The mouth prompt: what the generator is told about the target mouth, and the reference choice.

The prompt is the source window already warped to the target lip landmarks (the full-resolution
displacement-field warp of `warp.py`), with the mouth region blacked out and described instead by a drawn
lip map: upper lip, lower lip and mouth cavity as flat grey levels with the lip contours on top (the role of
DH_live mini's rendered mouth mesh). In training the target landmarks are the frame's own, so the warp is
the identity and the network must draw the real mouth from the map and the references alone.
"""

from __future__ import annotations

import cv2
import numpy as np

from lipdub.face import landmarks as L

# Grey levels of the lip map (the network only needs them distinct and stable).
UPPER_LIP, LOWER_LIP, CAVITY, CONTOUR = 1.0, 0.6, 0.25, 0.85
MASK_GROW = 0.07  # dilation of the outer-lip polygon, in window sides: covers lip edge, philtrum, chin crease
SUBPIXEL = 4  # fixed-point bits for polygon drawing (smooth shapes at 96 px)


def _poly(points: np.ndarray, idx: list[int]) -> np.ndarray:
    return np.round(points[idx, :2] * (1 << SUBPIXEL)).astype(np.int32)


def lip_map(points: np.ndarray, size: int) -> np.ndarray:
    """[size, size] float32 lip map from window-space landmarks."""
    canvas = np.zeros((size, size), np.uint8)
    upper = L.LIPS_OUTER_UPPER + L.LIPS_INNER_UPPER[::-1]
    lower = L.LIPS_OUTER_LOWER + L.LIPS_INNER_LOWER[::-1]
    cv2.fillPoly(canvas, [_poly(points, upper)], int(255 * UPPER_LIP), cv2.LINE_AA, SUBPIXEL)
    cv2.fillPoly(canvas, [_poly(points, lower)], int(255 * LOWER_LIP), cv2.LINE_AA, SUBPIXEL)
    cv2.fillPoly(canvas, [_poly(points, L.LIPS_INNER)], int(255 * CAVITY), cv2.LINE_AA, SUBPIXEL)
    cv2.polylines(canvas, [_poly(points, L.LIPS_INNER), _poly(points, L.LIPS_OUTER)], True, int(255 * CONTOUR),
                  1, cv2.LINE_AA, SUBPIXEL)
    return canvas.astype(np.float32) / 255.0


def mouth_mask(points: np.ndarray, size: int) -> np.ndarray:
    """[size, size] float32 {0, 1}: the region the generator re-draws (outer lips grown by MASK_GROW)."""
    canvas = np.zeros((size, size), np.uint8)
    cv2.fillPoly(canvas, [_poly(points, L.LIPS_OUTER)], 1, cv2.LINE_8, SUBPIXEL)
    r = max(1, round(MASK_GROW * size))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    return cv2.dilate(canvas, kernel).astype(np.float32)


def source_input(window_rgb: np.ndarray, points: np.ndarray) -> np.ndarray:
    """[5, S, S] float32: masked RGB in [0, 1], mask, lip map (the prompt for target landmarks `points`)."""
    size = window_rgb.shape[0]
    mask = mouth_mask(points, size)
    rgb = window_rgb.astype(np.float32).transpose(2, 0, 1) / 255.0 * (1.0 - mask)
    return np.concatenate([rgb, mask[None], lip_map(points, size)[None]])


def reference_input(window_rgb: np.ndarray, points: np.ndarray) -> np.ndarray:
    """[4, S, S] float32: a reference window's RGB in [0, 1] and its own lip map."""
    size = window_rgb.shape[0]
    rgb = window_rgb.astype(np.float32).transpose(2, 0, 1) / 255.0
    return np.concatenate([rgb, lip_map(points, size)[None]])


def select_references(opening: np.ndarray, valid: np.ndarray, k: int) -> list[int]:
    """K frame indices from the most-open half of the valid frames, spread over its range of openings.

    The most-open half shows teeth and the inner mouth (DH_live's rule); spreading the choice over
    quantiles rather than sampling at random makes the result deterministic and the openings diverse.
    """
    idx = np.flatnonzero(valid)
    if idx.size == 0:
        raise ValueError("no valid frame to take references from")
    o = opening[idx]
    chosen: list[int] = []
    for q in np.linspace(0.55, 0.98, k):
        target = np.quantile(o, q)
        order = idx[np.argsort(np.abs(o - target), kind="stable")]
        pick = next((int(i) for i in order if int(i) not in chosen), int(order[0]))
        chosen.append(pick)
    return chosen
