"""The student: DH_live's Audio2Feature (fbank pairs → MLP → 2-layer LSTM → MLP head), distilled from the teacher.

Input is DH_live's fbank (2 rows per 25-fps frame). The network is causal; its output at step s is trained
against frame s - LOOKAHEAD, so every frame sees 160 ms of future audio. To give exactly one output per frame,
LOOKAHEAD extra steps of padding are fed after the audio ends and the first LOOKAHEAD outputs are dropped.

Two ways to run it, with the same result: `StudentModel.coeffs` (whole files, in chunks with the LSTM state
carried, so memory is constant) and `StudentStream` (40-200 ms pieces in, mouth coefficients out as soon as
their look-ahead has arrived).
"""

from __future__ import annotations

import json
from pathlib import Path

import kaldi_native_fbank as knf
import numpy as np
import torch
from torch import nn

from lipdub import SAMPLE_RATE, SAMPLES_PER_FRAME
from lipdub.audio.features import N_MELS, fbank, fbank_options, lifter, n_video_frames
from lipdub.audio.student_recipe import LOOKAHEAD

HIDDEN = 192
CHUNK_FRAMES = 250  # video frames per LSTM call in one-shot inference (10 s)


class Audio2Feature(nn.Module):
    """[B, 2T, 80] fbank rows → [B, T, K] coefficients, carrying (h, c) of a 2-layer LSTM."""

    feat_mean: torch.Tensor  # buffers (saved with the weights, not trained)
    feat_std: torch.Tensor

    def __init__(self, n_out: int = 8, hidden: int = HIDDEN, dropout: float = 0.0) -> None:
        super().__init__()
        self.n_out = n_out
        self.register_buffer("feat_mean", torch.zeros(2 * N_MELS))
        self.register_buffer("feat_std", torch.ones(2 * N_MELS))
        self.downsample = nn.Sequential(
            nn.Linear(2 * N_MELS, 80), nn.BatchNorm1d(80), nn.LeakyReLU(0.2), nn.Linear(80, 80))
        # Dropout between the LSTM layers acts in training only; inference is DH_live's network unchanged.
        self.lstm = nn.LSTM(80, hidden, num_layers=2, batch_first=True, dropout=dropout)
        self.head = nn.Sequential(
            nn.Linear(hidden, 256), nn.BatchNorm1d(256), nn.LeakyReLU(0.2),
            nn.Linear(256, 256), nn.BatchNorm1d(256), nn.LeakyReLU(0.2), nn.Linear(256, n_out))

    def forward(self, rows: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        b, n2, _ = rows.shape
        t = n2 // 2
        pairs = rows[:, : 2 * t].reshape(b * t, 2 * N_MELS)  # pair-stacking: two 20-ms rows per video frame
        x = self.downsample((pairs - self.feat_mean) / self.feat_std).reshape(b, t, 80)
        y, state = self.lstm(x, state)
        out = self.head(y.reshape(b * t, -1)).reshape(b, t, -1)
        return out, state


def silence_row() -> np.ndarray:
    """The fbank row of digital silence (Kaldi's log floor), fed as padding after the audio ends."""
    return fbank(np.zeros(SAMPLES_PER_FRAME * 4, np.float32))[2]


class StudentModel:
    """Speech → [T, K] normalised mouth coefficients."""

    name = "student"

    def __init__(self, net: Audio2Feature, lookahead: int = LOOKAHEAD, cepstra: int = 0) -> None:
        self.net = net.eval()
        self.lookahead = lookahead
        self.cepstra = cepstra  # the fbank rows' cepstral lifter it was trained with (`features.lifter`; 0 = none)
        self.pad = torch.from_numpy(silence_row())

    @classmethod
    def load(cls, path: Path) -> StudentModel:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        meta = json.loads(blob["meta"])
        net = Audio2Feature(n_out=meta["n_out"], hidden=meta.get("hidden", HIDDEN))
        net.load_state_dict(blob["state"])
        return cls(net, meta["lookahead"], meta.get("cepstra", 0))

    def save(self, path: Path) -> None:
        meta = {"n_out": self.net.n_out, "hidden": self.net.lstm.hidden_size,
                "lookahead": self.lookahead, "cepstra": self.cepstra}
        torch.save({"state": self.net.state_dict(), "meta": json.dumps(meta)}, path)

    @torch.inference_mode()
    def coeffs_from_fbank(self, rows: np.ndarray) -> np.ndarray:
        """[2T, 80] fbank → [T, K], in chunks of CHUNK_FRAMES with the LSTM state carried across chunks."""
        t = len(rows) // 2
        padded = torch.cat([torch.from_numpy(np.ascontiguousarray(lifter(rows[: 2 * t], self.cepstra))),
                            self.pad.expand(2 * self.lookahead, -1)])
        outs, state = [], None
        for lo in range(0, len(padded), 2 * CHUNK_FRAMES):
            out, state = self.net(padded[None, lo: lo + 2 * CHUNK_FRAMES], state)
            outs.append(out[0])
        return torch.cat(outs)[self.lookahead:].numpy()

    def coeffs(self, samples: np.ndarray) -> np.ndarray:
        return self.coeffs_from_fbank(fbank(samples))


class StudentStream:
    """Streaming inference: `push(samples)` → coefficients of the frames now complete; `flush()` → the rest.

    Latency is the look-ahead (LOOKAHEAD frames) plus the fbank window's 25 ms; outputs equal
    `StudentModel.coeffs` on the concatenated audio, one row per 25-fps frame of it.
    """

    def __init__(self, model: StudentModel) -> None:
        self.model = model
        self._fbank = knf.OnlineFbank(fbank_options())
        self._rows_read = 0  # fbank rows taken from the extractor
        self._buffer = np.zeros((0, N_MELS), np.float32)  # rows taken but not yet fed to the network
        self._last_row = model.pad.numpy()[None]
        self._fed = 0  # rows fed (always even)
        self._state: tuple[torch.Tensor, torch.Tensor] | None = None
        self._emitted = 0
        self._samples = 0
        self._k = model.net.n_out

    def _take_ready(self) -> None:
        n = self._fbank.num_frames_ready
        rows = np.array([self._fbank.get_frame(i) for i in range(self._rows_read, n)], np.float32)
        rows = lifter(rows.reshape(-1, N_MELS), self.model.cepstra)
        self._rows_read = n
        if len(rows):
            self._buffer = np.concatenate([self._buffer, rows])
            self._last_row = rows[-1:]

    @torch.inference_mode()
    def _feed(self, rows: np.ndarray, limit: int) -> np.ndarray:
        """Run the network over whole pairs of rows; return outputs past the look-ahead, at most up to `limit`."""
        if len(rows) == 0:
            return np.zeros((0, self._k), np.float32)
        out, self._state = self.model.net(torch.from_numpy(np.ascontiguousarray(rows[None])), self._state)
        first_step = self._fed // 2
        self._fed += len(rows)
        out = out[0].numpy()[max(0, self.model.lookahead - first_step):]
        out = out[: max(0, limit - self._emitted)]
        self._emitted += len(out)
        return out

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Accept a piece of 16-kHz float samples in [-1, 1]; return [n, K] newly completed frames."""
        self._samples += len(samples)
        self._fbank.accept_waveform(SAMPLE_RATE, np.ascontiguousarray(samples, dtype=np.float32))
        self._take_ready()
        # Rows past the frames the audio so far covers may fall beyond the final end: only those before are safe.
        allowed = 2 * n_video_frames(self._samples) - self._fed
        n = min(len(self._buffer), allowed) // 2 * 2
        rows, self._buffer = self._buffer[:n], self._buffer[n:]
        return self._feed(rows, n_video_frames(self._samples))

    def flush(self) -> np.ndarray:
        """End of audio: the remaining frames, so that the total is exactly n_video_frames(all samples)."""
        self._fbank.input_finished()
        self._take_ready()
        total = n_video_frames(self._samples)
        need = max(0, 2 * total - self._fed)
        rows = self._buffer[:need]
        if len(rows) < need:  # as fbank(): the tail is padded by repeating the last row
            rows = np.concatenate([rows, np.repeat(self._last_row, need - len(rows), axis=0)])
        self._buffer = self._buffer[:0]
        pad = np.repeat(self.model.pad.numpy()[None], 2 * self.model.lookahead, axis=0)
        return self._feed(np.concatenate([rows, pad]), total)
