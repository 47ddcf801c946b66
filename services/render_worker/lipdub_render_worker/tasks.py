"""`dub.plan`, `dub.render` (one chunk of frames), `dub.mux` and `dub.finalize`.

Render and mux are separate tasks so a mux retry never re-renders; each chunk is its own task so a lost
worker redoes one chunk, not the job. Outputs go to deterministic keys and are skipped when present.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

from celery.signals import worker_process_init

from lipdub.audio.mouth import MouthTrack
from lipdub.config import get_settings
from lipdub.media.mux import mux
from lipdub.memory import one_malloc_arena
from lipdub.plan import plan, planned, report
from lipdub.prep.track import SourceTrack, TrackSummary
from lipdub.render import generic_weights
from lipdub.render.video import render_video
from lipdub.service.celery_app import app
from lipdub.service.chains import start_render
from lipdub.service.prepcache import enroll_cached, job_source_key
from lipdub.service.quality import sync_estimate
from lipdub.service.status import Stage, get_store
from lipdub.service.storage import get_storage, keys
from lipdub.service.worker import StageTask, load_face_mesh, purge_local_prep, stage_run, warm_up
from lipdub.timeline import frames_at

log = logging.getLogger(__name__)


@worker_process_init.connect
def _load_models(**_: object) -> None:
    one_malloc_arena()  # frames cross threads in the render stage (lipdub.memory)
    settings = get_settings()
    if settings.renderer == "dinet":
        weights = generic_weights(settings)
        if weights.is_file():  # else make_renderer falls back to the warp renderer (and says so per job)
            from lipdub.render.dinet import load_checkpoint  # torch: only for the DINet renderer

            warm_up(f"DINet renderer {weights.name}", lambda: load_checkpoint(weights))
    if settings.sync_estimate:  # the mux task's sync estimate tracks the result's face
        warm_up("face mesh", load_face_mesh)
    purge_local_prep()


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
    if state.spec.options.enroll:
        # Before any chunk is queued, so every chunk renders with the fine-tuned generator.
        with stage_run(job_id, Stage.render, "enroll", (0.0, 0.0), finish=False) as run:
            if run is None:
                return
            enroll_cached(source, run.store, run.storage, run.settings)
    with tempfile.TemporaryDirectory(prefix="lipdub-plan-") as tmp:
        mouth = MouthTrack.load(storage.get_file(keys.mouth(job_id), Path(tmp) / "mouth.npz"))
    job = plan(state.spec.options, TrackSummary.from_dict(pointer["summary"]), len(mouth),
               store.settings.chunk_seconds)
    # The plan is stored before the chunks are queued: a render task must find it.
    store.set_plan(job_id, job.n_frames, len(job.chunks), job.chunk_frames, job.rate)
    start_render(job_id, len(job.chunks), state.spec.queue_priority)
    store.mark_render_queued(job_id)
    log.info("planned job=%s frames=%d chunks=%d", job_id, job.n_frames, len(job.chunks))


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
            job = planned(state.spec.options, track.summary, frames_at(len(mouth), state.rate), state.rate,
                          state.chunk_frames)
            out = run.scratch / f"part-{index:04d}.mp4"
            rendered = render_video(track, mouth, job.timeline, out, run.settings, frames=job.chunks[index],
                                    progress=run.progress)
            run.store.chunk_rendered(job_id, index, rendered.passed_through, rendered.unmatched)
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
        assert state.spec.audio.sha256 is not None  # the probe stage downloaded a URL input
        audio = run.fetch(keys.asset(state.spec.audio.sha256), "input-audio")
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
    assert state.n_frames and state.chunk_frames, "finalize ran before its job's plan was stored"
    pointer = store.assets.prep_pointer(job_source_key(state.spec)) or {}
    summary = TrackSummary.from_dict(pointer["summary"]) if pointer.get("summary") else None
    job = planned(state.spec.options, summary, state.n_frames, state.rate, state.chunk_frames)
    made = {**report(job, summary, state.passed_through, state.unmatched).to_dict(),
            "durations": state.timings,
            "sync": store.sync(job_id)}  # null when settings.sync_estimate is off
    if store.succeed(job_id, {"video": keys.result(job_id)}, made):
        store.metrics.record_frames(state.n_frames)
    # Parts are only an intermediate: the result holds everything (the prep cache is kept).
    storage = get_storage()
    for i in range(state.chunks or 0):
        storage.delete(keys.part(job_id, i))
