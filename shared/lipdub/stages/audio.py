"""audio: dub audio → one target mouth shape per 25-fps frame, from the model chosen by settings.audio_model."""

from __future__ import annotations

from pathlib import Path

from lipdub import FPS
from lipdub.audio.models import load_model
from lipdub.audio.mouth import MouthTrack
from lipdub.config import Settings
from lipdub.errors import ErrorCode, InputError
from lipdub.media.audio import load_audio
from lipdub.progress import SILENT, Progress


def analyze_audio(audio: Path, out_dir: Path, settings: Settings, progress: Progress = SILENT) -> MouthTrack:
    out_dir.mkdir(parents=True, exist_ok=True)
    samples = load_audio(audio)
    if samples.size == 0:
        raise InputError(ErrorCode.empty_input, f"{audio.name}: the audio has no samples")
    model = load_model(settings.audio_model, settings.audio_encoder, settings.audio_threads)
    with progress.stage("audio", 1) as advance:
        track = model(samples)
        advance(1)
    voiced = float(track.speech.sum()) / FPS
    if voiced < settings.min_speech_seconds:
        raise InputError(ErrorCode.no_speech,
                         f"{audio.name}: no speech found ({voiced:.2f} s of voice activity)")
    track.save(out_dir / "mouth.npz")
    return track
