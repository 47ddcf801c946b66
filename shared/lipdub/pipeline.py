"""The embedded data path: probe → prep → audio → render → mux, in-process on local files (`lipdub dub`).

The distributed service runs the very same stage functions as Celery tasks, chained by
lipdub.service.chains in the same order.
"""

from __future__ import annotations

import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from lipdub import FPS
from lipdub.audio.analyze import analyze_audio
from lipdub.audio.mouth import MouthTrack
from lipdub.config import Settings
from lipdub.device import resolve_device
from lipdub.jobs import JobOptions
from lipdub.media.inputs import probe_inputs
from lipdub.media.mux import mux
from lipdub.plan import plan, report
from lipdub.prep.cache import prepare_cached
from lipdub.progress import SILENT, Progress
from lipdub.render.video import render_video


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
    unmatched: int = 0  # frames drawn without a mouth of the target's shape (the exemplar renderer)

    @property
    def fps(self) -> float:
        return float(Fraction(self.rate))


def dub(video: Path, audio: Path, out: Path, settings: Settings, options: JobOptions | None = None, *,
        progress: Progress = SILENT, workdir: Path | None = None) -> DubResult:
    """Dub `video` with `audio` into `out`, all in this process, as `options` say (default: JobOptions
    with `settings`' defaults), on `settings.device`."""
    options = options or JobOptions.under(settings)
    probe_inputs(video, audio, settings)
    with tempfile.TemporaryDirectory(prefix="lipdub-") as scratch, \
            ThreadPoolExecutor(1, thread_name_prefix="audio") as beside:
        work = workdir or Path(scratch)
        # Prep (MediaPipe, ffmpeg) needs neither torch nor the audio: the device (torch's import, 2 s) and the
        # audio model run on a second thread meanwhile, as the service runs them on other workers.
        heard = beside.submit(listen, audio, work / "audio", settings, progress)
        track = prepare_cached(video, settings, progress, options.target)  # once per source, under data_dir
        torch_device, mouth = heard.result()
        # The stages read the device from settings: "auto" resolved once, so every model runs on the same one.
        settings = settings.model_copy(update={"device": torch_device})
        job = plan(options, track.summary, len(mouth), settings.chunk_seconds)
        part = work / "render" / "part-0000.mp4"  # one part: the chunks are for the service's workers
        part.parent.mkdir(parents=True, exist_ok=True)
        rendered = render_video(track, mouth, job.timeline, part, settings, progress=progress)
        mux([part], audio, job.n_frames, out, settings, progress, job.rate)
    s, made = track.summary, report(job, track.summary, rendered.passed_through, rendered.unmatched)
    return DubResult(out, made.frames, made.passed_through, made.outside_ranges, s.face_coverage,
                     made.other_person_s, torch_device, s.target_source, s.n_faces, made.rate, tuple(s.flags),
                     made.other_speaker_s, made.unmatched)


def listen(audio: Path, out_dir: Path, settings: Settings, progress: Progress) -> tuple[str, MouthTrack]:
    """The torch device the settings ask for ("auto" resolved) and the dub's mouth track."""
    return resolve_device(settings.device), analyze_audio(audio, out_dir, settings, progress)
