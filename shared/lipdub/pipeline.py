"""The data path, and the only place that knows the stage order: probe → prep → audio → render → mux.

`dub()` runs every stage in-process on local files (the embedded mode of `lipdub dub`). The distributed
service chains the very same stage functions as Celery tasks.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

from lipdub import FPS
from lipdub.audio.analyze import analyze_audio
from lipdub.config import Device, FrameRate, Settings, SyncMode
from lipdub.device import resolve_device
from lipdub.media.inputs import probe_inputs
from lipdub.media.mux import mux
from lipdub.prep.cache import prepare_cached
from lipdub.prep.shots import shot_spans
from lipdub.prep.track import output_rate
from lipdub.prep.tracking import Target
from lipdub.progress import SILENT, Progress
from lipdub.render.video import render_video
from lipdub.timeline import Timeline, frames_at

if TYPE_CHECKING:  # celery is imported only where a chain is sent (the embedded mode never needs it)
    from celery.canvas import Signature

STAGES = ("probe", "prep", "audio", "render", "mux")


@dataclass(frozen=True)
class DubResult:
    output: Path
    frames: int
    passed_through: int  # frames kept as the source's: no usable face, or outside the dub ranges
    outside_ranges: int
    face_coverage: float
    other_person_s: list[tuple[float, float]]  # output spans (s) showing a face likely another person's
    device: str
    face_choice: str = "auto"  # auto | user | speaker (TrackSummary.target_source)
    faces: int = 1
    rate: str = str(FPS)  # the output's frame rate ("25", or the source's own such as "30000/1001")
    flags: tuple[str, ...] = ()  # the prep summary's (TrackSummary.flags)
    other_speaker_s: list[tuple[float, float]] = field(default_factory=list)  # output spans (s) where another
    # face talks in the source (TrackSummary.other_speaker): its lines are dubbed onto the chosen face

    @property
    def fps(self) -> float:
        return float(Fraction(self.rate))


def dub(video: Path, audio: Path, out: Path, settings: Settings, *, sync_mode: SyncMode | None = None,
        device: Device | None = None, progress: Progress = SILENT, workdir: Path | None = None,
        target: Target | None = None, ranges: tuple[tuple[float, float], ...] = (),
        frame_rate: FrameRate | None = None) -> DubResult:
    """Dub `video` with `audio` into `out`, all in this process; `target` picks the face when the video
    shows several (default: the largest, most central, most persistent one); `ranges` (seconds of the
    output, `timeline.dub_ranges`) limit the re-animation to those stretches; `frame_rate` "source" keeps
    the source's own frame rate, "25" re-times the output to 25 fps."""
    mode = sync_mode or settings.sync_mode
    torch_device = resolve_device(device or settings.device)
    # The stages read the device from settings: the command-line choice must reach every model.
    settings = settings.model_copy(update={"device": torch_device})
    probe_inputs(video, audio, settings)
    with tempfile.TemporaryDirectory(prefix="lipdub-") as scratch:
        work = workdir or Path(scratch)
        track = prepare_cached(video, settings, progress, target)  # once per source bytes, under data_dir
        mouth = analyze_audio(audio, work / "audio", settings, progress)
        rate = output_rate(track.summary.native_rate, frame_rate or settings.frame_rate)
        timeline = Timeline(track.summary.frames_at(rate), frames_at(len(mouth), rate), mode, ranges, rate)
        part = work / "render" / "part-0000.mp4"
        part.parent.mkdir(parents=True, exist_ok=True)
        passed = render_video(track, mouth, timeline, part, settings, progress=progress)
        mux([part], audio, timeline.n_out, out, settings, progress, rate)
    s = track.summary
    others = sorted(span for shot in shot_spans(s.cuts, s.n_frames, s.shot_person_distance) if shot.other_person
                    for span in timeline.source_spans_s(shot.start, shot.end))
    talking = sorted(span for start, end in s.other_speaker for span in timeline.source_spans_s(start, end))
    return DubResult(out, timeline.n_out, passed, timeline.frames_outside_ranges(), s.face_coverage, others,
                     torch_device, s.target_source, s.n_faces, rate, tuple(s.flags), talking)


# --- Distributed mode: the same stages as Celery tasks (lipdub.service.celery_app routes them to queues).
# Every task takes ids only and reads/writes deterministic storage keys; workers live in services/.
#   probe → (prep ∥ audio) → plan → render chunk 0..n-1 (in parallel) → mux → finalize


def render_chunks(n_frames: int, chunk_seconds: float, fps: float = FPS) -> list[range]:
    """Split the output timeline into render chunks, so a lost worker redoes one chunk, not the job."""
    size = max(1, round(chunk_seconds * fps))
    return [range(start, min(start + size, n_frames)) for start in range(0, n_frames, size)]


def start_job(job_id: str, priority: int | None = None) -> None:
    """Queue a job's first stages; `dub.plan` continues with `render_chain` once the frame count is known."""
    from celery import chain, group

    chain(_step("probe", job_id, priority=priority),
          group(_step("prep", job_id, priority=priority), _step("audio", job_id, priority=priority)),
          _step("plan", job_id, priority=priority)).apply_async()


def start_render(job_id: str, n_chunks: int, priority: int | None = None) -> None:
    """Queue the render chunks in parallel, then mux (once every chunk is stored), then finalize."""
    from celery import chain, chord

    chain(chord([_step("render", job_id, i, priority=priority) for i in range(n_chunks)],
                _step("mux", job_id, priority=priority)),
          _step("finalize", job_id, priority=priority)).apply_async()


def _step(stage: str, job_id: str, *args: int, priority: int | None = None) -> Signature:
    from lipdub.service.celery_app import app

    options = {} if priority is None else {"priority": priority}
    return app.signature(f"dub.{stage}", args=(job_id, *args), immutable=True, **options)
