"""The sync estimate of a job's report: how well the result's mouth follows its audio.

The eval harness's weight-free SyncNet analogue (lipdub.eval): the face mesh tracks the result's mouth
opening frame by frame, and its lagged correlation with the dub audio's speech-band envelope gives an
offset (positive: the video lags the audio), the correlation at that peak, and a confidence (peak minus
the median over ±15 frames of lag). Natural speech sits within about ±2 frames of 0, not exactly at 0.
The report's `frames` says how many frames it was measured on (SYNC_SECONDS at most).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from lipdub import FPS
from lipdub.eval.signals import audio_envelope, mouth_opening_signal
from lipdub.eval.sync import estimate_offset
from lipdub.face.mesh import FaceMesh
from lipdub.media.audio import load_audio
from lipdub.media.probe import probe
from lipdub.media.video import FrameReader, RetimedReader, count_frames


def _number(x: float, digits: int) -> float | None:
    return None if math.isnan(x) else round(x, digits)  # JSON has no NaN: too few face frames → null


# The estimate tracks at most this many seconds from the middle of the result: its cost (the face mesh, ~12 ms
# a frame on 2 cores) stays bounded whatever the dub's length. Tracking all of a 60-s, 30-fps result
# (re-encoded to 25 fps first) took 26.5 s of a 68-s service job, against 35.5 s of rendering.
SYNC_SECONDS = 20.0


def sync_estimate(video: Path, audio: Path, seconds: float = SYNC_SECONDS) -> dict[str, Any]:
    """Offset (frames and ms, frames of 25 fps), peak correlation and confidence of `video`'s mouth against
    `audio`, over the middle `seconds` of the result; a result at the source's own frame rate is read as its
    25-fps view (the frame nearest in time, as prep reads a source), without re-encoding it."""
    info = probe(video)
    if info.video is None:
        raise ValueError(f"{video.name}: no video stream")
    v = info.video
    native = count_frames(video)
    frames = FrameReader(video, v.width, v.height, native, fps=v.fps)
    retimed = abs(v.fps - FPS) > 0.01
    n = max(1, int(native * FPS / v.fps)) if retimed else native
    reader = RetimedReader(frames, n) if retimed else frames
    span = min(n, round(seconds * FPS))
    first = (n - span) // 2
    landmarks = np.zeros((span, 478, 3), np.float32)
    valid = np.zeros(span, bool)
    with FaceMesh() as mesh, reader:
        for i in range(span):
            faces = mesh(reader[first + i])
            if faces:
                landmarks[i], valid[i] = faces[0], True
    mouth = mouth_opening_signal(landmarks, valid)
    envelope = audio_envelope(load_audio(audio), n)[first:first + span]
    sync = estimate_offset(mouth, envelope)
    offset = _number(sync.offset, 2)
    return {"offset_frames": offset, "offset_ms": None if offset is None else round(offset * 1000 / FPS),
            "peak_correlation": _number(sync.peak, 3), "confidence": _number(sync.confidence, 3),
            "frames": sync.frames}
