"""Unit tests of the evaluation metrics on synthetic signals, landmarks and images (no media, no models)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter1d

from lipdub import SAMPLE_RATE, SAMPLES_PER_FRAME
from lipdub.eval.image import face_mask, lower_face_boundary, outside_face, seam_score, sharpness
from lipdub.eval.lmd import landmark_distance, lip_jitter, mouth_opening_correlation, umeyama
from lipdub.eval.signals import (
    audio_envelope,
    mouth_opening_signal,
    mouth_width_signal,
    nan_median3,
    silence_behaviour,
    voice_activity,
)
from lipdub.eval.sync import estimate_offset
from lipdub.face import landmarks as L


def _smooth_noise(n: int, seed: int, sigma: float = 1.5) -> np.ndarray:
    return gaussian_filter1d(np.random.default_rng(seed).standard_normal(n), sigma)


@pytest.mark.parametrize("shift", [-7, -5, -2, -1, 0, 1, 2, 5, 7])
def test_offset_recovers_a_known_lag_with_its_sign(shift: int) -> None:
    n = 300
    speech = _smooth_noise(n + 40, seed=1)
    # The mouth moves `shift` frames after the sound: m[t] = e[t - shift] (+ noise).
    envelope = speech[20:20 + n]
    mouth = speech[20 - shift:20 - shift + n] + 0.3 * _smooth_noise(n, seed=2)
    result = estimate_offset(mouth, envelope)
    assert abs(result.offset - shift) < 0.5
    assert result.offset_frames == shift
    assert result.peak > 0.8
    assert result.confidence > 0.5
    assert abs(result.window_offset - shift) < 0.5


def test_offset_confidence_is_low_for_unrelated_signals() -> None:
    related = estimate_offset(_smooth_noise(300, 3) + 0.3 * _smooth_noise(300, 5), _smooth_noise(300, 3))
    unrelated = estimate_offset(_smooth_noise(300, 3), _smooth_noise(300, 4))
    assert unrelated.peak < 0.35
    assert unrelated.confidence < related.confidence / 2


def test_offset_skips_frames_without_a_face() -> None:
    env = _smooth_noise(300, 6)
    mouth = np.roll(env, 2)
    mouth[100:140] = np.nan  # a look-away: no landmarks
    result = estimate_offset(mouth, env)
    assert result.offset_frames == 2
    assert result.frames == 260


def test_offset_of_too_short_signals_is_nan() -> None:
    result = estimate_offset(np.ones(10), np.ones(10))
    assert np.isnan(result.offset) and result.frames == 10


def _tone_bursts(frames_on: list[range], n_frames: int) -> np.ndarray:
    t = np.arange(n_frames * SAMPLES_PER_FRAME) / SAMPLE_RATE
    x = 1e-3 * np.random.default_rng(0).standard_normal(t.size)
    for r in frames_on:
        sl = slice(r.start * SAMPLES_PER_FRAME, r.stop * SAMPLES_PER_FRAME)
        x[sl] += 0.3 * np.sin(2 * np.pi * 700 * t[sl])
    return x.astype(np.float32)


def test_envelope_has_one_value_per_frame_centred_on_the_frame() -> None:
    x = _tone_bursts([range(20, 30)], 60)
    env = audio_envelope(x)
    assert env.shape == (60,)
    loud = env > env.min() + 3
    # Window of frame t is centred on t·40 ms, so frames 20..29 are loud and frame 30 is half-covered.
    assert loud[21:29].all() and not loud[:19].any() and not loud[32:].any()


def test_envelope_ignores_out_of_band_rumble() -> None:
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    rumble = (0.5 * np.sin(2 * np.pi * 50 * t)).astype(np.float32)
    voice = (0.05 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    assert np.median(audio_envelope(rumble)) < np.median(audio_envelope(voice))


def test_vad_marks_bursts_and_silence_behaviour() -> None:
    on = [range(10, 40), range(70, 100)]
    env = audio_envelope(_tone_bursts(on, 120))
    speech = voice_activity(env)
    truth = np.zeros(120, bool)
    for r in on:
        truth[r.start:r.stop] = True
    assert (speech == truth).mean() > 0.95
    opening = np.where(truth, 0.4, 0.05)
    s = silence_behaviour(opening, speech)
    assert s["silence_ratio"] == pytest.approx(0.05 / 0.4, rel=0.05)
    assert s["silence_frames"] > 30 and s["speech_frames"] > 40


def test_nan_median_keeps_missing_faces_missing() -> None:
    x = np.array([1.0, 9.0, 1.0, np.nan, 2.0, 2.0])
    out = nan_median3(x)
    assert out[1] == 1.0  # the spike is removed
    assert np.isnan(out[3])
    assert out[4] == 2.0


def _face(rng: np.random.Generator) -> np.ndarray:
    """A plausible 478-point layout: eyes, nose and lips where MediaPipe would put them, rest random."""
    pts = rng.uniform(100, 300, size=(478, 3)).astype(np.float32)
    pts[33, :2], pts[263, :2], pts[133, :2], pts[362, :2] = (140, 150), (260, 150), (180, 152), (220, 152)
    pts[1, :2], pts[6, :2], pts[168, :2] = (200, 200), (200, 160), (200, 145)
    pts[L.LIPS, 0] = rng.uniform(160, 240, len(L.LIPS))
    pts[L.LIPS, 1] = rng.uniform(235, 265, len(L.LIPS))
    pts[L.UPPER_INNER_MID, :2], pts[L.LOWER_INNER_MID, :2] = (200, 245), (200, 255)
    pts[L.MOUTH_LEFT, :2], pts[L.MOUTH_RIGHT, :2] = (170, 250), (230, 250)
    return pts


def _similar(points: np.ndarray, scale: float, angle: float, shift: tuple[float, float]) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    out = points.copy()
    out[:, :2] = scale * points[:, :2] @ np.array([[c, s], [-s, c]]) + shift
    return out


def test_umeyama_recovers_a_similarity() -> None:
    src = np.random.default_rng(1).uniform(0, 100, (10, 2))
    dst = _similar(np.c_[src, np.zeros(10)], 1.7, 0.3, (5.0, -3.0))[:, :2]
    s, rot, t = umeyama(src, dst)
    assert s == pytest.approx(1.7)
    assert np.allclose((s * (rot @ src.T)).T + t, dst, atol=1e-6)


def test_lmd_ignores_pose_and_measures_lip_displacement() -> None:
    rng = np.random.default_rng(2)
    gt = np.stack([_face(rng) for _ in range(5)])
    valid = np.ones(5, bool)
    moved = np.stack([_similar(p, 0.8, 0.1, (30.0, 12.0)) for p in gt])
    assert landmark_distance(moved, valid, gt, valid).lips == pytest.approx(0.0, abs=1e-3)
    lips_down = gt.copy()
    lips_down[:, L.LIPS, 1] += 6.0  # 6 px on a 120-px inter-ocular distance = 5 units
    result = landmark_distance(lips_down, valid, gt, valid)
    assert result.lips == pytest.approx(5.0, rel=0.05)
    assert result.jaw == pytest.approx(0.0, abs=1e-3)
    missing = valid.copy()
    missing[0] = False
    assert landmark_distance(lips_down, missing, gt, valid).skipped == 1


def test_mouth_opening_signal_and_moc() -> None:
    rng = np.random.default_rng(3)
    base = _face(rng)
    gaps = np.abs(_smooth_noise(50, 7)) * 10 + 1
    points = np.repeat(base[None], 50, axis=0)
    points[:, L.LOWER_INNER_MID, 1] = points[:, L.UPPER_INNER_MID, 1] + gaps
    valid = np.ones(50, bool)
    valid[10] = False
    m = mouth_opening_signal(points, valid)
    assert np.isnan(m[10]) and np.nanmax(m) == pytest.approx(np.max(gaps) / 60, rel=0.2)
    assert mouth_opening_correlation(m, m) == pytest.approx(1.0)
    assert mouth_opening_correlation(m, -m) == pytest.approx(-1.0)


def test_mouth_width_signal_is_scale_free_and_follows_the_corners() -> None:
    rng = np.random.default_rng(8)
    base = _face(rng)
    n = 30
    spread = 1.0 + 0.2 * np.sin(np.arange(n) / 3.0)
    points = np.stack([_similar(base, 1.0 + 0.01 * t, 0.0, (t, 0.0)) for t in range(n)])  # zooming in
    centre = points[:, [61, 291], 0].mean(1)
    for corner in (61, 291):
        points[:, corner, 0] = centre + (points[:, corner, 0] - centre) * spread
    w = mouth_width_signal(points, np.ones(n, bool))
    # Over the inter-ocular distance the zoom cancels: what is left is the spread of the corners.
    assert mouth_opening_correlation(w, spread) > 0.95
    zoom_only = np.stack([_similar(base, 1.0 + 0.01 * t, 0.0, (t, 0.0)) for t in range(n)])
    assert np.ptp(mouth_width_signal(zoom_only, np.ones(n, bool))) < 1e-3 * np.ptp(w)


def test_jitter_is_zero_for_steady_motion_and_grows_with_flicker() -> None:
    rng = np.random.default_rng(4)
    base = _face(rng)
    n = 40
    steady = np.stack([_similar(base, 1.0 + 0.002 * t, 0.0, (2.0 * t, 0.0)) for t in range(n)])
    valid = np.ones(n, bool)
    assert lip_jitter(steady, valid) < 1e-3
    flicker = steady.copy()
    flicker[:, L.LIPS, :2] += rng.normal(0, 1.0, (n, len(L.LIPS), 2))
    assert lip_jitter(flicker, valid) > 1.0


def _frame_and_face() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    img = (rng.uniform(0, 1, (400, 400, 3)) * 40 + 100).astype(np.uint8)
    import cv2

    img = cv2.GaussianBlur(img, (0, 0), 3)
    pts = np.zeros((478, 3), np.float32)
    oval = np.array(L.FACE_OVAL)
    angles = np.linspace(-np.pi / 2, 3 * np.pi / 2, len(oval), endpoint=False)
    pts[oval, 0] = 200 + 90 * np.cos(angles)
    pts[oval, 1] = 200 + 120 * np.sin(angles)
    for i, (x, y) in {98: (185, 215), L.NOSE_BOTTOM: (200, 220), 327: (215, 215)}.items():
        pts[i, :2] = (x, y)
    return img, pts


def test_seam_score_is_zero_untouched_and_sees_a_pasted_patch() -> None:
    img, pts = _frame_and_face()
    assert seam_score(img, img, pts) == (0.0, 0.0, 1.0)
    import cv2

    # A hard-edged paste of a brighter lower face: the seam a renderer without feathering leaves.
    region = np.zeros(img.shape[:2], np.uint8)
    cv2.fillPoly(region, [lower_face_boundary(pts).astype(np.int32)], 1)
    pasted = np.where(region[..., None] == 1, np.clip(img.astype(int) + 25, 0, 255), img).astype(np.uint8)
    colour, gradient, ratio = seam_score(pasted, img, pts)
    assert colour > 20 and gradient > 3 and ratio > 1.2
    # The same change feathered over ~15 px leaves a much smaller jump.
    soft = cv2.GaussianBlur(region.astype(np.float32), (0, 0), 6)[..., None]
    feathered = np.clip(img + 25.0 * soft, 0, 255).astype(np.uint8)
    _, soft_gradient, soft_ratio = seam_score(feathered, img, pts)
    assert soft_gradient < gradient / 2 and soft_ratio < ratio


def test_outside_face_and_sharpness() -> None:
    import cv2

    img, pts = _frame_and_face()
    assert outside_face(img, img, pts) == (100.0, 1.0)
    assert face_mask(pts, img.shape)[200, 200] and not face_mask(pts, img.shape)[5, 5]
    inside_only = img.copy()
    inside_only[190:210, 190:210] = 0
    assert outside_face(inside_only, img, pts)[0] == 100.0
    edges = np.zeros((64, 64), np.uint8)
    edges[::4] = 255
    assert sharpness(cv2.GaussianBlur(edges, (0, 0), 2)) < 0.1 * sharpness(edges)
