"""Picture metrics of the re-drawn mouth at the frame's own resolution (issue #32): lip colour, lower-face
skin texture, drawn edges along the lips, teeth.

Each compares an output frame with the source frame it was rendered from (same pose, same light), each on
its own landmarks where the mouth itself is measured (the output's lips are where the output drew them) and
on the source's where a fixed region is needed (the skin). Nothing is resized: a renderer that works at a
lower resolution than the video is seen as such.

- Lip colour: the mean CIELAB colour of the lip pixels (between the outer and inner lip contours, eroded
  by 3 % of the mouth width so skin and cavity at the edges don't mix in). `lip_delta_e` is the median over
  frames of CIEDE2000 between output and source; `lip_chroma_ratio` the mean CIELAB chroma √(a² + b²),
  output / source (1 = lips as saturated as the source's). The baseline `lip_delta_e_2s` is the same
  person's own variation: ΔE between the source's lips at frame t and at t + 2 s.
- Skin texture: the variance of the Laplacian over the lower-face skin (inside the face oval, below the
  nose, the oval's edge eroded away) with the lips of *both* frames cut out (dilated by 15 % of the mouth
  width): `skin_texture_ratio` = output / source (1 = as much fine detail as the source; a blur is < 1).
- Lip edge band: mean squared Sobel gradient in a thin band (± 5 % of the mouth width, ≥ 2 px) along the
  outer lip contour: `lip_edge_ratio` = output / source (a drawn outline or halo is > 1).
- Teeth: in frames whose mouth is open (landmark opening ≥ OPEN_AT), the fraction of the inner-mouth pixels
  brighter than that frame's own lips by TEETH_DL L* units. `teeth_fraction` over the output's open frames,
  `teeth_fraction_source` over the source's own open frames (≈ equal: teeth neither lost nor invented).
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from skimage.color import deltaE_ciede2000

from lipdub.face import landmarks as L

OPEN_AT = 0.15  # inner-lip gap / inner width from which a mouth counts as open (speech peaks at 0.2-0.5)
TEETH_DL = 12.0  # L* units above the lips' own mean that count as teeth
MIN_PIXELS = 20  # fewer measured pixels than this: no value for the frame

Box = tuple[int, int, int, int]


def _mouth_width(points: np.ndarray) -> float:
    return float(np.linalg.norm(points[61, :2] - points[291, :2]))


def _box(points: np.ndarray, idx: list[int], shape: tuple[int, ...], pad: float) -> Box:
    xy = points[idx, :2]
    lo = np.floor(xy.min(0) - pad).astype(int)
    hi = np.ceil(xy.max(0) + pad).astype(int)
    return max(lo[0], 0), max(lo[1], 0), min(hi[0], shape[1]), min(hi[1], shape[0])


def _poly(points: np.ndarray, idx: list[int], box: Box) -> np.ndarray:
    return np.round(points[idx, :2] - (box[0], box[1])).astype(np.int32)


def _lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (L* 0-100) of an RGB uint8 image (sRGB, D65), float32."""
    return cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)


def _lip_ring(points: np.ndarray, box: Box) -> np.ndarray:
    """Mask (box-sized) of the pixels between the outer and inner lip contours, eroded a little."""
    mask = np.zeros((box[3] - box[1], box[2] - box[0]), np.uint8)
    cv2.fillPoly(mask, [_poly(points, L.LIPS_OUTER, box)], 1)
    cv2.fillPoly(mask, [_poly(points, L.LIPS_INNER, box)], 0)
    k = max(1, round(0.03 * _mouth_width(points)))
    return cv2.erode(mask, np.ones((2 * k + 1, 2 * k + 1), np.uint8)).astype(bool)


def lip_colour(frame: np.ndarray, points: np.ndarray) -> np.ndarray | None:
    """Mean CIELAB colour of the lips, or None when too few lip pixels are visible."""
    box = _box(points, L.LIPS_OUTER, frame.shape, 2.0)
    if box[2] - box[0] < 4 or box[3] - box[1] < 4:
        return None
    ring = _lip_ring(points, box)
    if ring.sum() < MIN_PIXELS:
        return None
    return _lab(frame[box[1]:box[3], box[0]:box[2]])[ring].mean(0).astype(np.float64)


def delta_e(a: np.ndarray, b: np.ndarray) -> float:
    return float(deltaE_ciede2000(a[None, None], b[None, None])[0, 0])


def chroma(lab: np.ndarray) -> float:
    return float(math.hypot(lab[1], lab[2]))


def _skin_mask(src_points: np.ndarray, out_points: np.ndarray, box: Box) -> np.ndarray:
    """Lower-face skin in `box`: the face oval below the nose, its edge eroded, both frames' lips cut out."""
    h, w = box[3] - box[1], box[2] - box[0]
    face = np.zeros((h, w), np.uint8)
    cv2.fillPoly(face, [_poly(src_points, L.FACE_OVAL, box)], 1)
    face_h = float(np.ptp(src_points[L.FACE_OVAL, 1]))
    k = max(2, round(0.03 * face_h))
    face = cv2.erode(face, np.ones((2 * k + 1, 2 * k + 1), np.uint8))
    below_nose = int(math.ceil(src_points[L.NOSE_BOTTOM, 1] - box[1] + 0.02 * face_h))
    face[:max(0, below_nose)] = 0
    lips = np.zeros_like(face)
    for p in (src_points, out_points):
        cv2.fillPoly(lips, [_poly(p, L.LIPS_OUTER, box)], 1)
    d = max(2, round(0.15 * max(_mouth_width(src_points), _mouth_width(out_points))))
    lips = cv2.dilate(lips, np.ones((2 * d + 1, 2 * d + 1), np.uint8))
    return (face > 0) & (lips == 0)


def skin_texture(out: np.ndarray, src: np.ndarray, out_points: np.ndarray,
                 src_points: np.ndarray) -> tuple[float, float]:
    """(output, source) variance of the Laplacian over the same lower-face skin mask; NaN if none."""
    box = _box(src_points, L.FACE_OVAL, out.shape, 2.0)
    nan = (float("nan"), float("nan"))
    if box[2] - box[0] < 16 or box[3] - box[1] < 16:
        return nan
    mask = _skin_mask(src_points, out_points, box)
    if mask.sum() < 4 * MIN_PIXELS:
        return nan
    values = []
    for img in (out, src):
        grey = cv2.cvtColor(img[box[1]:box[3], box[0]:box[2]], cv2.COLOR_RGB2GRAY).astype(np.float64)
        values.append(float(cv2.Laplacian(grey, cv2.CV_64F)[mask].var()))
    return values[0], values[1]


def lip_edge_energy(frame: np.ndarray, points: np.ndarray) -> float:
    """Mean squared gradient magnitude in a thin band along the outer lip contour (grey levels²)."""
    half = max(2, round(0.05 * _mouth_width(points)))
    box = _box(points, L.LIPS_OUTER, frame.shape, half + 2.0)
    if box[2] - box[0] < 8 or box[3] - box[1] < 8:
        return float("nan")
    band = np.zeros((box[3] - box[1], box[2] - box[0]), np.uint8)
    cv2.polylines(band, [_poly(points, L.LIPS_OUTER, box)], True, 1, thickness=2 * half + 1)
    grey = cv2.cvtColor(frame[box[1]:box[3], box[0]:box[2]], cv2.COLOR_RGB2GRAY).astype(np.float32)
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
    energy = (gx ** 2 + gy ** 2)[band > 0]
    return float(energy.mean()) if energy.size >= MIN_PIXELS else float("nan")


def teeth_fraction(frame: np.ndarray, points: np.ndarray) -> float | None:
    """Fraction of the inner mouth brighter than the frame's own lips by TEETH_DL; None if the mouth is
    closed (opening < OPEN_AT) or too small to measure."""
    if float(L.mouth_opening(points.astype(np.float64))) < OPEN_AT:
        return None
    box = _box(points, L.LIPS_OUTER, frame.shape, 2.0)
    if box[2] - box[0] < 4 or box[3] - box[1] < 4:
        return None
    lab = _lab(frame[box[1]:box[3], box[0]:box[2]])
    ring = _lip_ring(points, box)
    inner = np.zeros(ring.shape, np.uint8)
    cv2.fillPoly(inner, [_poly(points, L.LIPS_INNER, box)], 1)
    if ring.sum() < MIN_PIXELS or inner.sum() < MIN_PIXELS:
        return None
    lips_l = float(lab[..., 0][ring].mean())
    return float((lab[..., 0][inner > 0] > lips_l + TEETH_DL).mean())


def picture_metrics(out: np.ndarray, out_points: np.ndarray, src: np.ndarray,
                    src_points: np.ndarray) -> dict[str, float | None]:
    """One frame's raw picture values (private keys, combined over a clip by `summarize`)."""
    values: dict[str, float | None] = {}
    lab_out, lab_src = lip_colour(out, out_points), lip_colour(src, src_points)
    if lab_out is not None and lab_src is not None:
        values.update(_lip_de=delta_e(lab_out, lab_src), _chroma_out=chroma(lab_out),
                      _chroma_src=chroma(lab_src))
    skin_out, skin_src = skin_texture(out, src, out_points, src_points)
    values.update(_skin_out=skin_out, _skin_src=skin_src)
    values.update(_edge_out=lip_edge_energy(out, out_points), _edge_src=lip_edge_energy(src, src_points))
    values.update(_teeth_out=teeth_fraction(out, out_points), _teeth_src=teeth_fraction(src, src_points))
    return values


def _ratio(values: dict[str, list[float]], num: str, den: str) -> float | None:
    a, b = values.get(num), values.get(den)
    if not a or not b or np.mean(b) <= 0:
        return None
    return float(np.mean(a) / np.mean(b))


def summarize(values: dict[str, list[float]]) -> dict[str, float]:
    """The clip's picture metrics from the per-frame values of `picture_metrics` (see the module doc)."""
    out: dict[str, float] = {}
    if values.get("_lip_de"):
        out["lip_delta_e"] = float(np.median(values["_lip_de"]))
    for key, num, den in (("lip_chroma_ratio", "_chroma_out", "_chroma_src"),
                          ("skin_texture_ratio", "_skin_out", "_skin_src"),
                          ("lip_edge_ratio", "_edge_out", "_edge_src")):
        r = _ratio(values, num, den)
        if r is not None:
            out[key] = r
    for key, name in (("teeth_fraction", "_teeth_out"), ("teeth_fraction_source", "_teeth_src")):
        if values.get(name):
            out[key] = float(np.mean(values[name]))
            out[key.replace("fraction", "open_frames")] = float(len(values[name]))
    return out


def lip_colour_baseline(colours: np.ndarray, gap: int) -> float:
    """Median CIEDE2000 between the lips at frame t and at t + gap: how much a real person's mean lip
    colour moves on its own (light, pose, speech). `colours` [N, 3] CIELAB, NaN where not measured."""
    de = [delta_e(colours[t], colours[t + gap]) for t in range(len(colours) - gap)
          if not (np.isnan(colours[t]).any() or np.isnan(colours[t + gap]).any())]
    return float(np.median(de)) if de else float("nan")
