"""What follows a job's final state (the `events.job_finished` task of the webhooks worker).

In this order: a succeeded job with a `delivery_url` gets its result uploaded there (lipdub.service.delivery),
so its webhook can say whether the file arrived; then the job's webhook, carrying the job as the API shows
it; then, for a batch's job, the batch counts it, settles and releases the tenant's next items. Safe to run
twice (a redelivered event): the delivery is recorded once, the webhook message has a stable id and is
stored once, and a batch counts each job once.
"""

from __future__ import annotations

from lipdub.jobs import JobStatus
from lipdub.service import webhooks
from lipdub.service.batch_runner import BatchRunner
from lipdub.service.delivery import deliver
from lipdub.service.public import JobPublic
from lipdub.service.status import JobStore
from lipdub.service.storage import Storage
from lipdub.service.webhooks import EventType

JOB_EVENTS = {JobStatus.succeeded: EventType.job_succeeded, JobStatus.failed: EventType.job_failed,
              JobStatus.canceled: EventType.job_canceled}


def job_ended(job_id: str, store: JobStore, storage: Storage) -> None:
    job = store.get(job_id)
    if job is None or not job.status.is_final:
        return
    if job.status == JobStatus.succeeded and job.spec.delivery_url and job.delivery is None:
        store.set_delivery(job.id, deliver(job, store, storage))
        job = store.get(job_id)
        if job is None:  # deleted meanwhile
            return
    if job.spec.webhook_url:
        public = JobPublic.of(job, store.settings.api_url).model_dump(mode="json")
        webhooks.emit(store, job.tenant, job.id, JOB_EVENTS[job.status], job.spec.webhook_url, public,
                      msg_id=f"msg_{job.id.removeprefix('job_')}_{job.status}")
    if job.batch:
        BatchRunner(store, storage).job_ended(job)
