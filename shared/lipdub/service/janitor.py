"""The janitor: work no request or task will come back for. The Celery scheduler embedded in the webhooks
worker runs `sweep` every `janitor_seconds` (task `janitor.sweep`); a Redis lock keeps it to one sweep at
a time however many webhooks workers run.

- Hand-offs a dying process cut off (JobStore's outbox): a job that was created but whose pipeline was
  never queued (the API or the batch pump died in between, or the broker refused a batch job) is queued; a
  job whose end event never reached the broker gets it (its webhook, its batch's bookkeeping). Without
  this such a job stays `queued` forever, or its webhook is never sent.
- Presigned multipart uploads nobody completed are aborted once their record expires, so S3 drops their
  parts instead of keeping (and billing) them.
- Retention: a job's files (result, mouth track, render parts) are deleted when its record expires
  (`job_ttl_seconds` after creation), and so are its entries in the listing and status indexes. With
  `asset_ttl_seconds` set, an asset no job (or batch) has named for that long is deleted as
  DELETE /v1/assets/{id} would (its bytes and prep go with the last asset holding them); one a queued or
  running job still uses waits for a later sweep. A batch's files (inline input, output and error JSONL)
  go when its record expires, and an uploaded manifest when its record does.
- Deletion: a batch that DELETE /v1/batches/{id} hid is deleted with all it made, its jobs first (their records,
  results, intermediate files and webhook messages), then its files and records. A big catalog takes a few
  sweeps: each spends at most half the sweep interval on it, and the next goes on where it stopped.
"""

from __future__ import annotations

import logging
import time
from contextlib import suppress
from dataclasses import asdict, dataclass
from functools import partial

import redis

from lipdub.jobs import JobStatus
from lipdub.service import redis_keys
from lipdub.service.batches import BatchStore
from lipdub.service.indexes import now
from lipdub.service.inputs import delete_asset
from lipdub.service.status import JobStore
from lipdub.service.storage import S3Storage, Storage, keys
from lipdub.service.webhooks import Deliveries

log = logging.getLogger(__name__)


@dataclass
class SweepReport:
    started: int = 0  # jobs whose pipeline was queued
    announced: int = 0  # end events queued
    settled: int = 0  # hand-offs found done already (or their job expired)
    uploads_aborted: int = 0
    jobs_purged: int = 0  # expired or deleted
    batches_purged: int = 0
    batches_deleted: int = 0
    manifests_deleted: int = 0
    files_deleted: int = 0
    assets_deleted: int = 0


def sweep(store: JobStore, storage: Storage) -> SweepReport | None:
    """One pass; None when another sweep holds the lock."""
    lock = store.r.lock(redis_keys.JANITOR_LOCK, timeout=max(60, 2 * store.settings.janitor_seconds),
                        blocking_timeout=0)
    if not lock.acquire():
        return None
    report = SweepReport()
    try:
        # Each part on its own: a broker that refuses the hand-offs must not stall retention, and the
        # next sweep retries whatever failed.
        for part in (partial(redo_handoffs, store, report), partial(purge_expired_jobs, store, storage, report),
                     partial(purge_expired_batches, store, storage, report),
                     partial(delete_requested_batches, store, storage, report),
                     partial(abort_expired_uploads, store, storage, report),
                     partial(delete_unused_assets, store, storage, report)):
            try:
                part()
            except Exception:  # logged with its traceback; see above
                log.exception("janitor: a part of the sweep failed; the next sweep retries it")
    finally:
        with suppress(redis.exceptions.LockNotOwnedError):
            lock.release()
    if report != SweepReport():
        log.info("janitor: %s", report)
        store.metrics.record_janitor(asdict(report))
    return report


def redo_handoffs(store: JobStore, report: SweepReport) -> None:
    for kind, job_id in store.handoffs_due(now() - store.settings.handoff_grace_seconds):
        job = store.get(job_id)
        if job is not None and kind == "start" and job.status is JobStatus.queued and job.started_at is None:
            # Never started: its chain was not published (or so narrowly before its creator died that a
            # second chain only repeats idempotent stages).
            log.warning("janitor: queueing job %s, created %.0f s ago but never queued", job_id,
                        now() - job.created_at)
            store.start(job_id, job.spec.queue_priority)
            report.started += 1
        elif job is not None and kind == "finished":
            log.warning("janitor: queueing the end event of job %s (%s)", job_id, job.status)
            if store.announce_finished(job_id):
                report.announced += 1
        else:  # running or ended already, or expired
            store.drop_handoff(kind, job_id)
            report.settled += 1


def abort_expired_uploads(store: JobStore, storage: Storage, report: SweepReport) -> None:
    if not isinstance(storage, S3Storage):  # presigned uploads need S3
        return
    for upload_id, s3_upload_id in store.assets.expired_uploads(now()):
        storage.abort_multipart(keys.upload(upload_id), s3_upload_id)
        store.assets.forget_upload(upload_id, s3_upload_id)
        report.uploads_aborted += 1


def delete_job(job_id: str, tenant: str, store: JobStore, storage: Storage) -> int:
    """An ended job's files, record, index entries and webhook messages (expired, or deleted now). Returns
    how many files were deleted."""
    deleted = storage.delete_tree(keys.job_files(job_id))  # first: if this fails, the job is there to retry
    Deliveries(store.r, store.settings).forget(job_id)
    store.purge(job_id, tenant)
    return deleted


def purge_expired_jobs(store: JobStore, storage: Storage, report: SweepReport) -> None:
    for job_id, tenant in store.expired_jobs(now()):
        report.files_deleted += delete_job(job_id, tenant, store, storage)
        report.jobs_purged += 1


def purge_expired_batches(store: JobStore, storage: Storage, report: SweepReport) -> None:
    batches = BatchStore(store)
    expired, manifests = batches.expired(now())
    for batch_id, tenant in expired:
        report.files_deleted += storage.delete_tree(keys.batch_files(batch_id))  # first: a failure leaves it due
        batches.purge(batch_id, tenant)
        report.batches_purged += 1
    for manifest_id, tenant in manifests:
        storage.delete(keys.manifest(manifest_id))
        batches.forget_manifest(manifest_id, tenant)
        report.manifests_deleted += 1


def delete_requested_batches(store: JobStore, storage: Storage, report: SweepReport) -> None:
    batches = BatchStore(store)
    deadline = time.monotonic() + store.settings.janitor_seconds / 2  # well within the sweep's lock
    for batch_id, tenant in batches.deletions():
        if not _delete_batch_jobs(batches, batch_id, tenant, storage, report, deadline):
            continue  # a job still running, or out of time: the next sweep goes on
        report.files_deleted += storage.delete_tree(keys.batch_files(batch_id))
        Deliveries(store.r, store.settings).forget(batch_id)
        batches.forget(batch_id, tenant)
        report.batches_deleted += 1
        log.info("janitor: deleted batch %s of %s", batch_id, tenant)


def _delete_batch_jobs(batches: BatchStore, batch_id: str, tenant: str, storage: Storage, report: SweepReport,
                       deadline: float) -> bool:
    """Delete the batch's jobs, a page at a time, until none is left (True) or time is up (False); every
    sweep deletes at least one page."""
    store = batches.jobs
    while jobs := batches.some_jobs(batch_id, 200):
        ended = {line: job_id for line, job_id in jobs.items() if store.is_final(job_id)}
        for job_id in set(jobs.values()) - set(ended.values()):
            store.cancel(job_id)  # an ended batch has none, short of a lost end event
        for job_id in ended.values():
            report.files_deleted += delete_job(job_id, tenant, store, storage)
        if ended:
            batches.drop_jobs(batch_id, ended)
        report.jobs_purged += len(ended)
        if len(ended) < len(jobs) or time.monotonic() > deadline:
            return False
    return True


def delete_unused_assets(store: JobStore, storage: Storage, report: SweepReport) -> None:
    ttl = store.settings.asset_ttl_seconds
    if not ttl:
        return
    unused = store.assets.unused(now() - ttl)
    in_use = store.active_inputs() if unused else {}
    for asset in unused:
        if asset.id in in_use:  # by a job older than the TTL: wait for its end
            continue
        delete_asset(asset, store, storage)
        log.info("janitor: deleted asset %s of %s, unused for %.0f days", asset.id, asset.tenant, ttl / 86400)
        report.assets_deleted += 1
