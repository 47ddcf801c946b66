"""Validation of the sync estimator on real speech: a known audio shift must be recovered (§3.4 c)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from lipdub import SAMPLES_PER_FRAME
from lipdub.eval.signals import audio_envelope, mouth_opening_signal
from lipdub.eval.sync import estimate_offset
from lipdub.eval.tracks import load_wav, prepare_clip, track_video

# Tier A (mouth-vs-speech check passed), its own soundtrack, one frontal news anchor, 25 fps; not an
# evaluation-set identity. The first 10 s are used.
CLIP = "sstzal_DFRF__cnn2_25fps.mp4"

pytestmark = pytest.mark.corpus


@pytest.fixture(scope="module")
def real_clip(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, np.ndarray]:
    rows = {r["file"]: r for r in csv.DictReader((corpus / "manifest.csv").open())}
    row = rows[CLIP]
    assert row["tier"] == "A" and row["has_audio"] == "yes" and row["kind"] == "talking_video"
    clip, wav = prepare_clip(corpus / row["folder"] / CLIP, tmp_path_factory.mktemp("cnn2"), 10.0)
    track = track_video(clip)
    assert track.valid.mean() > 0.95
    return mouth_opening_signal(track.landmarks, track.valid), load_wav(wav)


def _delayed(samples: np.ndarray, frames: int) -> np.ndarray:
    """The audio played `frames` video frames later (negative: earlier), same length."""
    k = abs(frames) * SAMPLES_PER_FRAME
    pad = np.zeros(k, samples.dtype)
    return np.concatenate([pad, samples[:-k]]) if frames > 0 else np.concatenate([samples[k:], pad])


@pytest.mark.parametrize("shift", [-5, -2, -1, 1, 2, 5])
def test_estimator_recovers_a_shift_of_real_audio(real_clip: tuple[np.ndarray, np.ndarray],
                                                  shift: int) -> None:
    mouth, samples = real_clip
    base = estimate_offset(mouth, audio_envelope(samples, len(mouth)))
    assert base.peak > 0.3 and base.confidence > 0.3  # the clip really is in sync with its audio
    moved = estimate_offset(mouth, audio_envelope(_delayed(samples, shift), len(mouth)))
    # Delaying the sound by s frames makes the mouth lead it by s more: the offset drops by s.
    assert moved.offset_frames - base.offset_frames == -shift
    assert moved.offset - base.offset == pytest.approx(-shift, abs=0.5)
    assert moved.window_offset - base.window_offset == pytest.approx(-shift, abs=0.5)
