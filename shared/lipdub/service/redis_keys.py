"""Every Redis key the service uses, and nothing else builds one (tests/service/test_redis_keys.py checks).

The layout is what a deployed Redis holds: change a name here and existing records are lost. Lua scripts
build no key either: they get their keys as KEYS, and where a key follows from a value the script reads
(a job's current status, the next ready batch) the prefix or suffix below as ARGV.

Jobs (lipdub.service.status.JobStore):
  job:{id}                  hash: one per job (status, stage, timings, error, outputs, cache, plan, ...)
  job:{id}:chunks           set of the render chunks done
  jobs:status:{status}      set of job ids per status (for /metrics)
  tenant:{t}:jobs           sorted set of the tenant's job ids by creation time (listing, pagination)
  tenant:{t}:admission      lock: one job admission at a time per tenant
  outbox                    sorted set `{start|finished}:{job id}`: hand-offs owed to Celery
  jobs:expiring             sorted set `{job id}:{tenant}` by when the record expires (retention)
  idem:{t}:{key}            Idempotency-Key → request hash + job (or batch) id, expiring
Assets (lipdub.service.assets_store.AssetStore):
  asset:{id}                hash: an uploaded asset (tenant, sha256, size, media)
  asset:holders:{sha256}    set of the asset ids (of any tenant) whose bytes are stored at assets/{sha256}
  tenant:{t}:assets         sorted set of the tenant's asset ids by upload time (listing)
  assets:used               sorted set of asset ids by when a job last named them (or they were uploaded)
  lock:asset:{sha256}       lock: writing or deleting those bytes
  upload:{id}               hash: a presigned multipart upload in progress, expiring
  uploads:open              sorted set `{upload id}:{S3 upload id}` by when the record expires
  prep:{source}:v{version}  the prep cache pointer: summary of prep artifacts stored for that source
  prep:keys:{sha256}        set of the prep pointer keys of those bytes (any face choice or prep version)
Metrics (lipdub.service.metrics.Metrics):
  stats:stage:{stage}       hash: sum and count of stage durations
  stats:frames              output frames of finished jobs
  stats:janitor             hash: the janitor's actions
Tenancy (lipdub.service.limits, lipdub.service.auth):
  rate:{key digest}         GCRA state of an API key's request rate
  tenant:{t}:quota          hash: the tenant's quota overrides
  apikey:{digest}           hash: an API key's tenant, creation time and hint
  tenant:{t}:keys           set of the tenant's API key digests
Batches (lipdub.service.batches.BatchStore, lipdub.service.batch_runner):
  batch:{id}                 hash: the batch record (status, timestamps, counts, errors, ...)
  batch:{id}:ready           list of item JSON ready to become jobs, in manifest order
  batch:{id}:wait:{source}   list of item JSON waiting for their source's prep (Item.source)
  batch:{id}:jobs            hash: manifest line → job id (and :job_items, job id → [line, custom_id])
  batch:{id}:out / :err      lists of output / error JSONL rows, written as items finish
  batch:{id}:final / :releasing   items counted final once / items taken for release, not yet jobs
  tenant:{t}:batches         sorted set of the tenant's batch ids by creation time
  tenant:{t}:batches:ready   list of the tenant's batch ids with ready items (round robin)
  tenant:{t}:releasing       set of the tenant's batches with items taken for release
  tenant:{t}:batch_active    set of the tenant's released batch jobs not yet seen final
  tenant:{t}:pump            lock: one release pump per tenant
  bman:{id}                  hash: an uploaded manifest (tenant, lines, size), expiring
  bman:{id}:batches          set of the batches made from it
  batches:expiring / manifests:expiring / batches:deleting   sorted sets `{id}:{tenant}` (retention, DELETE)
Webhooks (lipdub.service.webhooks):
  wh:secrets:{t}            JSON list of the tenant's signing secrets
  wh:msg:{id}               hash: a message (tenant, subject, type, url, body, status, run, attempts, ...)
  wh:msg:{id}:attempts      list of JSON attempt records (the delivery log)
  wh:subject:{subject}      list of message ids of a job or batch, oldest first
  wh:claim:{id}:{run}:{n}   short-lived claim of one delivery attempt
janitor                     lock: one sweep at a time

Celery's broker queues (lipdub.service.processes) and its result backend keep their own names.
"""

from __future__ import annotations

# --- jobs ------------------------------------------------------------------------------------------
JOBS_BY_STATUS = "jobs:status:"  # + status; the prefix also reaches the transition script as ARGV
OUTBOX = "outbox"
EXPIRING = "jobs:expiring"


def job(job_id: str) -> str:
    return f"job:{job_id}"


def job_chunks(job_id: str) -> str:
    return f"job:{job_id}:chunks"


def jobs_by_status(status: str) -> str:
    return JOBS_BY_STATUS + status


def tenant_jobs(tenant: str) -> str:
    return f"tenant:{tenant}:jobs"


def admission_lock(tenant: str) -> str:
    return f"tenant:{tenant}:admission"


def idempotency(tenant: str, key: str) -> str:
    return f"idem:{tenant}:{key}"


def batch_request(idempotency_key: str) -> str:
    """The Idempotency-Key of a batch request as stored (idempotency(tenant, ·)), apart from job requests'."""
    return f"batch:{idempotency_key}"


# --- assets, uploads, prep pointers ----------------------------------------------------------------
ASSETS_USED = "assets:used"
OPEN_UPLOADS = "uploads:open"


def asset(asset_id: str) -> str:
    return f"asset:{asset_id}"


def asset_holders(sha256: str) -> str:
    return f"asset:holders:{sha256}"


def tenant_assets(tenant: str) -> str:
    return f"tenant:{tenant}:assets"


def content_lock(sha256: str) -> str:
    return f"lock:asset:{sha256}"


def upload(upload_id: str) -> str:
    return f"upload:{upload_id}"


def prep_pointer(source: str, version: str) -> str:
    return f"prep:{source}:v{version}"


def prep_keys(sha256: str) -> str:
    return f"prep:keys:{sha256}"


# --- metrics ---------------------------------------------------------------------------------------
FRAMES = "stats:frames"
JANITOR_STATS = "stats:janitor"


def stage_stats(stage: str) -> str:
    return f"stats:stage:{stage}"


# --- tenancy: rate, quotas, API keys ---------------------------------------------------------------
def rate(key_id: str) -> str:
    return f"rate:{key_id}"


def tenant_quota(tenant: str) -> str:
    return f"tenant:{tenant}:quota"


def api_key(digest: str) -> str:
    return f"apikey:{digest}"


def tenant_keys(tenant: str) -> str:
    return f"tenant:{tenant}:keys"


# --- batches ---------------------------------------------------------------------------------------
BATCH = "batch:"  # + batch id; with the suffixes below, reaches the next-ready script as ARGV
READY = ":ready"
RELEASING = ":releasing"
BATCHES_EXPIRING = "batches:expiring"
MANIFESTS_EXPIRING = "manifests:expiring"
BATCHES_DELETING = "batches:deleting"


def batch(batch_id: str) -> str:
    return BATCH + batch_id


def batch_ready(batch_id: str) -> str:
    return batch(batch_id) + READY


def batch_releasing(batch_id: str) -> str:
    return batch(batch_id) + RELEASING


def batch_wait(batch_id: str, source: str) -> str:
    return f"{batch(batch_id)}:wait:{source}"


def batch_waits(batch_id: str) -> str:
    """The SCAN pattern of every batch_wait list of the batch."""
    return batch_wait(batch_id, "*")


def batch_jobs(batch_id: str) -> str:
    return f"{batch(batch_id)}:jobs"


def batch_job_items(batch_id: str) -> str:
    return f"{batch(batch_id)}:job_items"


def batch_rows(batch_id: str, which: str) -> str:
    """Output ('out') or error ('err') rows."""
    return f"{batch(batch_id)}:{which}"


def batch_final(batch_id: str) -> str:
    return f"{batch(batch_id)}:final"


def batch_keys(batch_id: str) -> list[str]:
    """Every key of a batch but its wait lists (batch_waits)."""
    return [batch(batch_id), batch_ready(batch_id), batch_jobs(batch_id), batch_job_items(batch_id),
            batch_rows(batch_id, "out"), batch_rows(batch_id, "err"), batch_final(batch_id),
            batch_releasing(batch_id)]


def tenant_batches(tenant: str) -> str:
    return f"tenant:{tenant}:batches"


def tenant_ready_batches(tenant: str) -> str:
    return f"tenant:{tenant}:batches:ready"


def tenant_releasing(tenant: str) -> str:
    return f"tenant:{tenant}:releasing"


def tenant_batch_active(tenant: str) -> str:
    return f"tenant:{tenant}:batch_active"


def pump_lock(tenant: str) -> str:
    return f"tenant:{tenant}:pump"


def manifest(manifest_id: str) -> str:
    return f"bman:{manifest_id}"


def manifest_batches(manifest_id: str) -> str:
    return f"bman:{manifest_id}:batches"


# --- webhooks --------------------------------------------------------------------------------------
def webhook_secrets(tenant: str) -> str:
    return f"wh:secrets:{tenant}"


def webhook_message(msg_id: str) -> str:
    return f"wh:msg:{msg_id}"


def webhook_attempts(msg_id: str) -> str:
    return f"wh:msg:{msg_id}:attempts"


def webhook_subject(subject: str) -> str:
    return f"wh:subject:{subject}"


def webhook_claim(msg_id: str, run: int, n: int) -> str:
    return f"wh:claim:{msg_id}:{run}:{n}"


# --- the janitor -----------------------------------------------------------------------------------
JANITOR_LOCK = "janitor"
