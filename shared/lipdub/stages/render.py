"""render: re-draw the mouth of every output frame; faceless frames pass through unchanged."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from lipdub.audio.mouth import MouthTrack
from lipdub.config import Settings
from lipdub.device import resolve_device
from lipdub.media.video import VideoWriter
from lipdub.progress import SILENT, Progress
from lipdub.render import make_renderer
from lipdub.stages.prep import SourceTrack
from lipdub.timeline import Timeline


class Renderer(Protocol):
    name: str

    def __call__(self, frame: np.ndarray, points: np.ndarray, opening: float) -> np.ndarray: ...


def render_video(track: SourceTrack, mouth: MouthTrack, timeline: Timeline, out: Path, settings: Settings,
                 frames: range | None = None, renderer: Renderer | None = None,
                 progress: Progress = SILENT) -> int:
    """Encode output frames `frames` (default: all) to a silent H.264 file; returns frames passed through."""
    frames = frames if frames is not None else range(timeline.n_out)
    renderer = renderer or make_renderer(track, settings, resolve_device(settings.device))
    passed = 0
    s = track.summary
    with track.reader() as reader, VideoWriter(out, s.width, s.height, settings.video_crf,
                                               settings.video_preset) as writer, \
            progress.stage("render", len(frames)) as advance:
        for t in frames:
            i = timeline.source_index(t)
            frame = reader[i]
            if track.valid[i]:
                a = timeline.audio_index(t)
                motion = float(mouth.opening[a]) if a is not None else 0.0  # at rest past the dub's end
                frame = renderer(frame, track.landmarks[i], s.rest_opening + motion)
            else:
                passed += 1
            writer.write(frame)
            advance(1)
    return passed
