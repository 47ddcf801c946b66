"""The light, I/O-bound tasks of the `webhooks` queue (a thread-pool worker, so one slow receiver does not
hold up the others):

  webhooks.deliver        one signed delivery attempt (lipdub.service.webhooks)
  events.job_finished     a job reached succeeded/failed/canceled: its delivery, its webhook, its batch's
                          bookkeeping and the release of the tenant's next batch items (lipdub.service.job_end)
  batches.expand          validate a batch manifest, fetch URL inputs, group items by source, queue one
                          dub.prep_source per unprepared source
  batches.source_ready    a source's prep finished: release (or fail) the items waiting for it
  batches.source_failed   the prep itself crashed: fail the items waiting for it
  batches.settle          cancel / finish a batch (after POST /v1/batches/{id}/cancel, and when items end)
  janitor.sweep           redo hand-offs a dead process cut off, abort expired uploads, delete expired jobs'
                          files (lipdub.service.janitor); sent every janitor_seconds by the scheduler this
                          worker embeds (processes.webhooks)

Each task looks up what it needs, calls one function and lets Celery record the outcome: the batch steps
are lipdub.service.batch_runner's and a job's end lipdub.service.job_end's (tested without Celery). Payloads carry the job or batch exactly as the
API returns it (lipdub.service.public.JobPublic, BatchStore.public).
"""

from __future__ import annotations

import logging
from typing import Any

import redis

from lipdub.errors import TransientError
from lipdub.service import janitor, webhooks
from lipdub.service.batch_runner import BatchRunner
from lipdub.service.celery_app import app
from lipdub.service.job_end import job_ended
from lipdub.service.limits import BATCH_PRIORITY
from lipdub.service.manifest import Item
from lipdub.service.processes import WEBHOOKS_QUEUE
from lipdub.service.status import get_store
from lipdub.service.storage import get_storage

log = logging.getLogger(__name__)

__all__ = ["app", "webhooks"]

# Every task here is safe to run twice (stable webhook ids, batch counts kept per job id), so it is
# acknowledged late and retried when Redis or storage hiccups.
_TASK: dict[str, Any] = {"acks_late": True, "reject_on_worker_lost": True, "ignore_result": True,
                         "autoretry_for": (TransientError, ConnectionError, redis.RedisError),
                         "retry_backoff": 2, "retry_backoff_max": 120, "max_retries": 8}


def runner() -> BatchRunner:
    return BatchRunner(get_store(), get_storage())


# --- job events --------------------------------------------------------------------------------------
@app.task(name="events.job_finished", **_TASK)
def job_finished(job_id: str) -> None:
    """Everything that follows a job's final state (lipdub.service.job_end)."""
    job_ended(job_id, get_store(), get_storage())


# --- batches -----------------------------------------------------------------------------------------
@app.task(name="batches.expand", **_TASK)
def expand(batch_id: str) -> None:
    """Validate the whole manifest, then queue its items (the API returned long before)."""
    runner().expand(batch_id, queue_prep)


def queue_prep(batch_id: str, source: str, item: Item) -> None:
    """Prep once per source (and face choice) into the prep cache; its end releases or fails the items
    waiting for it."""
    args = (item.video.sha256, item.options.model_dump(mode="json")["target_face"])  # JSON: a Celery message
    app.signature("dub.prep_source", args=args, priority=BATCH_PRIORITY).apply_async(
        link=app.signature("batches.source_ready", args=(batch_id, source), queue=WEBHOOKS_QUEUE),
        link_error=app.signature("batches.source_failed", args=(batch_id, source), immutable=True,
                                 queue=WEBHOOKS_QUEUE))


@app.task(name="batches.source_ready", **_TASK)
def source_ready(result: dict[str, Any], batch_id: str, source: str) -> None:
    """The prep of one source finished: release its items, or fail them with the gate's code."""
    runner().source_ready(batch_id, source, result)


@app.task(name="batches.source_failed", **_TASK)
def source_failed(batch_id: str, source: str) -> None:
    runner().source_failed(batch_id, source)


@app.task(name="batches.settle", **_TASK)
def settle_task(batch_id: str) -> None:
    runner().settle_and_pump(batch_id)


@app.task(name="janitor.sweep", ignore_result=True, acks_late=False)
def sweep() -> None:
    """The janitor's periodic pass (lipdub.service.janitor); not retried: the next one comes shortly."""
    janitor.sweep(get_store(), get_storage())
