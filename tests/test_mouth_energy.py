import numpy as np
import pytest

from lipdub import SAMPLE_RATE, SAMPLES_PER_FRAME
from lipdub.audio.features import fbank, n_video_frames
from lipdub.audio.mouth import EnergyMouthModel, MouthTrack


@pytest.mark.parametrize("n_samples", [640, 641, 16000, 16000 + 320, 12345])
def test_two_fbank_rows_per_video_frame(n_samples: int) -> None:
    feats = fbank(np.zeros(n_samples, np.float32))
    assert feats.shape == (2 * n_video_frames(n_samples), 80)
    assert n_video_frames(n_samples) == -(-n_samples // SAMPLES_PER_FRAME)


def _bursts(seconds: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    """Voiced-like bursts (harmonics of 150 Hz, 200 ms on / 200 ms off) over faint noise."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    on = (np.floor(t / 0.2) % 2 == 0).astype(np.float32)
    voice = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 12)).astype(np.float32)
    samples = 0.3 * on * voice + 0.002 * rng.standard_normal(t.size).astype(np.float32)
    frame_on = on[::SAMPLES_PER_FRAME][: n_video_frames(t.size)]
    return samples.astype(np.float32), frame_on


def test_energy_model_opens_on_sound_and_closes_in_silence() -> None:
    samples, frame_on = _bursts()
    track = EnergyMouthModel()(fbank(samples))
    assert len(track) == len(frame_on)
    assert np.corrcoef(track.opening, frame_on)[0, 1] > 0.7
    # Away from burst edges (smoothing and the 1-frame lead blur those), silence means a closed mouth.
    off = (frame_on == 0) & (np.roll(frame_on, 1) == 0) & (np.roll(frame_on, -1) == 0)
    assert track.opening[off].mean() < 0.2 * track.opening[frame_on == 1].mean()
    assert track.speech[frame_on == 1].mean() > 0.8


def test_energy_model_ignores_gain() -> None:
    samples, _ = _bursts()
    model = EnergyMouthModel()
    loud, quiet = model(fbank(samples)), model(fbank(samples * 0.05))
    assert np.abs(loud.opening - quiet.opening).max() < 0.05


def test_mouth_track_roundtrip(tmp_path) -> None:
    track = MouthTrack(np.linspace(0, 1, 10, dtype=np.float32), np.arange(10) % 2 == 0)
    track.save(tmp_path / "m.npz")
    back = MouthTrack.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(back.opening, track.opening)
    np.testing.assert_array_equal(back.speech, track.speech)
