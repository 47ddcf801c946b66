"""probe: check both inputs with ffprobe before any heavy work."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lipdub.config import Settings
from lipdub.errors import ErrorCode, InputError
from lipdub.media.probe import MediaInfo, probe


@dataclass(frozen=True)
class Inputs:
    video: MediaInfo
    audio: MediaInfo


def probe_inputs(video: Path, audio: Path, settings: Settings) -> Inputs:
    v, a = probe(video), probe(audio)
    if v.video is None or v.video.width == 0:
        raise InputError(ErrorCode.no_video_stream, f"{video.name}: has no video stream")
    if v.video.duration <= 0 and v.duration <= 0:
        raise InputError(ErrorCode.empty_input, f"{video.name}: the video has zero length")
    if a.audio is None:
        raise InputError(ErrorCode.no_audio_stream, f"{audio.name}: has no audio stream")
    if a.audio.duration <= 0 and a.duration <= 0:
        raise InputError(ErrorCode.empty_input, f"{audio.name}: the audio has zero length")
    if max(v.video.duration, v.duration) > settings.max_video_seconds:
        raise InputError(ErrorCode.input_too_long,
                         f"{video.name}: {v.duration:.0f} s is longer than the {settings.max_video_seconds:.0f} s limit")
    if max(a.audio.duration, a.duration) > settings.max_audio_seconds:
        raise InputError(ErrorCode.input_too_long,
                         f"{audio.name}: {a.duration:.0f} s is longer than the {settings.max_audio_seconds:.0f} s limit")
    return Inputs(v, a)
