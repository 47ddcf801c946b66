"""The picture metrics (lipdub.eval.picture) fail on known-bad outputs of a real face: desaturated lips,
blurred skin, a drawn dark lip outline, lost teeth; and read ≈ 1 / ≈ 0 on an untouched frame."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from lipdub.demo import face_image
from lipdub.eval import picture as P
from lipdub.eval.image import ImageStats, frame_metrics
from lipdub.face import landmarks as L
from lipdub.face.mesh import FaceMesh


def _swayed(image: np.ndarray, t: float) -> np.ndarray:
    """The portrait as moving_face_video shows it at time t (sway, nod, zoom)."""
    m = cv2.getRotationMatrix2D((225.0, 125.0), 2.5 * math.sin(2 * math.pi * t / 4.0),
                                1.0 + 0.03 * math.sin(2 * math.pi * t / 6.0))
    m[:, 2] += (6 * math.sin(2 * math.pi * t / 5.0), 3 * math.sin(2 * math.pi * t / 3.0))
    return cv2.warpAffine(image, m, image.shape[1::-1], flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)


@pytest.fixture(scope="module")
def faces() -> list[tuple[np.ndarray, np.ndarray]]:
    """The astronaut at t = 0.5 s and 2.5 s (2 s apart) with their face-mesh landmarks."""
    out = []
    with FaceMesh() as mesh:
        for t in (0.5, 2.5):
            frame = _swayed(face_image(), t)
            (points,) = mesh(frame)[:1]
            out.append((frame, points))
    return out


def _lip_ring(frame: np.ndarray, points: np.ndarray) -> np.ndarray:
    mask = np.zeros(frame.shape[:2], np.uint8)
    cv2.fillPoly(mask, [points[L.LIPS_OUTER, :2].astype(np.int32)], 1)
    cv2.fillPoly(mask, [points[L.LIPS_INNER, :2].astype(np.int32)], 0)
    return mask.astype(bool)


def _summary(out: np.ndarray, src: np.ndarray, points: np.ndarray) -> dict[str, float]:
    stats = ImageStats()
    frame_metrics(stats, out, src, points, out_points=points)
    return stats.summary()


def test_an_untouched_frame_reads_one_and_zero(faces: list[tuple[np.ndarray, np.ndarray]]) -> None:
    frame, points = faces[0]
    s = _summary(frame, frame, points)
    assert s["lip_delta_e"] == 0.0 and s["lip_chroma_ratio"] == 1.0
    assert s["skin_texture_ratio"] == 1.0 and s["lip_edge_ratio"] == 1.0
    assert s["teeth_fraction"] == s["teeth_fraction_source"] > 0.1  # the astronaut smiles: teeth show


def test_desaturated_lips_lose_chroma_and_exceed_the_two_second_baseline(
        faces: list[tuple[np.ndarray, np.ndarray]]) -> None:
    (frame, points), (later, later_points) = faces
    colours = np.array([P.lip_colour(frame, points), P.lip_colour(later, later_points)])
    baseline = P.lip_colour_baseline(colours, gap=1)  # the same lips 2 s later
    lab = cv2.cvtColor(frame.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)
    ring = _lip_ring(frame, points)
    lab[ring, 1:] *= 0.7  # lips 30 % less saturated
    pale = np.clip(cv2.cvtColor(lab, cv2.COLOR_Lab2RGB) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    s = _summary(pale, frame, points)
    assert s["lip_chroma_ratio"] < 0.98
    assert s["lip_delta_e"] > baseline + 1.0, (s["lip_delta_e"], baseline)


def test_blurred_skin_loses_texture(faces: list[tuple[np.ndarray, np.ndarray]]) -> None:
    frame, points = faces[0]
    blurred = cv2.GaussianBlur(frame, (0, 0), 1.5)  # the soft skin of a low-resolution mouth model
    face = np.zeros(frame.shape[:2], np.uint8)
    cv2.fillPoly(face, [points[L.FACE_OVAL, :2].astype(np.int32)], 1)
    soft = np.where(face[..., None] > 0, blurred, frame)
    s = _summary(soft, frame, points)
    assert s["skin_texture_ratio"] < 0.95
    # Re-drawn lips alone do not count as skin: blurring only the lips leaves the ratio near 1.
    lips_only = np.where(_lip_ring(frame, points)[..., None], blurred, frame)
    assert _summary(lips_only, frame, points)["skin_texture_ratio"] == pytest.approx(1.0, abs=0.02)


def test_a_drawn_dark_lip_outline_raises_the_edge_band_energy(
        faces: list[tuple[np.ndarray, np.ndarray]]) -> None:
    frame, points = faces[0]
    outlined = frame.copy()
    cv2.polylines(outlined, [points[L.LIPS_OUTER, :2].round().astype(np.int32)], True, (60, 30, 30), 1,
                  lineType=cv2.LINE_AA)
    s = _summary(outlined, frame, points)
    assert s["lip_edge_ratio"] > 1.10


def test_a_mouth_without_teeth_reads_zero(faces: list[tuple[np.ndarray, np.ndarray]]) -> None:
    frame, points = faces[0]
    dark = frame.copy()
    inner = np.zeros(frame.shape[:2], np.uint8)
    cv2.fillPoly(inner, [points[L.LIPS_INNER, :2].astype(np.int32)], 1)
    dark[inner > 0] = (40, 15, 15)  # a dark cavity painted over the teeth
    s = _summary(dark, frame, points)
    assert s["teeth_fraction"] < 0.02 < 0.1 < s["teeth_fraction_source"]


def test_a_closed_mouth_has_no_teeth_value(faces: list[tuple[np.ndarray, np.ndarray]]) -> None:
    frame, points = faces[0]
    closed = points.copy()
    closed[L.LIPS_INNER_LOWER, 1] = closed[L.LIPS_INNER_UPPER[::-1], 1]  # inner lips together
    assert P.teeth_fraction(frame, closed) is None
