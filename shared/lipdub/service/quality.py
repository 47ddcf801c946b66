"""The sync estimate of a job's report: how well the result's mouth follows its audio.

The eval harness's weight-free SyncNet analogue (lipdub.eval): the face mesh tracks the result's mouth
opening frame by frame, and its lagged correlation with the dub audio's speech-band envelope gives an
offset (positive: the video lags the audio), the correlation at that peak, and a confidence (peak minus
the median over ±15 frames of lag). Natural speech sits within about ±2 frames of 0, not exactly at 0.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

from lipdub import FPS
from lipdub.eval.signals import audio_envelope, mouth_opening_signal
from lipdub.eval.sync import estimate_offset
from lipdub.eval.tracks import track_video
from lipdub.media.audio import load_audio
from lipdub.media.probe import probe
from lipdub.media.video import normalize_video


def _number(x: float, digits: int) -> float | None:
    return None if math.isnan(x) else round(x, digits)  # JSON has no NaN: too few face frames → null


def sync_estimate(video: Path, audio: Path) -> dict[str, Any]:
    """Offset (frames and ms, frames of 25 fps), peak correlation and confidence of `video`'s mouth against
    `audio`; a result at the source's own frame rate is measured on a 25-fps copy."""
    info = probe(video)
    if info.video is not None and abs(info.video.fps - FPS) > 0.01:
        with tempfile.TemporaryDirectory(prefix="lipdub-sync-") as tmp:
            retimed = Path(tmp) / "25fps.mp4"
            normalize_video(video, retimed)
            return sync_estimate(retimed, audio)
    track = track_video(video)
    mouth = mouth_opening_signal(track.landmarks, track.valid)
    envelope = audio_envelope(load_audio(audio), track.n_frames)
    sync = estimate_offset(mouth, envelope)
    offset = _number(sync.offset, 2)
    return {"offset_frames": offset, "offset_ms": None if offset is None else round(offset * 1000 / FPS),
            "peak_correlation": _number(sync.peak, 3), "confidence": _number(sync.confidence, 3),
            "frames": sync.frames}
