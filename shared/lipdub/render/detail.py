"""Fine lip and mouth detail at frame resolution, taken from the source's own reference frames.

The generator draws a 96-px window, and a 4,000-step CPU model draws it soft: at 720p the mouth is
rendered at about half the resolution the frame shows. What it cannot draw (lip texture and borders,
teeth edges, the shadow line between the lips) exists in the reference frames of the same person. For
each output frame the reference whose mouth opening is closest gives its high-pass detail (frame minus its
Gaussian blur), carried onto the target lips by a thin-plate spline fitted on the 40 lip landmarks (target
→ reference, so every output pixel knows where to sample) and added inside the target's outer lip contour.
Because the detail is mapped onto the *target* lips, its edges sit where the audio model put the mouth, not
where the source's mouth was (adding the warped source's own detail did that and cost sync: MOC 0.33).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from scipy.interpolate import RBFInterpolator

from lipdub.face import landmarks as L
from lipdub.render import window

GRID = 4  # frame px between evaluations of the spline (it is smooth; bilinear in between)
MARGIN = 0.25  # box around the lips kept per reference, in mouth widths
GROW = 1.06  # the outer lip contour grown about its centre, so the lip border's own edge is inside


@dataclass(frozen=True)
class Reference:
    detail: np.ndarray  # [h, w, 3] float32 high-pass of the frame box around the lips
    to_box: np.ndarray  # 2x3 affine: window px -> box px
    lips: np.ndarray  # [40, 2] window-space lip landmarks (order of `landmarks.LIPS`)
    opening: float  # window-space mouth opening


def _lip_box(xy: np.ndarray, shape: tuple[int, ...], margin: float) -> tuple[int, int, int, int]:
    lo, hi = xy.min(0), xy.max(0)
    pad = (hi[0] - lo[0]) * margin
    x0, y0 = np.maximum(np.floor(lo - pad).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(hi + pad).astype(int), (shape[1], shape[0]))
    return int(x0), int(y0), int(x1), int(y1)


class LipDetail:
    """High-pass lip detail of K references, transferred onto target lips (see the module doc)."""

    def __init__(self, references: Sequence[tuple[np.ndarray, np.ndarray]], size: int, sigma: float) -> None:
        """`references`: (frame, landmarks) pairs; `size`: window side; `sigma`: the high-pass cut in window
        px (converted to each frame's scale, so the generator keeps what a window can show)."""
        self.refs: list[Reference] = []
        for frame, points in references:
            a = window.window_affine(points, size)
            x0, y0, x1, y1 = _lip_box(points[L.LIPS, :2], frame.shape, MARGIN)
            if x1 - x0 < 8 or y1 - y0 < 8:
                continue
            crop = frame[y0:y1, x0:x1].astype(np.float32)
            detail = crop - cv2.GaussianBlur(crop, (0, 0), sigma / window.scale(a))
            to_box = window.invert(a)
            to_box[:, 2] -= (x0, y0)
            wp = window.apply(a, points[:, :2])
            self.refs.append(Reference(detail, to_box, wp[L.LIPS], float(L.mouth_opening(wp))))

    def add(self, region: np.ndarray, to_window: np.ndarray, target: np.ndarray, strength: float = 1.0
            ) -> None:
        """Add detail in place to `region` (uint8 frame pixels; `to_window` maps its pixels to the window)
        for the window-space target landmarks `target` [478, 2]."""
        if not self.refs:
            return
        opening = float(L.mouth_opening(target))
        ref = min(self.refs, key=lambda r: abs(r.opening - opening))
        from_window = window.invert(to_window)
        lips = window.apply(from_window, target[L.LIPS])  # region px
        x0, y0, x1, y1 = _lip_box(lips, region.shape, 0.1)
        if x1 - x0 < 8 or y1 - y0 < 8:
            return
        outer = lips[: len(L.LIPS_OUTER)]
        centre = outer.mean(0)
        mask = np.zeros((y1 - y0, x1 - x0), np.float32)
        cv2.fillPoly(mask, [np.round((centre + (outer - centre) * GROW - (x0, y0)) * 16).astype(np.int32)],
                     1.0, cv2.LINE_AA, 4)
        mask = cv2.GaussianBlur(mask, (0, 0), max(1.0, 0.6 / window.scale(to_window)))
        # Backward map: region px -> window (affine) -> reference window (spline on the lips) -> reference box.
        spline = RBFInterpolator(target[L.LIPS].astype(np.float64), ref.lips.astype(np.float64),
                                 kernel="thin_plate_spline", smoothing=1e-2)
        # Nodes sit where cv2.resize's half-pixel convention puts them, so the upsampled map is exact there.
        h, w = y1 - y0, x1 - x0
        ny, nx = -(-h // GRID), -(-w // GRID)
        gy, gx = np.mgrid[0:ny, 0:nx].astype(np.float32)
        nodes = np.stack([x0 + (gx.ravel() + 0.5) * GRID - 0.5, y0 + (gy.ravel() + 0.5) * GRID - 0.5], 1)
        in_window = window.apply(to_window, nodes)
        in_ref = window.apply(ref.to_box, spline(in_window.astype(np.float64)).astype(np.float32))
        fine = cv2.resize(in_ref.reshape(ny, nx, 2), (nx * GRID, ny * GRID), interpolation=cv2.INTER_LINEAR)
        fine = fine[:h, :w]
        moved = cv2.remap(ref.detail, fine[..., 0], fine[..., 1], cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        patch = region[y0:y1, x0:x1].astype(np.float32) + moved * (mask * strength)[..., None]
        region[y0:y1, x0:x1] = np.clip(patch + 0.5, 0, 255).astype(np.uint8)
