"""Hand-offs to the webhooks worker (services/webhooks_worker), addressed by task name.

JobStore calls `job_finished` when a job becomes succeeded, failed or canceled, wherever that happens
(finalize, a failed task, a cancel in the API): the worker then sends the job's webhook, counts the item
of its batch and releases the tenant's next batch items. The API uses `expand_batch` and `settle_batch`.
"""

from __future__ import annotations

import logging

from lipdub.service.celery_app import app
from lipdub.service.processes import WEBHOOKS_QUEUE

log = logging.getLogger(__name__)


def _send(name: str, *args: str) -> None:
    # No publish retries: a broker that is down fails fast instead of stalling the caller.
    app.send_task(name, args=args, queue=WEBHOOKS_QUEUE, retry=False)


def job_finished(job_id: str) -> bool:
    """True when queued. Never raises: the job's state is already stored, and JobStore keeps the event
    owed until it is queued (the janitor sends it again)."""
    try:
        _send("events.job_finished", job_id)
    except Exception as exc:  # noqa: BLE001 - the broker is down; see the docstring
        log.warning("could not queue events.job_finished for %s (the janitor will): %s", job_id, exc)
        return False
    return True


def expand_batch(batch_id: str) -> None:
    _send("batches.expand", batch_id)


def settle_batch(batch_id: str) -> None:
    _send("batches.settle", batch_id)


def sweep_soon() -> None:
    """Run a janitor sweep now rather than at the next interval (a deletion was asked for). Best effort:
    the periodic sweep does it anyway."""
    try:
        _send("janitor.sweep")
    except Exception as exc:  # noqa: BLE001 - the broker is down; see the docstring
        log.warning("could not queue janitor.sweep: %s", exc)
