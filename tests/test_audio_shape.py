"""Mouth representation (pose normalisation, PCA basis), augmentation, corpus bookkeeping and the identity split."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.fft import dct, idct
from scipy.spatial.transform import Rotation

from lipdub.audio.augment import speed, stretch_labels
from lipdub.audio.corpus import identity_key
from lipdub.audio.distill import spec_augment
from lipdub.audio.features import lifter, n_video_frames
from lipdub.audio.models import basis
from lipdub.audio.shape import (
    ALIGN_POINTS,
    MOUTH_POINTS,
    MouthBasis,
    canonical_mouth,
    shape_opening,
    similarity,
)


def _face(rng: np.random.Generator) -> np.ndarray:
    return rng.normal(size=(478, 3)).astype(np.float64) * 50 + 200


def test_similarity_recovers_pose_and_scale() -> None:
    rng = np.random.default_rng(0)
    src = rng.normal(size=(20, 3))
    rot = Rotation.from_euler("xyz", [10, -25, 5], degrees=True).as_matrix()
    dst = 2.5 * src @ rot.T + np.array([3.0, -1.0, 7.0])
    s, r, t = similarity(src, dst)
    assert s == pytest.approx(2.5)
    np.testing.assert_allclose(r, rot, atol=1e-9)
    np.testing.assert_allclose(s * src @ r.T + t, dst, atol=1e-9)


def test_canonical_mouth_ignores_head_pose() -> None:
    rng = np.random.default_rng(1)
    face = _face(rng)
    rot = Rotation.from_euler("xyz", [5, 30, -10], degrees=True).as_matrix()
    turned = 0.7 * face @ rot.T + 40.0
    ref = face[ALIGN_POINTS] / 100.0
    both = canonical_mouth(np.stack([face, turned, np.full_like(face, np.nan)]).astype(np.float32), ref)
    np.testing.assert_allclose(both[0], both[1], atol=1e-3)
    assert np.isnan(both[2]).all()


def test_shipped_basis_describes_motion() -> None:
    b = basis()
    assert b.n_components == 8
    assert b.components.shape == (8, len(MOUTH_POINTS) * 3)
    assert 0.8 < float(b.explained.sum()) <= 1.0
    # Zero motion is the average mouth; the resting mouth is more closed than it.
    assert b.opening(np.zeros((1, 8)))[0] > b.rest_opening()


def test_opening_direction_tracks_the_opening() -> None:
    b = basis()
    c = np.random.default_rng(0).standard_normal((2000, 8)).astype(np.float32)  # training range: unit std
    assert np.corrcoef(b.opening(c), c @ b.opening_direction())[0, 1] > 0.99  # measured 0.997


def test_basis_encode_inverts_motion() -> None:
    rng = np.random.default_rng(2)
    template = rng.normal(size=(len(MOUTH_POINTS), 3))
    clips = [template + 0.05 * rng.normal(size=(200, len(MOUTH_POINTS), 3)) for _ in range(3)]
    b = MouthBasis.fit(clips, np.zeros((len(ALIGN_POINTS), 3)), n_components=8)
    coeffs = b.encode(clips[0])
    assert coeffs.shape == (200, 8)
    # Projecting back onto the basis reproduces the part of the motion the 8 components span.
    recon = b.motion(coeffs)
    motion = clips[0] - clips[0].mean(0)
    proj = (motion.reshape(200, -1) @ b.components.T @ b.components).reshape(motion.shape)
    np.testing.assert_allclose(recon, proj, atol=1e-4)
    assert shape_opening(template[None] + recon).shape == (200,)


def test_speed_perturbation_keeps_labels_in_step() -> None:
    x = np.zeros(16000 * 3, np.float32)
    labels = np.linspace(0, 1, n_video_frames(len(x)))[:, None].repeat(8, 1).astype(np.float32)
    fast = speed(x, 1.1)
    assert len(fast) == pytest.approx(len(x) / 1.1, abs=2)
    stretched = stretch_labels(labels, n_video_frames(len(fast)))
    assert stretched.shape == (n_video_frames(len(fast)), 8)
    assert stretched[0, 0] == 0.0 and stretched[-1, 0] == pytest.approx(1.0)


def test_spec_augment_masks_bands_with_the_mean_and_is_off_with_zero_masks() -> None:
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(size=(4, 208, 80)).astype(np.float32) + 5.0)
    fill = torch.full((80,), -1.0)
    before = x.clone()
    assert spec_augment(x, fill, rng, 0, 10, 0, 10) is x
    masked = spec_augment(x, fill, np.random.default_rng(1), 2, 10, 2, 10)
    assert masked.shape == x.shape and torch.equal(x, before)  # the input is left alone
    changed = masked != x
    assert torch.all(masked[changed] == -1.0)
    for i in range(len(x)):
        rows, cols = changed[i].all(1).sum(), changed[i].all(0).sum()
        assert rows <= 20 and cols <= 20  # at most two masks of at most 10 rows / bins each
    assert changed.any()


def test_identity_keys_group_lookalikes_and_labels() -> None:
    assert identity_key("Obama (per filename)") == identity_key("Obama") == "obama"
    assert identity_key("pcavs_Input-00002 (looks like same person as vox2_id5176)") == "vox2_id5176"


def test_held_out_identities_exist_in_corpus(corpus) -> None:
    from lipdub.audio.corpus import talking_clips
    from lipdub.audio.splits import held_out_identities, identity_splits

    clips = talking_clips(corpus)
    held = held_out_identities()
    assert held <= {c.identity for c in clips}
    assert sum(c.identity in held for c in clips) == 12
    splits = identity_splits(clips)
    assert len(splits) == 5 and all(len(s.held_out) == 10 for s in splits)
    assert all(c.audio.is_file() for c in clips)


def test_lifter_keeps_the_spectral_envelope_and_drops_the_harmonics() -> None:
    bins = np.arange(80)
    envelope = -10 + 4 * np.cos(2 * np.pi * bins / 80)  # a slow formant-like shape
    harmonics = 0.8 * np.cos(np.pi * bins * 0.45)  # a ripple every ~4 bins, as pitch harmonics
    rows = np.stack([envelope + harmonics, np.full(80, -15.9)]).astype(np.float32)
    smooth = lifter(rows, 13)
    assert np.abs(smooth[0] - envelope).max() < 0.3 < np.abs(rows[0] - envelope).max()
    np.testing.assert_allclose(smooth[1], rows[1], atol=1e-4)  # the silence padding is unchanged
    assert lifter(rows, 0) is rows
    cep = dct(rows, type=2, norm="ortho", axis=1)
    cep[:, 13:] = 0
    np.testing.assert_allclose(smooth, idct(cep, type=2, norm="ortho", axis=1), atol=1e-4)
