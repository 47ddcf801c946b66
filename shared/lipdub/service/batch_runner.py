"""Running a batch: expanding its manifest, releasing its items as jobs at the tenant's pace, and finishing
it (lipdub.service.batches holds its records). Plain functions of the stores, so they are tested without
Celery; the webhooks worker's tasks (lipdub_webhooks_worker.tasks) call them when a batch is created, a
source's prep ends, a job ends or a batch is canceled. Every step is safe to run twice (the tasks are
retried and redelivered): items are counted once per job or line, job ids follow from batch and line, and
the output files have fixed keys.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from lipdub.jobs import InputRef, JobSpec, JobStatus, PrepVerdict
from lipdub.service import redis_keys, webhooks
from lipdub.service.assets_store import Asset
from lipdub.service.batches import BatchStatus, BatchStore
from lipdub.service.inputs import InputRefused, check_input, fetch_asset
from lipdub.service.limits import BATCH_PRIORITY
from lipdub.service.manifest import Item, LineError, jsonl_lines, validate_manifest
from lipdub.service.status import JobState, JobStore
from lipdub.service.storage import Storage, keys
from lipdub.service.webhooks import EventType

log = logging.getLogger(__name__)

_BATCH_EVENTS = {BatchStatus.completed: EventType.batch_completed, BatchStatus.failed: EventType.batch_failed,
                 BatchStatus.cancelled: EventType.batch_canceled}

# Queues the prep of one source (and face choice) for a batch; its end calls source_ready or source_failed.
QueuePrep = Callable[[str, str, Item], None]


class BatchRunner:
    def __init__(self, store: JobStore, storage: Storage) -> None:
        self.store = store
        self.storage = storage
        self.batches = BatchStore(store)

    # --- expansion -------------------------------------------------------------------------------------
    def expand(self, batch_id: str, queue_prep: QueuePrep) -> None:
        """Validate the whole manifest, download its URL inputs, then queue its items: those whose source is
        prepared are ready, the others wait for one prep per source (queue_prep)."""
        batches = self.batches
        state = batches.get(batch_id)
        if state is None or state.status not in (BatchStatus.validating, BatchStatus.cancelling) or state.expanded:
            return
        if state.status == BatchStatus.cancelling:  # canceled before validation began: nothing to run
            batches.mark_expanded(batch_id)
            self.settle(batch_id)
            return
        try:
            items, errors = validate_manifest(jsonl_lines(self.storage.stream(state.manifest)), state.tenant,
                                              self.store, self.store.settings, state.defaults.get("options"))
        except Exception as exc:  # storage down, or a bug: fail the batch visibly rather than leave it validating
            log.exception("batch %s: validation failed", batch_id)
            errors = [LineError(0, "internal", f"the manifest could not be validated: {exc}")]
        if errors:
            if not batches.fail(batch_id, errors):  # canceled meanwhile: the cancel wins, nothing ran
                batches.mark_expanded(batch_id)
                self.settle(batch_id)
                return
            log.info("batch %s invalid: %d line errors", batch_id, len(errors))
            self.notify(batch_id)
            return
        total = len(items)
        items = self.fetch_urls(batch_id, state.tenant, items)  # items whose download fails are failed
        needing = batches.accept_items(batch_id, state.tenant, items,
                                       prepared=lambda source: self.store.assets.prep_pointer(source) is not None,
                                       total=total)
        current = batches.get(batch_id)
        if current is not None and current.status == BatchStatus.in_progress:
            for source, item in needing.items():
                queue_prep(batch_id, source, item)
        log.info("batch %s accepted: %d items, %d sources to prepare", batch_id, len(items), len(needing))
        self.settle(batch_id)
        self.pump(state.tenant)

    def fetch_urls(self, batch_id: str, tenant: str, items: list[Item]) -> list[Item]:
        """Download URL inputs into assets (once per URL); items whose download fails are failed."""
        fetched: dict[str, Asset | InputRefused] = {}
        out: list[Item] = []
        with tempfile.TemporaryDirectory(prefix="lipdub-batch-") as tmp:
            for item in items:
                try:
                    video, audio = (self._input(kind, getattr(item, kind), tenant, fetched, Path(tmp))
                                    for kind in ("video", "audio"))
                except InputRefused as exc:
                    self.batches.item_finished(batch_id, item.line, item.custom_id, None, "failed",
                                               {"code": exc.code, "message": exc.message})
                    continue
                out.append(replace(item, video=video, audio=audio))
        return out

    def _input(self, kind: str, ref: InputRef, tenant: str, fetched: dict[str, Asset | InputRefused],
               tmp: Path) -> InputRef:
        """An item's input as an asset reference: a URL is downloaded (once per URL: `fetched`) and held to
        the tenant's quotas, as an uploaded asset is. Raises InputRefused, its message naming the input."""
        if ref.url is None:
            return ref
        url = ref.url
        if url not in fetched:
            try:
                fetched[url] = fetch_asset(url, tenant, tmp / "download", self.store, self.storage)
            except InputRefused as exc:
                fetched[url] = exc
        got = fetched[url]
        try:
            if isinstance(got, InputRefused):
                raise got
            check_input(kind, got, tenant, self.store)
        except InputRefused as exc:
            message = exc.message if exc.message.startswith(f"{kind}:") else f"{kind}: {exc.message}"
            raise InputRefused(exc.code, message) from exc
        return InputRef(asset_id=got.id, sha256=got.sha256)

    def source_ready(self, batch_id: str, source: str, result: dict[str, Any]) -> None:
        """The prep of one source ended (a PrepVerdict as a dict): release its items, or fail them with the
        gate's code."""
        batches = self.batches
        state = batches.get(batch_id)
        if state is None:
            return
        verdict = PrepVerdict.model_validate(result)
        if verdict.ok:
            batches.source_ready(batch_id, state.tenant, source)
        elif verdict.error is None:
            batches.drop_waiting(batch_id, source, "internal", "preparing the source failed")
        else:
            batches.drop_waiting(batch_id, source, verdict.error.code, verdict.error.message)
        self.settle(batch_id)
        self.pump(state.tenant)

    def source_failed(self, batch_id: str, source: str) -> None:
        """The prep of one source crashed: fail the items waiting for it."""
        batches = self.batches
        batches.drop_waiting(batch_id, source, "internal", "preparing the source failed; see the service logs")
        self.settle(batch_id)
        state = batches.get(batch_id)
        if state is not None:
            self.pump(state.tenant)

    # --- items as jobs ---------------------------------------------------------------------------------
    def job_ended(self, job: JobState) -> None:
        """A batch job is final: count it, settle its batch and release the tenant's next items."""
        assert job.batch is not None
        self.record_job(job)
        self.settle(job.batch)
        self.pump(job.tenant)

    def record_job(self, job: JobState) -> None:
        """Count a final batch job in its batch (once) and free its slot in the tenant's running cap."""
        assert job.batch is not None
        result_url = f"{self.store.settings.api_url}/v1/jobs/{job.id}/result" \
            if job.status == JobStatus.succeeded else None
        batches = self.batches
        batches.job_item_finished(job.id, job.batch, job.status, job.error, result_url, job.delivery)
        batches.job_counted(job.tenant, job.id)

    def pump(self, tenant: str) -> int:
        """Release the tenant's next batch items as jobs while fewer than `batch_running_per_tenant` of its
        batch jobs are queued or running. Returns how many were released."""
        store, batches = self.store, self.batches
        cap = store.settings.batch_running_per_tenant
        released = 0
        # One pump per tenant at a time, or two events could both see a free slot and overshoot the cap.
        with store.r.lock(redis_keys.pump_lock(tenant), timeout=120, blocking_timeout=60):
            active_ids, final_ids = batches.active_jobs(tenant)
            for job_id in final_ids:  # normally recorded by their events already (then this is a no-op)
                job = store.get(job_id)
                if job is None:
                    batches.job_counted(tenant, job_id)
                elif job.batch:
                    self.record_job(job)
                    self.settle(job.batch)
            active = len(active_ids)
            # Items an earlier pump took but never bound to a job (it raised, or its worker died) go first.
            for batch_id, item in batches.releasing(tenant):
                state = batches.get(batch_id)
                if state is not None and state.status == BatchStatus.in_progress:
                    self.release(tenant, batch_id, item)
                    active += 1
                    released += 1
                else:  # the batch was canceled or failed meanwhile: the item ends with it
                    ended = {"code": "canceled", "message": "the batch ended before this item started"}
                    batches.item_finished(batch_id, item.line, item.custom_id, None, "canceled", ended)
                    batches.drop_releasing(batch_id, item)
                    self.settle(batch_id)
            while active < cap:
                nxt = batches.next_ready(tenant)
                if nxt is None:
                    break
                self.release(tenant, *nxt)
                active += 1
                released += 1
        return released

    def release(self, tenant: str, batch_id: str, item: Item) -> None:
        """Run a batch item as a job. Its id follows from the batch and line, so releasing an item again (after
        an error between the job's creation and its binding) rewrites the same, not yet started, job."""
        store = self.store
        spec = JobSpec(video=item.video, audio=item.audio, options=item.options, delivery_url=item.delivery_url,
                       metadata={**item.metadata, "custom_id": item.custom_id}, priority="low")
        job_id = f"job_{hashlib.sha256(f'{batch_id}:{item.line}'.encode()).hexdigest()[:32]}"
        job = store.create(tenant, spec, batch=batch_id, job_id=job_id)
        self.batches.bind_job(batch_id, tenant, item, job.id)
        try:
            store.start(job.id, BATCH_PRIORITY)
        except Exception as exc:  # noqa: BLE001 - the broker is down: the start stays owed, the janitor redoes it
            log.warning("could not queue batch job %s (the janitor will): %s", job.id, exc)

    # --- the end of a batch ----------------------------------------------------------------------------
    def settle_and_pump(self, batch_id: str) -> None:
        """Settle the batch (a cancel request, or its end), then release the tenant's next items."""
        state = self.batches.get(batch_id)
        self.settle(batch_id)
        if state is not None:
            self.pump(state.tenant)

    def settle(self, batch_id: str) -> None:
        """Carry out a cancel request, and finish the batch once every item is final."""
        store, batches = self.store, self.batches
        state = batches.get(batch_id)
        if state is None or state.status.is_final:
            return
        if state.status == BatchStatus.cancelling:
            if not state.expanded:
                return  # still validating: expand settles the batch when it is done
            batches.drop_waiting(batch_id, None, "canceled", "the batch was canceled before this item started")
            for job_id in batches.job_ids(batch_id):
                job = store.get(job_id)
                if job is not None and not job.status.is_final:
                    store.cancel(job_id)  # a running render stops at its next chunk
                job = store.get(job_id)
                if job is not None and job.status.is_final:
                    self.record_job(job)
            state = batches.get(batch_id)
            assert state is not None
            if state.done >= state.total:
                self.finish(batch_id, BatchStatus.cancelled)
            return
        if state.status == BatchStatus.in_progress and state.done >= state.total:
            batches.move(batch_id, BatchStatus.finalizing)
            state = batches.get(batch_id)
        if state is not None and state.status == BatchStatus.finalizing:
            # Also the retry of a settle whose output files failed to store: finishing is repeatable.
            self.finish(batch_id, BatchStatus.completed)

    def finish(self, batch_id: str, final: BatchStatus) -> None:
        """Write the output files (fixed keys: a second writer rewrites the same files), then end the batch;
        the one settle whose move ends it sends its webhook."""
        self.write_outputs(batch_id)
        if self.batches.move(batch_id, final):
            self.notify(batch_id)

    def write_outputs(self, batch_id: str) -> None:
        """The output and error JSONL files, one row per item (custom_id → job id, result URL or error)."""
        batches = self.batches
        stored: dict[str, str] = {}
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
                    self.storage.put_file(key, path, "application/jsonl")
                    stored[which] = key
        batches.set_files(batch_id, output_key=stored.get("out"), error_key=stored.get("err"))

    def notify(self, batch_id: str) -> None:
        """The batch's webhook, once per final status (a stable message id)."""
        batches = self.batches
        state = batches.get(batch_id)
        if state is None or state.status not in _BATCH_EVENTS or not state.webhook_url:
            return
        webhooks.emit(self.store, state.tenant, state.id, _BATCH_EVENTS[state.status], state.webhook_url,
                      batches.public(state, self.store.settings.api_url, running=0),
                      msg_id=f"msg_{state.id.removeprefix('batch_')}_{state.status}")
