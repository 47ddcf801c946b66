"""Audio decoding: any container, rate or channel count ffmpeg reads → float32 mono in [-1, 1]."""

from __future__ import annotations

import subprocess
import wave
from pathlib import Path

import numpy as np

from lipdub import SAMPLE_RATE
from lipdub.errors import ErrorCode, InputError


def load_audio(path: Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    cmd = ["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:a:0", "-ac", "1", "-ar", str(sample_rate),
           "-f", "s16le", "pipe:1"]
    result = subprocess.run(cmd, capture_output=True)
    if result.returncode != 0:
        reason = result.stderr.decode(errors="replace").strip()[-300:]
        raise InputError(ErrorCode.input_unreadable, f"{path.name}: could not decode the audio ({reason})")
    # int16 / 32768: the scaling DH_live's fbank features are defined with (samples in [-1, 1]).
    return np.frombuffer(result.stdout, np.int16).astype(np.float32) / 32768.0


def save_wav(path: Path, samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).astype(np.int16)
    tmp = path.with_suffix(".tmp.wav")
    with wave.open(str(tmp), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm.tobytes())
    tmp.replace(path)
