"""The shipped audio models: frame counts, streaming = one-shot, chunk borders, silence, encoder identity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lipdub import SAMPLE_RATE, SAMPLES_PER_FRAME
from lipdub.audio.features import fbank, n_video_frames
from lipdub.audio.models import load_model, weights_dir
from lipdub.audio.mouth import MouthTrack
from lipdub.audio.student import CHUNK_FRAMES, Audio2Feature, StudentModel, StudentStream
from lipdub.media.audio import load_audio


@pytest.fixture(scope="module")
def speech(demo_inputs: tuple[Path, Path]) -> np.ndarray:
    return load_audio(demo_inputs[1])


@pytest.fixture(scope="module")
def student() -> StudentModel:
    return StudentModel.load(weights_dir() / "student.pt")


def test_weights_ship_with_the_package() -> None:
    files = {p.name for p in weights_dir().iterdir()}
    assert {"mouth_basis.npz", "teacher_head.npz", "student.pt", "audio_model.json"} <= files


@pytest.mark.parametrize("n_samples", [SAMPLES_PER_FRAME, SAMPLES_PER_FRAME + 1, 16000, 16000 * 3 + 123])
def test_student_gives_one_output_per_frame(student: StudentModel, n_samples: int) -> None:
    x = (np.random.default_rng(n_samples).standard_normal(n_samples) * 0.05).astype(np.float32)
    assert student.coeffs(x).shape == (n_video_frames(n_samples), 8)


def _assert_streaming_equals_one_shot(student: StudentModel, speech: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(1)
    speech = speech[: SAMPLE_RATE * 5 + 77]  # not a whole number of frames
    whole = student.coeffs(speech)
    stream, pieces, i = StudentStream(student), [], 0
    while i < len(speech):
        n = int(rng.integers(SAMPLE_RATE * 40 // 1000, SAMPLE_RATE * 200 // 1000 + 1))  # 40-200 ms
        pieces.append(stream.push(speech[i: i + n]))
        i += n
    pieces.append(stream.flush())
    streamed = np.concatenate(pieces)
    assert streamed.shape == whole.shape == (n_video_frames(len(speech)), 8)
    np.testing.assert_allclose(streamed, whole, atol=1e-4)
    # Bounded latency: after the first second, every push has returned frames up to ~look-ahead behind.
    assert sum(len(p) for p in pieces[:-1]) >= len(whole) - 10
    return whole


def test_streaming_equals_one_shot(student: StudentModel, speech: np.ndarray) -> None:
    _assert_streaming_equals_one_shot(student, speech)


def test_a_liftered_student_keeps_its_lifter_and_streams_as_one_shot(tmp_path: Path, speech: np.ndarray) -> None:
    torch.manual_seed(0)
    StudentModel(Audio2Feature(n_out=8), cepstra=13).save(tmp_path / "student.pt")
    liftered = StudentModel.load(tmp_path / "student.pt")
    assert liftered.cepstra == 13
    out = _assert_streaming_equals_one_shot(liftered, speech)
    plain = StudentModel(liftered.net, liftered.lookahead, cepstra=0).coeffs(speech[: SAMPLE_RATE * 5 + 77])
    assert np.abs(out - plain).max() > 1e-3  # the lifter really reaches the network


def test_chunked_inference_has_no_seams(student: StudentModel, speech: np.ndarray) -> None:
    x = np.tile(speech, int(np.ceil(2.5 * CHUNK_FRAMES * SAMPLES_PER_FRAME / len(speech))))
    rows = fbank(x)
    chunked = student.coeffs_from_fbank(rows)
    with torch.inference_mode():
        pad = student.pad.expand(2 * student.lookahead, -1)
        full, _ = student.net(torch.cat([torch.from_numpy(rows), pad])[None])
    np.testing.assert_allclose(chunked, full[0, student.lookahead:].numpy(), atol=1e-4)


@pytest.mark.parametrize("name", ["student", "teacher"])
def test_learned_models_open_on_speech_and_rest_in_silence(name: str, speech: np.ndarray) -> None:
    silence = np.zeros(SAMPLE_RATE, np.float32)
    x = np.concatenate([silence, speech, silence])
    track = load_model(name)(x)  # type: ignore[arg-type]
    n = n_video_frames(len(x))
    assert len(track) == n and track.coeffs is not None and track.lips is not None
    assert track.coeffs.shape == (n, 8) and track.lips.shape[0] == n
    quiet = slice(0, 15)  # the first 0.6 s: digital silence (the mouth may start moving 200-240 ms early)
    assert not track.speech[quiet].any()
    assert track.opening[quiet].max() < 0.02
    voiced = track.opening[track.speech]
    assert voiced.mean() > 0.03 and np.percentile(voiced, 90) > 2 * max(track.opening[quiet].mean(), 1e-3)


def test_teacher_refuses_another_encoder() -> None:
    from lipdub.audio.teacher import EncoderIdentity, RidgeHead, TeacherModel, WhisperEncoder

    head = RidgeHead.load(weights_dir() / "teacher_head.npz")
    head.encoder = EncoderIdentity("other", "0" * 64, head.encoder.dim)
    with pytest.raises(ValueError, match="encoder"):
        TeacherModel(head, WhisperEncoder())


def test_teacher_windows_cover_every_frame(speech: np.ndarray) -> None:
    """Long audio goes through several 4-s windows; the output has one row per frame, none dropped."""
    from lipdub.audio.models import _teacher

    teacher = _teacher(None, 1)
    x = np.concatenate([speech, speech])[: SAMPLE_RATE * 9 + 17]
    coeffs = teacher.coeffs(x)
    assert coeffs.shape == (n_video_frames(len(x)), 8)
    assert np.isfinite(coeffs).all()


def test_mouth_track_round_trip(tmp_path: Path, speech: np.ndarray) -> None:
    track = load_model("student")(speech[: SAMPLE_RATE * 2])
    track.save(tmp_path / "mouth.npz")
    back = MouthTrack.load(tmp_path / "mouth.npz")
    assert back.model == "student"
    np.testing.assert_array_equal(back.opening, track.opening)
    np.testing.assert_array_equal(back.coeffs, track.coeffs)
    np.testing.assert_array_equal(back.lips, track.lips)


def test_the_card_keeps_the_per_clip_rows_its_split0_summary_comes_from() -> None:
    from lipdub.audio.recipe import summarise_rows
    from lipdub.audio.splits import held_out_identities

    card = json.loads((weights_dir() / "audio_model.json").read_text())
    rows = card["metrics"]["split0_clips"]
    assert len(rows) == card["metrics"]["split0"]["teacher"]["n"] > 0
    assert set(card["data"]["held_out_identities"]) == held_out_identities()
    for name, summary in summarise_rows(rows).items():  # rows are kept to 3 decimals
        for stat in ("median", "q25", "q75"):
            assert summary[stat] == pytest.approx(card["metrics"]["split0"][name][stat], abs=2e-3), (name, stat)
