"""The geometric renderer: a landmark-driven warp of the lower face (fast CPU path and fallback).

The lips and jaw are moved so that the inner-lip gap matches the target opening; a smooth displacement
field (thin-plate spline through the moved points, pinned to zero on the upper face and around the jaw)
backward-warps the source pixels. Where the target mouth is open wider than the source, the cavity is
shaded dark with a hint of upper teeth. Only pixels inside a feathered lower-face mask can change, so the
paste-back has no seam and the rest of the frame is untouched.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy.interpolate import RBFInterpolator

from lipdub.face import landmarks as L

GRID_STEP = 6  # px between evaluations of the displacement field (then bilinearly upsampled)
ANCHORS = [10, 338, 297, 332, 284, 251, 389, 356, 454, 234, 127, 162, 21, 54, 103, 67, 109,
           33, 133, 362, 263, 1, 4, 5, 195, 6, 168, 2, 98, 327, 129, 358]


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-6)


MIN_GAP = 0.07  # × mouth width: a fully closed target would put upper and lower control points on top of
# each other with different offsets, and even a thin slit between closely spaced points with very different
# offsets makes the thin-plate field overshoot (folded, doubled lips): the lips close to a 7% slit at most


def target_points(points: np.ndarray, opening: float) -> tuple[np.ndarray, np.ndarray]:
    """Move lips and jaw so that the inner-lip gap equals `opening` × inner mouth width.

    Returns (indices, target xy) of the moved landmarks. The lower lip and chin carry most of the motion
    (the jaw drops); the upper lip lifts a little; mouth corners stay put. Opening adds the same extra gap
    along the mouth (fading towards the corners); closing shrinks every upper/lower pair's gap in
    proportion, so the lips never cross however wide the source mouth was.
    """
    xy = points[:, :2]
    width = float(np.linalg.norm(xy[L.MOUTH_LEFT] - xy[L.MOUTH_RIGHT]))
    eyes_mid = (xy[33] + xy[263]) / 2
    down = _unit(xy[L.CHIN] - eyes_mid)
    across = _unit(xy[L.MOUTH_RIGHT] - xy[L.MOUTH_LEFT])
    centre = (xy[L.MOUTH_LEFT] + xy[L.MOUTH_RIGHT]) / 2
    half = max(width / 2, 1.0)

    def falloff(idx: list[int], reach: float) -> np.ndarray:
        u = (xy[idx] - centre) @ across / (half * reach)
        return np.clip(1.0 - u**2, 0.0, 1.0)

    # Upper/lower landmark pairs facing each other across the mouth, corners excluded.
    inner_up, inner_lo = L.LIPS_INNER_UPPER[1:-1], L.LIPS_INNER_LOWER[::-1][1:-1]
    outer_up, outer_lo = L.LIPS_OUTER_UPPER[1:-1], L.LIPS_OUTER_LOWER[::-1][1:-1]
    gaps = np.clip((xy[inner_lo] - xy[inner_up]) @ down, 0.0, None)
    centre_gap = float(np.linalg.norm(xy[L.UPPER_INNER_MID] - xy[L.LOWER_INNER_MID]))
    target_gap = max(opening, MIN_GAP) * width
    delta = target_gap - centre_gap
    if delta >= 0:
        pair_delta = delta * falloff(inner_up, 1.15)
    else:
        pair_delta = gaps * (target_gap / max(centre_gap, 1e-6) - 1.0)
    jaw = L.JAW[3:-3]
    idx = inner_lo + outer_lo + inner_up + outer_up + jaw
    lower_shift = (0.8 * pair_delta)[:, None] * down
    upper_shift = (0.2 * pair_delta)[:, None] * down
    moved = np.concatenate([
        xy[inner_lo] + lower_shift, xy[outer_lo] + lower_shift,
        xy[inner_up] - upper_shift, xy[outer_up] - upper_shift,
        xy[jaw] + 0.55 * delta * falloff(jaw, 2.2)[:, None] * down,
    ])
    return np.array(idx), moved


MOVABLE = sorted(set(L.LIPS + L.JAW[3:-3]))  # landmarks a target may move (the jaw ends are warp anchors)


def target_from_opening(points: np.ndarray, opening: float) -> np.ndarray:
    """Full target landmark set [478, 2] for a mouth opening (lips and jaw moved by `target_points`)."""
    idx, moved = target_points(points, opening)
    target = points[:, :2].copy()
    target[idx] = moved
    return target


def target_landmarks(points: np.ndarray, opening: float, lips: np.ndarray | None = None) -> np.ndarray:
    """Full target landmark set [478, 2]: the jaw follows the opening; the lips are `lips` ([40, 2] frame
    px, order of `landmarks.LIPS`, the audio model's predicted shape) when given."""
    target = target_from_opening(points, opening)
    if lips is not None:
        target[L.LIPS] = lips
    return target


class WarpRenderer:
    name = "warp"

    def __init__(self, feather: float = 0.08) -> None:
        self.feather = feather

    def region(self, points: np.ndarray, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
        """Crop box (x0, y0, x1, y1) around the lower face with room for the jaw to drop."""
        xy = points[:, :2]
        lo = xy[L.FACE_OVAL].min(0)
        hi = xy[L.FACE_OVAL].max(0)
        pad = 0.25 * (hi - lo)
        x0, y0 = np.floor(lo - pad).astype(int)
        x1, y1 = np.ceil(hi + pad).astype(int)
        y0 = int(xy[L.NOSE_TIP, 1] - 0.1 * (hi[1] - lo[1]))
        return max(x0, 0), max(y0, 0), min(x1, shape[1]), min(y1, shape[0])

    def drawable(self, points: np.ndarray, shape: tuple[int, ...]
                 ) -> tuple[tuple[int, int, int, int], float, float] | None:
        """(`region` box, face height px, feather px) of a frame's lower face, or None for a face too small
        to draw (the renderers that build on this warp start here)."""
        box = self.region(points, shape)
        if box[2] - box[0] < 16 or box[3] - box[1] < 16:
            return None
        face_px = float(np.ptp(points[L.FACE_OVAL, 1]))
        return box, face_px, self.feather * face_px

    def mask(self, points: np.ndarray, box: tuple[int, int, int, int], scale: float) -> np.ndarray:
        """Feathered weight of the lower face (below the nose, inside the jaw line grown a little)."""
        x0, y0, x1, y1 = box
        xy = points[:, :2] - (x0, y0)
        jaw = xy[L.JAW]
        centre = xy[L.JAW].mean(0)
        grown = centre + (jaw - centre) * 1.12
        top = xy[[L.JAW[0], 98, L.NOSE_BOTTOM, 327, L.JAW[-1]]][::-1]
        poly = np.concatenate([grown, top]).astype(np.int32)
        m = np.zeros((y1 - y0, x1 - x0), np.float32)
        cv2.fillPoly(m, [poly], 1.0)
        k = max(3, int(scale * self.feather) | 1)
        return cv2.GaussianBlur(m, (k, k), 0)

    def __call__(self, frame: np.ndarray, points: np.ndarray, opening: float) -> np.ndarray:
        moved_idx, moved_frame = target_points(points, opening)
        displaced = self.displace(frame, points, moved_idx, moved_frame)
        if displaced is None:
            return frame
        box, crop, warped, map_x, map_y = displaced
        x0, y0, x1, y1 = box
        xy = points[:, :2] - (x0, y0)
        moved = moved_frame - (x0, y0)
        warped = self._shade_cavity(warped, crop, xy, moved_idx, moved, map_x, map_y)
        face = float(np.ptp(xy[L.FACE_OVAL, 1]))
        m = self.mask(points, box, face)[..., None]
        out = frame.copy()
        out[y0:y1, x0:x1] = (crop * (1 - m) + warped * m + 0.5).astype(np.uint8)
        return out

    def displace(self, frame: np.ndarray, points: np.ndarray, moved_idx: np.ndarray, moved_frame: np.ndarray,
                 grid_step: int = GRID_STEP
                 ) -> tuple[tuple[int, int, int, int], np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        """Backward-warp the lower-face box so landmarks `moved_idx` land on `moved_frame` (frame px).

        Returns (box, source crop, warped crop (float32), map_x, map_y), or None for a face too small to warp.
        Other renderers (the DINet renderer's prompt) reuse this geometric step; `grid_step` is the spacing
        of the field's evaluation grid (the field is smooth, so large faces can use a coarser grid).
        """
        drawable = self.drawable(points, frame.shape)
        if drawable is None:
            return None
        x0, y0, x1, y1 = box = drawable[0]
        crop = frame[y0:y1, x0:x1]
        map_x, map_y = self.backward_map(points, moved_idx, moved_frame, box, grid_step)
        # Cubic: bilinear at fractional offsets blurs the skin (half its Laplacian variance at half a pixel).
        warped = cv2.remap(crop, map_x, map_y, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
        return box, crop, warped.astype(np.float32), map_x, map_y

    @staticmethod
    def backward_map(points: np.ndarray, moved_idx: np.ndarray, moved_frame: np.ndarray,
                     box: tuple[int, int, int, int], grid_step: int = GRID_STEP,
                     within: tuple[int, int, int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(map_x, map_y) in `box` pixels for the pixels of `within` (x0, y0, x1, y1 in box pixels; default
        the whole box): where each output pixel samples the box crop. The field is the same whatever
        `within` is (its grid stays aligned to the box and one extra cell on each side keeps the bilinear
        upsampling exact), so a caller that changes only part of the box can compute only that part.
        """
        x0, y0, x1, y1 = box
        h, w = y1 - y0, x1 - x0
        xy = points[:, :2] - (x0, y0)
        moved = moved_frame - (x0, y0)
        border = np.array([(x, y) for x in (0, w / 2, w - 1) for y in (0, h / 2, h - 1) if (x, y) != (w / 2, h / 2)])
        anchors = np.concatenate([xy[ANCHORS], border])
        # Control points sit at the *target* positions, carrying target→source offsets: a backward map.
        ctrl = np.concatenate([moved, anchors])
        offs = np.concatenate([xy[moved_idx] - moved, np.zeros_like(anchors)])
        field = RBFInterpolator(ctrl, offs, kernel="thin_plate_spline", smoothing=1e-3)
        sx0, sy0, sx1, sy1 = within or (0, 0, w, h)
        s = grid_step
        # The whole box has grid nodes 0 .. ceil(size / s) per axis; take the ones around `within`.
        cx0, cy0 = max(sx0 // s - 1, 0), max(sy0 // s - 1, 0)
        cx1, cy1 = min(-(-sx1 // s) + 2, -(-w // s) + 1), min(-(-sy1 // s) + 2, -(-h // s) + 1)
        gy, gx = np.mgrid[cy0 * s:cy1 * s:s, cx0 * s:cx1 * s:s]
        coarse = field(np.stack([gx.ravel(), gy.ravel()], 1)).reshape(*gx.shape, 2).astype(np.float32)
        fine = cv2.resize(coarse, (gx.shape[1] * s, gx.shape[0] * s), interpolation=cv2.INTER_LINEAR)
        fine = fine[sy0 - cy0 * s:sy1 - cy0 * s, sx0 - cx0 * s:sx1 - cx0 * s]
        base_x, base_y = np.meshgrid(np.arange(sx0, sx1, dtype=np.float32),
                                     np.arange(sy0, sy1, dtype=np.float32))
        return base_x + fine[..., 0], base_y + fine[..., 1]

    @staticmethod
    def _shade_cavity(warped: np.ndarray, crop: np.ndarray, xy: np.ndarray, moved_idx: np.ndarray,
                      moved: np.ndarray, map_x: np.ndarray, map_y: np.ndarray) -> np.ndarray:
        """Dark mouth interior (and upper teeth) where the target opens wider than the source was open."""
        target = xy.copy()
        target[moved_idx] = moved
        h, w = warped.shape[:2]
        inner_t = np.zeros((h, w), np.float32)
        cv2.fillPoly(inner_t, [target[L.LIPS_INNER].astype(np.int32)], 1.0)
        if inner_t.sum() < 4:
            return warped
        inner_s = np.zeros((h, w), np.float32)
        cv2.fillPoly(inner_s, [xy[L.LIPS_INNER].astype(np.int32)], 1.0)
        # Which target pixels already show the source's own mouth interior after warping.
        already = cv2.remap(inner_s, map_x, map_y, cv2.INTER_LINEAR)
        need = np.clip(inner_t - already, 0, 1)
        need = cv2.GaussianBlur(need, (3, 3), 0)
        top = target[L.LIPS_INNER_UPPER, 1].mean()
        bottom = target[L.LIPS_INNER_LOWER, 1].mean()
        gap = max(bottom - top, 1.0)
        rows = (np.arange(h, dtype=np.float32)[:, None] - top) / gap
        lip = crop[np.clip(target[L.LIPS_OUTER, 1].astype(int), 0, h - 1),
                   np.clip(target[L.LIPS_OUTER, 0].astype(int), 0, w - 1)].astype(np.float32).mean(0)
        dark = lip * 0.22 + np.array([8, 2, 4], np.float32)  # shadowed interior in the lips' own hue
        teeth = np.array([212, 204, 194], np.float32)
        width = max(float(np.linalg.norm(target[L.MOUTH_LEFT] - target[L.MOUTH_RIGHT])), 1.0)
        # Teeth show only once the lips part by more than a sliver (a thin slit is shadow, not teeth).
        show_teeth = float(np.clip((gap / width - 0.08) / 0.1, 0.0, 1.0))
        tooth_band = np.clip(1.0 - rows / 0.28, 0, 1) * (rows > -0.2) * show_teeth
        colour = dark[None, None] * (1 - tooth_band[..., None] * 0.75) + teeth * (tooth_band[..., None] * 0.75)
        colour = colour * np.clip(1.15 - 0.4 * np.abs(rows - 0.5), 0.6, 1.1)[..., None]
        a = need[..., None] * 0.92
        return (warped * (1 - a) + colour * a).astype(np.float32)
