"""Distillation bookkeeping: teacher labels with rested silence, and a seeded, step-counted student training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lipdub import SAMPLE_RATE, SAMPLES_PER_FRAME
from lipdub.audio.distill import (
    Source,
    TrainConfig,
    Utterance,
    build_dataset,
    distill,
    label_sources,
    window_correlation,
)
from lipdub.audio.features import fbank, lifter, n_video_frames
from lipdub.audio.student import Audio2Feature


def last_weight(net: Audio2Feature) -> torch.Tensor:
    layer = net.head[-1]
    assert isinstance(layer, torch.nn.Linear)
    return layer.weight


class ConstantTeacher:
    name = "constant"

    def coeffs(self, samples: np.ndarray) -> np.ndarray:
        return np.ones((n_video_frames(len(samples)), 3), np.float32)


def test_label_sources_rests_inserted_silence_and_leaves_real_audio_alone() -> None:
    x = np.zeros(40 * SAMPLES_PER_FRAME, np.float32)
    rest = np.zeros(3, np.float32)
    synthetic, real = label_sources([Utterance("tts", x, "synthetic", pre=5, post=6), Utterance("clip", x, "corpus")],
                                    ConstantTeacher(), rest)
    assert np.all(synthetic.labels[:5] == 0) and np.all(synthetic.labels[-6:] == 0)
    assert np.all(synthetic.labels[12:28] == 1)  # the eased joins are short
    assert np.all(real.labels == 1)  # no silence inserted: the teacher's labels untouched, ends included


def _sources(seed: int) -> list[Source]:
    """Eight 2-s noise bursts whose loudness follows a sine, labelled with that envelope."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(8):
        t = np.arange(2 * SAMPLE_RATE) / SAMPLE_RATE
        env = 0.5 + 0.5 * np.sin(2 * np.pi * (1 + i / 4) * t)
        x = (0.1 * env * rng.standard_normal(len(t))).astype(np.float32)
        frames = env[::SAMPLES_PER_FRAME][: n_video_frames(len(x))]
        out.append(Source(f"u{i}", x, np.stack([frames, -frames], 1).astype(np.float32),
                          "speech" if i % 2 else "synthetic"))
    return out


def test_the_student_trains_on_the_rows_it_will_hear() -> None:
    """With a lifter the training rows are liftered exactly as `StudentModel` lifters its input."""
    src = _sources(0)[0]
    plain, liftered = build_dataset([src], 0, seed=0).rows[0], build_dataset([src], 0, seed=0, cepstra=13).rows[0]
    np.testing.assert_array_equal(plain, fbank(src.samples)[: len(plain)])
    np.testing.assert_allclose(liftered, lifter(plain, 13), atol=1e-5)
    assert np.abs(liftered - plain).max() > 0.1


def test_distill_runs_the_step_count_and_is_deterministic_with_a_seed() -> None:
    cfg = TrainConfig(max_steps=6, batch=4, window=20, eval_every=3, seed=3, time_masks=1, freq_masks=1)
    weights = np.ones(2, np.float32)
    net_a, info_a = distill(_sources(0), weights, cfg, n_augmented=1)
    net_b, _ = distill(_sources(0), weights, cfg, n_augmented=1)
    assert info_a["steps"] == 6 and info_a["best_step"] in (3, 6)
    assert info_a["train_frames"] > 0 and info_a["dev_frames"] > 0
    for (name, a), (_, b) in zip(net_a.state_dict().items(), net_b.state_dict().items()):
        assert torch.equal(a, b), name
    net_c, _ = distill(_sources(0), weights, TrainConfig(**{**cfg.__dict__, "seed": 4}), n_augmented=1)
    assert not torch.equal(last_weight(net_a), last_weight(net_c))


def _leading_sources(lead: int) -> list[Source]:
    """Noise switched on and off every 4-11 frames, labelled with the loudness `lead` frames later: only a student
    that hears that far ahead can know the label."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(8):
        n = 3 * SAMPLE_RATE
        levels = np.repeat(rng.choice([0.02, 1.0], 40), rng.integers(4, 12, 40))[: n // SAMPLES_PER_FRAME + 20]
        x = (0.1 * np.repeat(levels, SAMPLES_PER_FRAME)[:n] * rng.standard_normal(n)).astype(np.float32)
        label = levels[np.minimum(np.arange(n_video_frames(n)) + lead, len(levels) - 1)]
        out.append(Source(f"u{i}", x, np.stack([label, -label], 1).astype(np.float32), "synthetic"))
    return out


def test_the_look_ahead_setting_lets_the_student_hear_the_future_it_is_trained_on() -> None:
    def best_dev_loss(lookahead: int) -> float:
        cfg = TrainConfig(max_steps=300, batch=8, window=25, warmup=2, eval_every=50, seed=0, lookahead=lookahead)
        return distill(_leading_sources(4), np.ones(2, np.float32), cfg, n_augmented=0)[1]["best_dev_loss"]

    # Measured: 0.25 without look-ahead against 0.12 with 6 frames (seed 1: 0.19 / 0.03).
    assert best_dev_loss(6) < 0.6 * best_dev_loss(0)


def test_window_correlation_is_pearson_and_leaves_still_windows_out() -> None:
    rng = np.random.default_rng(0)
    target = rng.standard_normal((3, 50))
    target[2] = 0.3  # a silent window: the mouth rests, any prediction is as good
    pred = target + rng.standard_normal((3, 50))
    r = window_correlation(torch.from_numpy(pred), torch.from_numpy(target)).numpy()
    for i in range(2):
        assert r[i] == pytest.approx(np.corrcoef(pred[i], target[i])[0, 1], abs=1e-6)
    assert r[2] == 1.0  # no loss from it


def test_the_opening_correlation_loss_trains_on_the_opening_direction() -> None:
    cfg = TrainConfig(max_steps=6, batch=4, window=20, eval_every=3, seed=3, opening_corr=1.0)
    with pytest.raises(ValueError, match="opening direction"):
        distill(_sources(0), np.ones(2, np.float32), cfg, n_augmented=1)
    weights = np.ones(2, np.float32)
    with_corr, _ = distill(_sources(0), weights, cfg, n_augmented=1, opening=np.array([1.0, 0.0]))
    plain = TrainConfig(**{**cfg.__dict__, "opening_corr": 0.0})
    without, _ = distill(_sources(0), weights, plain, n_augmented=1)
    assert not torch.equal(last_weight(with_corr), last_weight(without))


def test_distill_student_follows_the_recipe_it_is_given(tmp_path) -> None:
    """The one path `lipdub train audio` and `bench.eval_audio_splits` share: clip audio + espeak-ng utterances,
    labelled by the teacher, distilled with the recipe's steps, look-ahead, SpecAugment and lifter."""
    from lipdub.audio.models import basis as shipped_basis
    from lipdub.audio.recipe import distill_student
    from lipdub.audio.student_recipe import StudentRecipe

    basis = shipped_basis()
    k = basis.n_components

    class Teacher:
        name = "envelope"

        def coeffs(self, samples: np.ndarray) -> np.ndarray:
            n = n_video_frames(len(samples))
            env = np.abs(np.pad(samples, (0, n * SAMPLES_PER_FRAME - len(samples)))).reshape(n, SAMPLES_PER_FRAME)
            return np.repeat(env.mean(1, keepdims=True), k, 1).astype(np.float32)

    (tmp_path / "manifest.csv").write_text("folder,file\ntalking,a.mp4\n")  # no speech/ clips
    clips = [(s.name, s.samples) for s in _sources(0)]
    recipe = StudentRecipe(steps=4, synthetic=3, augmented=1, spec_masks=1, lookahead=6, cepstra=13)
    student, sources, info = distill_student(tmp_path, clips, Teacher(), basis, recipe, seed=0, threads=1)
    assert [s.group for s in sources] == ["corpus"] * len(clips) + ["synthetic"] * 3
    assert all(len(s.labels) == n_video_frames(len(s.samples)) for s in sources)
    assert info["steps"] == 4 and student.lookahead == 6 and student.cepstra == 13
    assert info["spec_augment"]["time_masks"] == info["spec_augment"]["freq_masks"] == 1
    out = student.coeffs(clips[0][1])
    assert out.shape == (n_video_frames(len(clips[0][1])), k)
