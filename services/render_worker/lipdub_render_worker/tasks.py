"""`dub.plan`, `dub.render` (one chunk of frames), `dub.mux` and `dub.finalize`.

Render and mux are separate tasks so a mux retry never re-renders; each chunk is its own task so a lost
worker redoes one chunk, not the job. Outputs go to deterministic keys and are skipped when present.
"""

from __future__ import annotations

import logging
import tempfile
import time
from fractions import Fraction
from pathlib import Path

from celery.signals import worker_process_init

from lipdub import FPS
from lipdub.audio.mouth import MouthTrack
from lipdub.config import get_settings
from lipdub.media.mux import mux
from lipdub.pipeline import render_chunks, start_render
from lipdub.prep.shots import shot_spans
from lipdub.prep.track import SourceTrack, TrackSummary, output_rate
from lipdub.render import generic_weights
from lipdub.render.video import render_video
from lipdub.service.celery_app import app
from lipdub.service.prepcache import enroll_cached, job_source_key
from lipdub.service.quality import sync_estimate
from lipdub.service.status import JobState, Stage, get_store
from lipdub.service.storage import get_storage, keys
from lipdub.service.worker import StageTask, load_face_mesh, purge_local_prep, stage_run, warm_up
from lipdub.timeline import Timeline, frames_at

log = logging.getLogger(__name__)


@worker_process_init.connect
def _load_models(**_: object) -> None:
    settings = get_settings()
    if settings.renderer == "dinet":
        weights = generic_weights(settings)
        if weights.is_file():  # else make_renderer falls back to the warp renderer (and says so per job)
            from lipdub.render.dinet import load_checkpoint  # torch: only for the DINet renderer

            warm_up(f"DINet renderer {weights.name}", lambda: load_checkpoint(weights))
    if settings.sync_estimate:  # the mux task's sync estimate tracks the result's face
        warm_up("face mesh", load_face_mesh)
    purge_local_prep()


def _timeline(state: JobState, n_video: int, n_audio: int, rate: str) -> Timeline:
    """The job's output timeline at `rate`: its sync mode and dub ranges (options checked by the API)."""
    options = state.spec.get("options", {})
    ranges = tuple((float(a), float(b)) for a, b in options.get("ranges") or ())
    return Timeline(n_video, n_audio, options.get("sync_mode") or "bounce", ranges, rate)


def _source_timeline(state: JobState, summary: TrackSummary, n_mouth: int, rate: str) -> Timeline:
    """The timeline of a job whose source is `summary` and whose mouth track has `n_mouth` 25-fps frames."""
    return _timeline(state, summary.frames_at(rate), frames_at(n_mouth, rate), rate)


@app.task(name="dub.plan", base=StageTask)
def plan_task(job_id: str) -> None:
    """Both inputs are analysed: fix the output length and queue its render chunks."""
    store, storage = get_store(), get_storage()
    state = store.get(job_id)
    if state is None or state.status.is_final or store.render_queued(job_id):
        return  # canceled, failed, or already planned by an earlier delivery of this task
    source = job_source_key(state.spec)
    pointer = store.assets.prep_pointer(source)
    if pointer is None:
        raise RuntimeError("prep finished without a prep cache pointer")
    if state.spec.get("options", {}).get("enroll"):
        # Before any chunk is queued, so every chunk renders with the fine-tuned generator.
        with stage_run(job_id, Stage.render, "enroll", (0.0, 0.0), finish=False) as run:
            if run is None:
                return
            enroll_cached(source, run.store, run.storage, run.settings)
    with tempfile.TemporaryDirectory(prefix="lipdub-plan-") as tmp:
        mouth = MouthTrack.load(storage.get_file(keys.mouth(job_id), Path(tmp) / "mouth.npz"))
    summary = TrackSummary.from_dict(pointer["summary"])
    # The source's own frame rate unless the job asks for 25 fps (prep's 25-fps view of it: SourceTrack.reader).
    rate = output_rate(summary.native_rate, state.spec.get("options", {}).get("frame_rate") or
                       store.settings.frame_rate)
    timeline = _source_timeline(state, summary, len(mouth), rate)
    chunk_frames = max(1, round(store.settings.chunk_seconds * timeline.fps))
    chunks = render_chunks(timeline.n_out, store.settings.chunk_seconds, timeline.fps)
    # The plan is stored before the chunks are queued: a render task must find it.
    store.set_plan(job_id, timeline.n_out, len(chunks), chunk_frames, rate)
    start_render(job_id, len(chunks), state.spec.get("priority"))
    store.mark_render_queued(job_id)
    log.info("planned job=%s frames=%d chunks=%d", job_id, timeline.n_out, len(chunks))


@app.task(name="dub.render", base=StageTask)
def render_task(job_id: str, index: int) -> None:
    """Render output frames [index·chunk, (index+1)·chunk) to a silent H.264 part."""
    state = get_store().get(job_id)
    if state is None or state.status.is_final:
        return
    if not state.chunks or not state.chunk_frames:
        raise RuntimeError("a render chunk ran before its job's plan was stored")
    n = state.chunks
    with stage_run(job_id, Stage.render, f"render:{index}", (index / n, (index + 1) / n), finish=False) as run:
        if run is None:
            return
        part_key = keys.part(job_id, index)
        if not run.storage.exists(part_key):  # else: stored by an earlier delivery of this task
            track = SourceTrack.load(run.fetch_prep(job_source_key(state.spec)))
            mouth = MouthTrack.load(run.fetch(keys.mouth(job_id), "mouth.npz"))
            timeline = _source_timeline(state, track.summary, len(mouth), state.rate)
            start = index * state.chunk_frames
            frames = range(start, min(start + state.chunk_frames, timeline.n_out))
            out = run.scratch / f"part-{index:04d}.mp4"
            passed = render_video(track, mouth, timeline, out, run.settings, frames=frames,
                                  progress=run.progress)
            run.store.chunk_rendered(job_id, index, passed)
            run.storage.put_file(part_key, out, "video/mp4")
        if run.store.mark_chunk(job_id, index) >= n:
            run.store.stage_finished(job_id, Stage.render)


@app.task(name="dub.mux", base=StageTask)
def mux_task(job_id: str) -> None:
    """Join the chunks and lay the dub audio under them."""
    with stage_run(job_id, Stage.mux) as run:
        if run is None:
            return
        state = run.store.get(job_id)
        assert state is not None and state.chunks and state.n_frames
        if run.storage.exists(keys.result(job_id)):
            return
        parts = [run.fetch(keys.part(job_id, i), f"part-{i:04d}.mp4") for i in range(state.chunks)]
        audio = run.fetch(keys.asset(state.spec["audio"]["sha256"]), "input-audio")
        out = run.scratch / "result.mp4"
        mux(parts, audio, state.n_frames, out, run.settings, run.progress, state.rate)
        if run.settings.sync_estimate:
            _estimate_sync(job_id, out, audio)
        run.storage.put_file(keys.result(job_id), out, "video/mp4")


def _estimate_sync(job_id: str, result: Path, audio: Path) -> None:
    """The report's sync estimate (lipdub.service.quality). A measurement, not a product: when it fails the
    job still succeeds, and the report says why the estimate is missing."""
    started = time.perf_counter()
    try:
        estimate = sync_estimate(result, audio)
    except Exception as exc:  # noqa: BLE001 - any failure here must not fail a finished dub
        log.warning("sync estimate failed job=%s: %s: %s", job_id, type(exc).__name__, exc)
        estimate = {"error": f"{type(exc).__name__}: {exc}"}
    estimate["seconds"] = round(time.perf_counter() - started, 2)
    get_store().set_sync(job_id, estimate)


@app.task(name="dub.finalize", base=StageTask)
def finalize_task(job_id: str) -> None:
    """Record the result and the quality report; the job is succeeded from here on."""
    with stage_run(job_id, Stage.finalize) as run:
        if run is None:
            return
    store = get_store()
    state = store.get(job_id)
    if state is None or state.status.is_final:
        return
    pointer = store.assets.prep_pointer(job_source_key(state.spec)) or {}
    summary = pointer.get("summary", {})
    # The job's timeline: its length is settled (n_frames), and with as many audio frames every sync mode
    # gives that length back.
    source_frames = TrackSummary.from_dict(summary).frames_at(state.rate) if summary else None
    timeline = _timeline(state, source_frames or 1, state.n_frames or 0, state.rate)
    report = {
        "frames": state.n_frames,
        "frames_passed_through": state.passed_through,  # no usable face, or outside the job's ranges
        "frames_outside_ranges": timeline.frames_outside_ranges(),
        "fps": round(float(Fraction(state.rate)), 3),  # the output's frame rate: the source's own, or 25
        "frame_rate": state.rate,  # the same, exactly (an ffmpeg rate such as 30000/1001)
        "face_coverage": summary.get("face_coverage"),
        "face_px": summary.get("face_px"),
        "source_frames": source_frames,  # the source's length in frames at the output's rate (like `frames`)
        # How the dubbed face was chosen: auto (the dominant face), user (target_face) or speaker (faces
        # tied; the one whose lips follow the source's own soundtrack, lipdub.prep.speaker).
        "face_choice": summary.get("target_source"),
        "source_faces": summary.get("n_faces"),
        # Where the source cuts to another shot (seconds of the 25-fps source): each shot was dubbed with
        # its own references (lipdub.prep.shots); worth a look at each in review.
        "source_cuts_s": [round(cut / FPS, 2) for cut in summary.get("cuts", [])],
        # Each shot: its span in the source, where it shows in the output (seconds of the output, as the
        # job's `ranges`; several spans in loop and bounce modes), and whether its face is likely another
        # person's than the main shot's (a reaction shot `ranges` may leave out; nothing is left out
        # automatically).
        "source_shots": [{"start_s": round(shot.start / FPS, 2), "end_s": round(shot.end / FPS, 2),
                          "output_s": [[round(a, 2), round(b, 2)] for a, b in timeline.source_spans_s(shot.start, shot.end)],
                          "person_distance": shot.person_distance, "other_person": shot.other_person}
                         for shot in shot_spans(summary.get("cuts", []), summary.get("n_frames", 0),
                                                summary.get("shot_person_distance", []))],
        # Where another face than the dubbed one talks in the source's own soundtrack (lipdub.prep.speaker):
        # its lines were dubbed onto this face; `ranges` can leave them out.
        "other_speaker": [{"start_s": round(start / FPS, 2), "end_s": round(end / FPS, 2),
                           "output_s": [[round(a, 2), round(b, 2)] for a, b in timeline.source_spans_s(start, end)]}
                          for start, end in summary.get("other_speaker", [])],
        "chunks": state.chunks,
        "output_seconds": round((state.n_frames or 0) / float(Fraction(state.rate)), 3),
        "durations": state.timings,
        "sync": store.sync(job_id),  # null when settings.sync_estimate is off
    }
    if store.succeed(job_id, {"video": keys.result(job_id)}, report):
        store.metrics.record_frames(state.n_frames or 0)
    # Parts are only an intermediate: the result holds everything (the prep cache is kept).
    storage = get_storage()
    for i in range(state.chunks or 0):
        storage.delete(keys.part(job_id, i))
