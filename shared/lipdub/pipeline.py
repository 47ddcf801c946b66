"""The data path, and the only place that knows the stage order: probe → prep → audio → render → mux.

`dub()` runs every stage in-process on local files (the embedded mode of `lipdub dub`). The distributed
service chains the very same stage functions as Celery tasks.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from lipdub.config import Device, Settings, SyncMode
from lipdub.device import resolve_device
from lipdub.progress import SILENT, Progress
from lipdub.stages.audio import analyze_audio
from lipdub.stages.mux import mux
from lipdub.stages.prep import prepare_source
from lipdub.stages.probe import probe_inputs
from lipdub.stages.render import render_video
from lipdub.timeline import Timeline

STAGES = ("probe", "prep", "audio", "render", "mux")


@dataclass(frozen=True)
class DubResult:
    output: Path
    frames: int
    passed_through: int
    face_coverage: float
    device: str


def dub(video: Path, audio: Path, out: Path, settings: Settings, *, sync_mode: SyncMode | None = None,
        device: Device | None = None, progress: Progress = SILENT, workdir: Path | None = None) -> DubResult:
    mode = sync_mode or settings.sync_mode
    torch_device = resolve_device(device or settings.device)
    probe_inputs(video, audio, settings)
    with tempfile.TemporaryDirectory(prefix="lipdub-") as scratch:
        work = workdir or Path(scratch)
        track = prepare_source(video, work / "prep", settings, progress)
        mouth = analyze_audio(audio, work / "audio", settings, progress)
        timeline = Timeline(track.summary.n_frames, len(mouth), mode)
        part = work / "render" / "part-0000.mp4"
        part.parent.mkdir(parents=True, exist_ok=True)
        passed = render_video(track, mouth, timeline, part, settings, progress=progress)
        mux([part], audio, timeline.n_out, out, settings, progress)
    return DubResult(out, timeline.n_out, passed, track.summary.face_coverage, torch_device)
