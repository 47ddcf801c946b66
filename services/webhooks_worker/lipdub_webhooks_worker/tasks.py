"""The light, I/O-bound tasks of the `webhooks` queue (a thread-pool worker, so one slow receiver does not
hold up the others):

  webhooks.deliver        one signed delivery attempt (lipdub.service.webhooks)
  events.job_finished     a job reached succeeded/failed/canceled: its webhook, its batch's bookkeeping,
                          and the release of the tenant's next batch items
  batches.expand          validate a batch manifest, fetch URL inputs, group items by source, queue one
                          dub.prep_source per unprepared source
  batches.source_ready    a source's prep finished: release (or fail) the items waiting for it
  batches.source_failed   the prep itself crashed: fail the items waiting for it
  batches.settle          cancel / finish a batch (after POST /v1/batches/{id}/cancel, and when items end)
  janitor.sweep           redo hand-offs a dead process cut off, abort expired uploads, delete expired jobs'
                          files (lipdub.service.janitor); sent every janitor_seconds by the scheduler this
                          worker embeds (processes.webhooks)

Payloads carry the job or batch exactly as the API returns it (lipdub_api.schemas.JobPublic), so this
worker runs with the API package on its path.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import redis
from pydantic import ValidationError

from lipdub.errors import TransientError
from lipdub.service import janitor, webhooks
from lipdub.service.assets_store import Asset
from lipdub.service.batches import BatchStatus, BatchStore, Item, LineError, jsonl_lines, validate_manifest
from lipdub.service.celery_app import app
from lipdub.service.delivery import deliver
from lipdub.service.inputs import InputRefused, check_input, fetch_asset
from lipdub.service.limits import BATCH_PRIORITY
from lipdub.service.processes import WEBHOOKS_QUEUE
from lipdub.service.status import JobState, JobStatus, get_store
from lipdub.service.storage import get_storage, keys
from lipdub.service.webhooks import EventType
from lipdub_api.schemas import JobOptions, JobPublic

log = logging.getLogger(__name__)

__all__ = ["app", "webhooks"]

# Every task here is safe to run twice (stable webhook ids, batch counts kept per job id), so it is
# acknowledged late and retried when Redis or storage hiccups.
_TASK: dict[str, Any] = {"acks_late": True, "reject_on_worker_lost": True, "ignore_result": True,
                         "autoretry_for": (TransientError, ConnectionError, redis.RedisError),
                         "retry_backoff": 2, "retry_backoff_max": 120, "max_retries": 8}
_JOB_EVENTS = {JobStatus.succeeded: EventType.job_succeeded, JobStatus.failed: EventType.job_failed,
               JobStatus.canceled: EventType.job_canceled}
_BATCH_EVENTS = {BatchStatus.completed: EventType.batch_completed, BatchStatus.failed: EventType.batch_failed,
                 BatchStatus.cancelled: EventType.batch_canceled}


def check_options(options: dict[str, Any]) -> dict[str, Any]:
    try:
        return JobOptions.model_validate(options).model_dump(mode="json")
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ValueError(f"options.{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from exc


def job_public(job: JobState) -> dict[str, Any]:
    return JobPublic.of(job, get_store().settings.api_url).model_dump(mode="json")


# --- job events --------------------------------------------------------------------------------------
@app.task(name="events.job_finished", **_TASK)
def job_finished(job_id: str) -> None:
    """Everything that follows a job's final state. Safe to run twice (redelivery): the webhook has a
    stable id and is stored once, the batch counts each job once."""
    store = get_store()
    job = store.get(job_id)
    if job is None or not job.status.is_final:
        return
    if job.status == JobStatus.succeeded and job.spec.get("delivery_url") and job.delivery is None:
        # Before the webhook, which then says whether the file is in the customer's storage.
        store.set_delivery(job.id, deliver(job, store, get_storage()))
        job = store.get(job_id)
        if job is None:
            return
    public = job_public(job)
    url = job.spec.get("webhook_url")
    if url:
        webhooks.emit(store, job.tenant, job.id, _JOB_EVENTS[job.status], url, public,
                      msg_id=f"msg_{job.id.removeprefix('job_')}_{job.status}")
    if job.batch:
        record_batch_job(job)
        settle(job.batch)
        pump(job.tenant)


def record_batch_job(job: JobState) -> None:
    """Count a final batch job in its batch (once) and free its slot in the tenant's running cap."""
    store = get_store()
    result_url = f"{store.settings.api_url}/v1/jobs/{job.id}/result" if job.status == JobStatus.succeeded else None
    assert job.batch is not None
    BatchStore(store).job_item_finished(job.id, job.batch, job.status, job.error, result_url, job.delivery)
    store.r.srem(f"tenant:{job.tenant}:batch_active", job.id)


# --- batches -----------------------------------------------------------------------------------------
@app.task(name="batches.expand", **_TASK)
def expand(batch_id: str) -> None:
    """Validate the whole manifest, then queue its items (the API returned long before)."""
    store, storage = get_store(), get_storage()
    batches = BatchStore(store)
    state = batches.get(batch_id)
    if state is None or state.status not in (BatchStatus.validating, BatchStatus.cancelling) or state.expanded:
        return
    if state.status == BatchStatus.cancelling:  # canceled before validation began: nothing to run
        batches.mark_expanded(batch_id)
        settle(batch_id)
        return
    try:
        defaults = state.defaults.get("options", {})
        items, errors = validate_manifest(jsonl_lines(storage.stream(state.manifest)), state.tenant, store,
                                          store.settings, lambda options: check_options({**defaults, **options}))
    except Exception as exc:  # storage down, or a bug: fail the batch visibly rather than leave it validating
        log.exception("batch %s: validation failed", batch_id)
        errors = [LineError(0, "internal", f"the manifest could not be validated: {exc}")]
    if errors:
        if not batches.fail(batch_id, errors):  # canceled meanwhile: the cancel wins, nothing ran
            batches.mark_expanded(batch_id)
            settle(batch_id)
            return
        log.info("batch %s invalid: %d line errors", batch_id, len(errors))
        notify_batch(batch_id)
        return
    total = len(items)
    items = _fetch_urls(batch_id, state.tenant, items, batches)  # items whose download fails are failed
    needing = batches.accept_items(batch_id, state.tenant, items,
                                   prepared=lambda source: store.assets.prep_pointer(source) is not None,
                                   total=total)
    current = batches.get(batch_id)
    for source, item in needing.items() if current is not None and current.status == BatchStatus.in_progress \
            else ():
        # Prep once per source (and face choice) into the prep cache, then its items are released.
        args = (item.video["sha256"], item.options.get("target_face"))
        app.signature("dub.prep_source", args=args, priority=BATCH_PRIORITY).apply_async(
            link=app.signature("batches.source_ready", args=(batch_id, source), queue=WEBHOOKS_QUEUE),
            link_error=app.signature("batches.source_failed", args=(batch_id, source), immutable=True,
                                     queue=WEBHOOKS_QUEUE))
    log.info("batch %s accepted: %d items, %d sources to prepare", batch_id, len(items), len(needing))
    settle(batch_id)
    pump(state.tenant)


def _fetch_urls(batch_id: str, tenant: str, items: list[Item], batches: BatchStore) -> list[Item]:
    """Download URL inputs into assets (once per URL); items whose download fails are failed."""
    store, storage = get_store(), get_storage()
    fetched: dict[str, Asset | InputRefused] = {}
    out: list[Item] = []
    with tempfile.TemporaryDirectory(prefix="lipdub-batch-") as tmp:
        for item in items:
            refs: dict[str, dict[str, Any]] = {}
            error: dict[str, str] | None = None
            for kind in ("video", "audio"):
                ref = getattr(item, kind)
                if "url" not in ref:
                    refs[kind] = ref
                    continue
                url = ref["url"]
                if url not in fetched:
                    try:
                        fetched[url] = fetch_asset(url, tenant, Path(tmp) / "download", store, storage)
                    except InputRefused as exc:
                        fetched[url] = exc
                got = fetched[url]
                try:
                    if isinstance(got, InputRefused):
                        raise got
                    check_input(kind, got, tenant, store)  # the tenant quotas, as for uploaded assets
                except InputRefused as exc:
                    error = {"code": exc.code, "message": exc.message if exc.message.startswith(f"{kind}:")
                             else f"{kind}: {exc.message}"}
                    break
                refs[kind] = {"asset_id": got.id, "sha256": got.sha256}
            if error is not None:
                batches.item_finished(batch_id, item.line, item.custom_id, None, "failed", error)
                continue
            out.append(replace(item, video=refs["video"], audio=refs["audio"]))
    return out


@app.task(name="batches.source_ready", **_TASK)
def source_ready(result: dict[str, Any], batch_id: str, source: str) -> None:
    """The prep of one source finished: release its items, or fail them with the gate's code."""
    store = get_store()
    batches = BatchStore(store)
    state = batches.get(batch_id)
    if state is None:
        return
    if result.get("verdict") == "pass":
        batches.source_ready(batch_id, state.tenant, source)
    else:
        error = result.get("error") or {"code": "internal", "message": "preparing the source failed"}
        batches.drop_waiting(batch_id, source, str(error.get("code")), str(error.get("message")))
    settle(batch_id)
    pump(state.tenant)


@app.task(name="batches.source_failed", **_TASK)
def source_failed(batch_id: str, source: str) -> None:
    store = get_store()
    batches = BatchStore(store)
    batches.drop_waiting(batch_id, source, "internal", "preparing the source failed; see the service logs")
    settle(batch_id)
    state = batches.get(batch_id)
    if state is not None:
        pump(state.tenant)


@app.task(name="batches.settle", **_TASK)
def settle_task(batch_id: str) -> None:
    state = BatchStore(get_store()).get(batch_id)
    settle(batch_id)
    if state is not None:
        pump(state.tenant)


def settle(batch_id: str) -> None:
    """Carry out a cancel request, and finish the batch once every item is final."""
    store = get_store()
    batches = BatchStore(store)
    state = batches.get(batch_id)
    if state is None or state.status.is_final:
        return
    if state.status == BatchStatus.cancelling:
        if not state.expanded:
            return  # still validating: batches.expand settles the batch when it is done
        batches.drop_waiting(batch_id, None, "canceled", "the batch was canceled before this item started")
        for job_id in batches.job_ids(batch_id):
            job = store.get(job_id)
            if job is not None and not job.status.is_final:
                store.cancel(job_id)  # a running render stops at its next chunk
            job = store.get(job_id)
            if job is not None and job.status.is_final:
                record_batch_job(job)
        state = batches.get(batch_id)
        assert state is not None
        if state.done >= state.total:
            _finish(batches, batch_id, BatchStatus.cancelled)
        return
    if state.status == BatchStatus.in_progress and state.done >= state.total:
        batches.move(batch_id, BatchStatus.finalizing)
        state = batches.get(batch_id)
    if state is not None and state.status == BatchStatus.finalizing:
        # Also the retry of a settle whose output files failed to store: finishing is repeatable.
        _finish(batches, batch_id, BatchStatus.completed)


def _finish(batches: BatchStore, batch_id: str, final: BatchStatus) -> None:
    """Write the output files (fixed keys: a second writer rewrites the same files), then end the batch; the
    one settle whose move ends it sends its webhook."""
    _write_outputs(batch_id)
    if batches.move(batch_id, final):
        notify_batch(batch_id)


def _write_outputs(batch_id: str) -> None:
    """The output and error JSONL files, one row per item (custom_id → job id, result URL or error)."""
    batches, storage = BatchStore(get_store()), get_storage()
    fields: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="lipdub-batch-out-") as tmp:
        for which, name in (("out", "output"), ("err", "errors")):
            path = Path(tmp) / f"{name}.jsonl"
            with path.open("w") as out:
                n = 0
                for row in batches.rows(batch_id, which):
                    out.write(row + "\n")
                    n += 1
            if n:
                key = keys.batch(batch_id, f"{name}.jsonl")
                storage.put_file(key, path, "application/jsonl")
                fields["output_key" if which == "out" else "error_key"] = key
    if fields:
        batches.r.hset(f"batch:{batch_id}", mapping=fields)


def notify_batch(batch_id: str) -> None:
    store = get_store()
    batches = BatchStore(store)
    state = batches.get(batch_id)
    if state is None or state.status not in _BATCH_EVENTS or not state.webhook_url:
        return
    webhooks.emit(store, state.tenant, state.id, _BATCH_EVENTS[state.status], state.webhook_url,
                  batches.public(state, store.settings.api_url, running=0),
                  msg_id=f"msg_{state.id.removeprefix('batch_')}_{state.status}")


def pump(tenant: str) -> int:
    """Release the tenant's next batch items as jobs while fewer than `batch_running_per_tenant` of its
    batch jobs are queued or running. Returns how many were released."""
    store = get_store()
    batches = BatchStore(store)
    cap = store.settings.batch_running_per_tenant
    released = 0
    # One pump per tenant at a time, or two events could both see a free slot and overshoot the cap.
    with store.r.lock(f"tenant:{tenant}:pump", timeout=120, blocking_timeout=60):
        active_ids, final_ids = batches.active_jobs(tenant)
        for job_id in final_ids:  # normally recorded by their events already (then this is a no-op)
            job = store.get(job_id)
            if job is None:
                store.r.srem(f"tenant:{tenant}:batch_active", job_id)
            elif job.batch:
                record_batch_job(job)
                settle(job.batch)
        active = len(active_ids)
        # Items an earlier pump took but never bound to a job (it raised, or its worker died) go first.
        for batch_id, item in batches.releasing(tenant):
            state = batches.get(batch_id)
            if state is not None and state.status == BatchStatus.in_progress:
                release(batches, tenant, batch_id, item)
                active += 1
                released += 1
            else:  # the batch was canceled or failed meanwhile: the item ends with it
                batches.item_finished(batch_id, item.line, item.custom_id, None, "canceled",
                                      {"code": "canceled", "message": "the batch ended before this item started"})
                batches.r.hdel(f"batch:{batch_id}:releasing", str(item.line))
                settle(batch_id)
        while active < cap:
            nxt = batches.next_ready(tenant)
            if nxt is None:
                break
            release(batches, tenant, *nxt)
            active += 1
            released += 1
    return released


def release(batches: BatchStore, tenant: str, batch_id: str, item: Item) -> None:
    """Run a batch item as a job. Its id follows from the batch and line, so releasing an item again (after
    an error between the job's creation and its binding) rewrites the same, not yet started, job."""
    store = batches.jobs
    spec = {"video": item.video, "audio": item.audio, "options": item.options, "webhook_url": None,
            "delivery_url": item.delivery_url,
            "metadata": {**item.metadata, "custom_id": item.custom_id}, "priority": BATCH_PRIORITY,
            "priority_name": "low"}
    job_id = f"job_{hashlib.sha256(f'{batch_id}:{item.line}'.encode()).hexdigest()[:32]}"
    job = store.create(tenant, spec, batch=batch_id, job_id=job_id)
    batches.bind_job(batch_id, tenant, item, job.id)
    try:
        store.start(job.id, BATCH_PRIORITY)
    except Exception as exc:  # noqa: BLE001 - the broker is down: the start stays owed, the janitor redoes it
        log.warning("could not queue batch job %s (the janitor will): %s", job.id, exc)


@app.task(name="janitor.sweep", ignore_result=True, acks_late=False)
def sweep() -> None:
    """The janitor's periodic pass (lipdub.service.janitor); not retried: the next one comes shortly."""
    janitor.sweep(get_store(), get_storage())
