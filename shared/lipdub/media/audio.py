"""Audio decoding: any container, rate or channel count ffmpeg reads → float32 mono in [-1, 1]."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from lipdub import SAMPLE_RATE
from lipdub.errors import ErrorCode
from lipdub.media.ffmpeg import run_ffmpeg
from lipdub.media.probe import probe

# A mix this much quieter than its louder channel has cancelled itself (channels in opposite phase) or
# halved a voice panned to one side: the louder channel is then the better mono signal.
MIX_LOSS = 0.7


def load_audio(path: Path, sample_rate: int = SAMPLE_RATE, seconds: float | None = None) -> np.ndarray:
    """Mono for the audio models: a mono source as it is; for more channels, the mix of their stereo
    downmix, or its louder channel where the mix loses the voice. The dub's own track is muxed unchanged;
    this is only what the models hear."""
    info = probe(path)
    # A mono source is decoded as mono: ffmpeg's upmix to stereo would lower its level by 3 dB.
    channels = 2 if info.audio is not None and info.audio.channels > 1 else 1
    limit = ["-t", f"{seconds:.3f}"] if seconds is not None else []  # only the first `seconds`
    result = run_ffmpeg([*limit, "-i", str(path), "-map", "0:a:0", "-ac", str(channels), "-ar", str(sample_rate),
                         "-f", "s16le", "pipe:1"], code=ErrorCode.input_unreadable,
                        what=f"{path.name}: could not decode the audio")
    # int16 / 32768: the scaling DH_live's fbank features are defined with (samples in [-1, 1]).
    samples = np.frombuffer(result.stdout, np.int16).reshape(-1, channels).astype(np.float32) / 32768.0
    mix = samples.mean(1)
    if channels == 1 or not len(mix):
        return mix
    level = np.sqrt(np.mean(samples**2, axis=0))
    if np.sqrt(np.mean(mix**2)) < MIX_LOSS * level.max():
        return np.ascontiguousarray(samples[:, int(np.argmax(level))])
    return mix


def save_wav(path: Path, samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).astype(np.int16)
    tmp = path.with_suffix(".tmp.wav")
    with wave.open(str(tmp), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm.tobytes())
    tmp.replace(path)
