"""Job status in Redis, read and written only through `JobStore`.

Keys (all under the configured Redis database):
  job:{id}                  hash: one per job (status, stage, timings, error, outputs, cache, plan, ...)
  jobs:status:{status}      set of job ids per status (for /metrics)
  tenant:{tenant}:jobs      sorted set of the tenant's job ids by creation time (listing, pagination)
  idem:{tenant}:{key}       Idempotency-Key → request hash + job id, expiring
  asset:{id}                hash: an uploaded asset (tenant, sha256, size, media)
  asset:holders:{sha256}    set of the asset ids (of any tenant) whose bytes are stored at assets/{sha256}
  tenant:{tenant}:assets    sorted set of the tenant's asset ids by upload time (listing)
  assets:used               sorted set of asset ids by when a job last named them (or they were uploaded)
  prep:{source}:v{version}  the prep cache pointer: summary of prep artifacts stored for that source
  prep:keys:{sha256}        set of the prep pointer keys of those bytes (any face choice or prep version)
  stats:stage:{stage}       hash: sum and count of stage durations (for /metrics)

Celery's own result backend is used only for chord bookkeeping; nothing here depends on it.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, NamedTuple

import redis

from lipdub.config import Settings, get_settings
from lipdub.errors import ErrorCode, TransientError
from lipdub.jobs import InputRef, JobSpec, JobStatus, Stage
from lipdub.service import events

# Share of the whole job each stage accounts for in `progress` (rough CPU-time shares on this machine).
STAGE_WEIGHTS = {Stage.probe: 0.02, Stage.prep: 0.35, Stage.audio: 0.03, Stage.render: 0.5,
                 Stage.mux: 0.08, Stage.finalize: 0.02}

# Atomic status transition: final jobs never change; status sets and the version follow every write.
_TRANSITION = """
local job = KEYS[1]
local cur = redis.call('HGET', job, 'status')
if not cur then return false end
if cur == 'succeeded' or cur == 'failed' or cur == 'canceled' then return cur end
local new = ARGV[2]
if new ~= '' and new ~= cur then
  redis.call('SREM', 'jobs:status:' .. cur, ARGV[1])
  redis.call('SADD', 'jobs:status:' .. new, ARGV[1])
  redis.call('HSET', job, 'status', new)
end
for i = 3, #ARGV, 2 do redis.call('HSET', job, ARGV[i], ARGV[i + 1]) end
redis.call('HINCRBY', job, 'version', 1)
if new == 'succeeded' or new == 'failed' or new == 'canceled' then
  -- Hand-offs in the same step (see JobStore.start/_finished): the end event is owed, a start no longer.
  redis.call('ZREM', 'outbox', 'start:' .. ARGV[1])
  redis.call('ZADD', 'outbox', redis.call('TIME')[1], 'finished:' .. ARGV[1])
end
return 'ok'
"""

# One write to a job's hash only while the job exists: a task still running when its (canceled) job is
# deleted must not bring back a partial record without its TTL.
_IF_EXISTS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
return redis.call(ARGV[1], KEYS[1], unpack(ARGV, 2))
"""

# Hand-offs owed to Celery, `{start|finished}:{job id}` scored by when they became owed. Each is written in
# the same Redis step as the state that owes it and removed once its message is published, so one cut off
# by a dying process is found and redone by the janitor (lipdub.service.janitor).
OUTBOX = "outbox"
# Jobs by when their record expires, `{job id}:{tenant}`: the janitor deletes their files and index entries.
EXPIRING = "jobs:expiring"
# Presigned multipart uploads not completed, `{upload id}:{S3 upload id}` scored by when their record expires.
OPEN_UPLOADS = "uploads:open"
# Asset ids scored by when a job last named them, or they were last uploaded: retention (asset_ttl_seconds).
ASSETS_USED = "assets:used"


def now() -> float:
    return round(time.time(), 3)


class Cursor(NamedTuple):
    """Where a page of a newest-first listing ended: the last item's creation time and id (ties in time are
    common: a batch creates its jobs within the same millisecond)."""

    score: float
    id: str

    @classmethod
    def parse(cls, text: str) -> Cursor:
        """`{created_at}:{id}` as a page returned it; ValueError for anything else."""
        score, sep, item_id = text.partition(":")
        value = float(score.strip())
        if not (sep and item_id and math.isfinite(value)):
            raise ValueError(f"malformed cursor {text!r}")
        return cls(value, item_id)

    def __str__(self) -> str:
        return f"{self.score!r}:{self.id}"


def newest_first(r: redis.Redis, index: str, after: Cursor | None = None, top: float | str = "+inf",
                 bottom: float | str = "-inf", chunk: int = 50) -> Iterator[str]:
    """The ids of a sorted-set index by descending score, and within a score by descending id (Redis's
    order), starting just after `after`."""
    if after is not None:
        top = after.score
    offset = 0
    while True:
        found = r.zrevrangebyscore(index, top, bottom, start=offset, num=chunk, withscores=True)
        if not found:
            return
        offset += len(found)
        for item_id, score in found:
            if after is not None and score == after.score and item_id >= after.id:
                continue  # the previous page's, up to its last item
            yield item_id


@dataclass(frozen=True)
class JobState:
    id: str
    tenant: str
    status: JobStatus
    stage: Stage | None
    progress: float
    created_at: float
    started_at: float | None
    finished_at: float | None
    timings: dict[str, float]
    error: dict[str, Any] | None
    outputs: dict[str, str]
    cache: dict[str, bool]
    spec: JobSpec  # the accepted request: inputs (asset ids + sha256), options, metadata, ...
    report: dict[str, Any] | None
    n_frames: int | None
    chunks: int | None
    chunks_done: int
    chunk_frames: int | None
    passed_through: int
    version: int
    batch: str | None = None
    rate: str = "25"  # the output's frame rate, fixed by the plan (the source's own, or 25)
    delivery: dict[str, Any] | None = None  # the upload to the job's delivery_url (lipdub.service.delivery)
    attempts: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_hash(cls, raw: dict[str, str]) -> JobState:
        timings: dict[str, float] = {}
        for stage in Stage:
            start, end = raw.get(f"t:{stage}:start"), raw.get(f"t:{stage}:end")
            if start and end:
                timings[stage] = round(float(end) - float(start), 3)
        if raw.get("started_at"):
            timings["queued"] = round(float(raw["started_at"]) - float(raw["created_at"]), 3)
        status = JobStatus(raw["status"])
        progress = 1.0 if status == JobStatus.succeeded else round(
            sum(w * float(raw.get(f"p:{s}", 0.0)) for s, w in STAGE_WEIGHTS.items()), 3)

        def opt_float(name: str) -> float | None:
            return float(raw[name]) if raw.get(name) else None

        return cls(
            id=raw["id"], tenant=raw["tenant"], status=status,
            stage=Stage(raw["stage"]) if raw.get("stage") else None, progress=progress,
            created_at=float(raw["created_at"]), started_at=opt_float("started_at"),
            finished_at=opt_float("finished_at"), timings=timings,
            error=json.loads(raw["error"]) if raw.get("error") else None,
            outputs=json.loads(raw.get("outputs", "{}")), cache=json.loads(raw.get("cache", "{}")),
            spec=JobSpec.model_validate_json(raw["spec"]), report=json.loads(raw["report"]) if raw.get("report") else None,
            n_frames=int(raw["n_frames"]) if raw.get("n_frames") else None,
            chunks=int(raw["chunks"]) if raw.get("chunks") else None,
            chunks_done=int(raw.get("chunks_done", 0)),
            chunk_frames=int(raw["chunk_frames"]) if raw.get("chunk_frames") else None,
            passed_through=sum(int(v) for k, v in raw.items() if k.startswith("passed:")),
            version=int(raw.get("version", 0)),
            batch=raw.get("batch") or None,
            rate=raw.get("rate") or "25",
            delivery=json.loads(raw["delivery"]) if raw.get("delivery") else None,
            attempts={k.removeprefix("starts:"): int(v) for k, v in raw.items() if k.startswith("starts:")})


@dataclass(frozen=True)
class Asset:
    id: str
    tenant: str
    sha256: str
    size: int
    media: dict[str, Any]
    created_at: float


class JobStore:
    """Verbs over job records; every status change goes through here."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.r = client
        self.settings = settings
        self._transition = client.register_script(_TRANSITION)
        self._if_exists = client.register_script(_IF_EXISTS)

    @classmethod
    def from_settings(cls, settings: Settings) -> JobStore:
        return cls(redis.Redis.from_url(settings.redis_url, decode_responses=True, socket_timeout=10,
                                        socket_connect_timeout=5, health_check_interval=30), settings)

    def ping(self) -> None:
        try:
            self.r.ping()
        except redis.RedisError as exc:
            raise TransientError(ErrorCode.storage_unavailable, f"Redis: {exc}") from exc

    # --- jobs -------------------------------------------------------------------------------------
    def create(self, tenant: str, spec: JobSpec, batch: str | None = None,
               job_id: str | None = None, idempotency_key: str | None = None) -> JobState:
        job_id = job_id or f"job_{uuid.uuid4().hex}"
        created = now()
        key = f"job:{job_id}"
        pipe = self.r.pipeline()
        pipe.hset(key, mapping={"id": job_id, "tenant": tenant, "status": JobStatus.queued,
                                "created_at": created, "spec": spec.model_dump_json(), "version": 0,
                                "batch": batch or "", "idempotency_key": idempotency_key or ""})
        pipe.expire(key, self.settings.job_ttl_seconds)
        pipe.sadd(f"jobs:status:{JobStatus.queued}", job_id)
        pipe.zadd(f"tenant:{tenant}:jobs", {job_id: created})
        pipe.zadd(OUTBOX, {f"start:{job_id}": created})
        pipe.zadd(EXPIRING, {f"{job_id}:{tenant}": created + self.settings.job_ttl_seconds})
        self.mark_assets_used([ref.asset_id for ref in (spec.video, spec.audio) if ref.asset_id is not None],
                              created, pipe)  # URL inputs count once downloaded: put_asset
        pipe.execute()
        state = self.get(job_id)
        assert state is not None
        return state

    def start(self, job_id: str, priority: int | None = None) -> None:
        """Queue the job's pipeline (raises when the broker refuses). Its `start` hand-off, owed since
        create, is settled only once the chain is published: a caller that dies in between leaves it for
        the janitor, so a created job is never left queued forever."""
        from lipdub import pipeline  # lazily: the pipeline module imports the stages

        pipeline.start_job(job_id, priority)
        self.r.zrem(OUTBOX, f"start:{job_id}")

    def get(self, job_id: str) -> JobState | None:
        raw = self.r.hgetall(f"job:{job_id}")
        return JobState.from_hash(raw) if raw else None

    def get_for_tenant(self, tenant: str, job_id: str) -> JobState | None:
        """The job, or None when it does not exist or belongs to another tenant (both read as 404)."""
        state = self.get(job_id)
        return state if state is not None and state.tenant == tenant else None

    def page(self, tenant: str, *, status: JobStatus | None = None, batch: str | None = None,
             created_after: float | None = None, created_before: float | None = None,
             cursor: str | None = None, limit: int = 20) -> tuple[list[JobState], str | None]:
        """Newest first. The cursor is `{created_at}:{job_id}` of the last job of the previous page
        (Cursor.parse raises ValueError for a malformed one)."""
        index = f"tenant:{tenant}:jobs"
        out: list[JobState] = []
        expired: list[str] = []
        for job_id in newest_first(self.r, index, Cursor.parse(cursor) if cursor else None,
                                   created_before if created_before is not None else "+inf",
                                   created_after if created_after is not None else "-inf", chunk=limit * 2):
            state = self.get(job_id)
            if state is None:
                expired.append(job_id)
            elif (not status or state.status == status) and (not batch or state.batch == batch):
                out.append(state)
                if len(out) == limit:
                    break
        if expired:  # records gone with their TTL: drop them from the index (after the walk, not during it)
            self.r.zrem(index, *expired)
        return out, (str(Cursor(out[-1].created_at, out[-1].id)) if len(out) == limit else None)

    def _apply(self, job_id: str, status: JobStatus | None, fields: dict[str, Any]) -> bool:
        """Write `fields` (and the status) unless the job is final; True when applied."""
        args: list[Any] = [job_id, status.value if status else ""]
        for name, value in fields.items():
            args += [name, value]
        return bool(self._transition(keys=[f"job:{job_id}"], args=args) == "ok")

    def stage_started(self, job_id: str, stage: Stage, attempt_key: str | None = None) -> int | None:
        """Mark `stage` running. Returns how many starts of this task (attempt_key, default the stage) for
        the job are unfinished, counting this one (stage_left ends a start; only starts lost with their
        worker stay counted), or None when the job is final (canceled): skip the work."""
        ts = now()
        if not self._apply(job_id, JobStatus.running, {"stage": stage}):
            return None
        key = f"job:{job_id}"
        self.r.hsetnx(key, "started_at", ts)
        self.r.hsetnx(key, f"t:{stage}:start", ts)
        return int(self.r.hincrby(key, f"starts:{attempt_key or stage}", 1))

    def stage_left(self, job_id: str, attempt_key: str) -> None:
        """The task started under `attempt_key` returned (or raised): it was not lost with its worker."""
        self._if_exists(keys=[f"job:{job_id}"], args=["HINCRBY", f"starts:{attempt_key}", -1])

    def stage_stopped(self, job_id: str, stage: Stage) -> None:
        """A stage ended with an error: record its end time (its timing), not completion."""
        self._if_exists(keys=[f"job:{job_id}"], args=["HSET", f"t:{stage}:end", now()])

    def stage_progress(self, job_id: str, stage: Stage, fraction: float) -> None:
        self._apply(job_id, None, {f"p:{stage}": round(min(1.0, max(0.0, fraction)), 4)})

    def stage_finished(self, job_id: str, stage: Stage, busy_seconds: float | None = None) -> None:
        self._apply(job_id, None, {f"t:{stage}:end": now(), f"p:{stage}": 1.0})
        if busy_seconds is not None:
            self.record_busy(stage, busy_seconds)

    def record_busy(self, stage: Stage, seconds: float) -> None:
        """Add one task's working time to the stage's totals (exported by /metrics)."""
        pipe = self.r.pipeline()
        pipe.hincrbyfloat(f"stats:stage:{stage}", "sum", seconds)
        pipe.hincrby(f"stats:stage:{stage}", "count", 1)
        pipe.execute()

    def set_plan(self, job_id: str, n_frames: int, chunks: int, chunk_frames: int, rate: str) -> None:
        self._apply(job_id, None, {"n_frames": n_frames, "chunks": chunks, "chunk_frames": chunk_frames,
                                   "rate": rate})

    def set_delivery(self, job_id: str, record: dict[str, Any]) -> None:
        """Record the upload of a succeeded job's result to its delivery_url (a final job's record changes only
        here: delivery follows success)."""
        self._if_exists(keys=[f"job:{job_id}"], args=["HSET", "delivery", json.dumps(record)])

    def render_queued(self, job_id: str) -> bool:
        """Whether the job's render chunks were queued (by an earlier delivery of dub.plan)."""
        return bool(self.r.hget(f"job:{job_id}", "render_queued"))

    def mark_render_queued(self, job_id: str) -> None:
        self._apply(job_id, None, {"render_queued": 1})

    def chunk_rendered(self, job_id: str, index: int, passed_through: int) -> None:
        """Record how many frames render chunk `index` passed through (no usable face), before its part is
        stored: a redelivered chunk that finds the part stored renders nothing and keeps this count."""
        self._apply(job_id, None, {f"passed:{index}": passed_through})

    def mark_chunk(self, job_id: str, index: int) -> int:
        """Count render chunk `index` as done (a re-run chunk counts once); returns chunks done."""
        pipe = self.r.pipeline()
        pipe.sadd(f"job:{job_id}:chunks", index)
        pipe.expire(f"job:{job_id}:chunks", self.settings.job_ttl_seconds)
        pipe.scard(f"job:{job_id}:chunks")
        pipe.hget(f"job:{job_id}", "chunks")
        *_, done, total = pipe.execute()
        fields: dict[str, Any] = {"chunks_done": int(done)}
        if total:
            fields[f"p:{Stage.render}"] = round(int(done) / int(total), 4)
        self._apply(job_id, None, fields)
        return int(done)

    def set_inputs(self, job_id: str, video: InputRef | None = None, audio: InputRef | None = None) -> None:
        """Record the assets that inputs given by URL were downloaded into (spec.video / spec.audio)."""
        raw = self.r.hget(f"job:{job_id}", "spec")
        if not raw:
            return
        spec = JobSpec.model_validate_json(raw)
        changed = {name: ref for name, ref in (("video", video), ("audio", audio)) if ref is not None}
        self._apply(job_id, None, {"spec": spec.model_copy(update=changed).model_dump_json()})

    def set_sync(self, job_id: str, estimate: dict[str, Any]) -> None:
        """The mux task's sync estimate of the result, for the report finalize writes."""
        self._apply(job_id, None, {"sync": json.dumps(estimate)})

    def sync(self, job_id: str) -> dict[str, Any] | None:
        raw = self.r.hget(f"job:{job_id}", "sync")
        return json.loads(raw) if raw else None

    def set_cache(self, job_id: str, **hits: bool) -> None:
        raw = self.r.hget(f"job:{job_id}", "cache")
        cache = json.loads(raw) if raw else {}
        cache.update(hits)
        self._apply(job_id, None, {"cache": json.dumps(cache)})

    def succeed(self, job_id: str, outputs: dict[str, str], report: dict[str, Any]) -> bool:
        return self._finished(job_id, self._apply(job_id, JobStatus.succeeded, {
            "finished_at": now(), "outputs": json.dumps(outputs), "report": json.dumps(report),
            "stage": Stage.finalize}))

    def fail(self, job_id: str, code: str, message: str, retryable: bool = False) -> bool:
        error = {"code": code, "message": message, "retryable": retryable}
        return self._finished(job_id, self._apply(job_id, JobStatus.failed,
                                                  {"finished_at": now(), "error": json.dumps(error)}))

    def cancel(self, job_id: str) -> bool:
        """Queued jobs never start; running ones stop at their next task or render chunk."""
        return self._finished(job_id, self._apply(job_id, JobStatus.canceled, {"finished_at": now()}))

    def _finished(self, job_id: str, applied: bool) -> bool:
        """The job just became final: the webhooks worker sends its webhook and does its batch's
        bookkeeping (lipdub.service.events). The transition owed this `finished` hand-off; it is settled
        once the event is queued, and redone by the janitor when the broker was down or the caller died."""
        if applied:
            self.announce_finished(job_id)
        return applied

    def announce_finished(self, job_id: str) -> bool:
        """Queue the job's end event; True (and the hand-off settled) when the broker took it."""
        if events.job_finished(job_id):
            self.r.zrem(OUTBOX, f"finished:{job_id}")
            return True
        return False

    def handoffs_due(self, before: float, limit: int = 500) -> list[tuple[str, str]]:
        """Hand-offs owed since before `before`: (kind, job id), oldest first."""
        return self.due(OUTBOX, before, limit)

    def due(self, index: str, before: float, limit: int) -> list[tuple[str, str]]:
        """Members `{a}:{b}` of a sorted set scored up to `before`, oldest first, as (a, b)."""
        due = self.r.zrangebyscore(index, "-inf", before, start=0, num=limit)
        return [(a, b) for a, _, b in (member.partition(":") for member in due)]

    def drop_handoff(self, kind: str, job_id: str) -> None:
        self.r.zrem(OUTBOX, f"{kind}:{job_id}")

    def handoffs_owed(self) -> tuple[int, float | None]:
        """How many hand-offs are owed, and since when the oldest (None if none): for /metrics."""
        oldest = self.r.zrange(OUTBOX, 0, 0, withscores=True)
        return int(self.r.zcard(OUTBOX)), (float(oldest[0][1]) if oldest else None)

    def record_janitor(self, counts: dict[str, int]) -> None:
        """Add one sweep's actions to the totals /metrics exports."""
        pipe = self.r.pipeline()
        for action, n in counts.items():
            if n:
                pipe.hincrby("stats:janitor", action, n)
        pipe.execute()

    def janitor_stats(self) -> dict[str, int]:
        return {action: int(n) for action, n in self.r.hgetall("stats:janitor").items()}

    # --- retention --------------------------------------------------------------------------------
    def expired_jobs(self, before: float, limit: int = 200) -> list[tuple[str, str]]:
        """Jobs whose records expired (job_ttl_seconds after creation) before `before`: (job id, tenant)."""
        return self.due(EXPIRING, before, limit)

    def purge(self, job_id: str, tenant: str) -> None:
        """Forget a job everywhere it is indexed: expired (its record is gone already) or deleted now. The
        Idempotency-Key that made it is freed, so repeating that request makes a new job."""
        idempotency_key = self.r.hget(f"job:{job_id}", "idempotency_key")
        if idempotency_key:
            self.release_idempotency(tenant, idempotency_key, job_id)
        pipe = self.r.pipeline()
        pipe.delete(f"job:{job_id}", f"job:{job_id}:chunks")
        for status in JobStatus:
            pipe.srem(f"jobs:status:{status}", job_id)
        pipe.zrem(f"tenant:{tenant}:jobs", job_id)
        pipe.zrem(OUTBOX, f"start:{job_id}", f"finished:{job_id}")
        pipe.zrem(EXPIRING, f"{job_id}:{tenant}")
        pipe.execute()

    def is_final(self, job_id: str) -> bool:
        status = self.r.hget(f"job:{job_id}", "status")
        return status is None or JobStatus(status).is_final

    def version(self, job_id: str) -> int:
        return int(self.r.hget(f"job:{job_id}", "version") or 0)

    # --- idempotency ----------------------------------------------------------------------------
    def claim_idempotency(self, tenant: str, key: str, body_hash: str, job_id: str) -> tuple[str, bool]:
        """Claim `key` for a new job. Returns (job id, created): the claimed id and True, or the id of the
        job an earlier request with this key made and False. Raises ValueError for the same key with a
        different body."""
        name = f"idem:{tenant}:{key}"
        record = json.dumps({"body": body_hash, "job": job_id})
        if self.r.set(name, record, nx=True, ex=self.settings.idempotency_ttl_seconds):
            return job_id, True
        existing = json.loads(self.r.get(name) or "{}")
        if not existing:  # expired between SET and GET: claim again
            return self.claim_idempotency(tenant, key, body_hash, job_id)
        if existing["body"] != body_hash:
            raise ValueError("the Idempotency-Key was used with a different request body")
        return str(existing["job"]), False

    def release_idempotency(self, tenant: str, key: str, job_id: str) -> None:
        """Forget `key` if it still names `job_id` (a job's or a batch's): what the request made failed at
        once (bad input, the queue down), and a retry with the same key must make a new one rather than get
        the failed one back or wait on the claim."""
        name = f"idem:{tenant}:{key}"
        raw = self.r.get(name)
        if raw and json.loads(raw).get("job") == job_id:
            self.r.delete(name)

    @contextmanager
    def admission(self, tenant: str) -> Iterator[None]:
        """One admission at a time per tenant: a quota's count and the job it admits are one step, so
        concurrent requests can't all see room under the cap. Held for a few Redis calls."""
        lock = self.r.lock(f"tenant:{tenant}:admission", timeout=30, blocking_timeout=30)
        if not lock.acquire():
            raise TransientError(ErrorCode.storage_unavailable, "job admission is busy; retry later")
        try:
            yield
        finally:
            # Held past its timeout, the lock may be another request's by now: leave it to that one.
            with suppress(redis.exceptions.LockNotOwnedError):
                lock.release()

    def idempotent_job(self, tenant: str, key: str, body_hash: str) -> str | None:
        """The job id an earlier request with `key` claimed, or None if the key is unused. Raises
        ValueError for the same key with a different body. Claims nothing (claim_idempotency does)."""
        raw = self.r.get(f"idem:{tenant}:{key}")
        if not raw:
            return None
        existing = json.loads(raw)
        if existing["body"] != body_hash:
            raise ValueError("the Idempotency-Key was used with a different request body")
        return str(existing["job"])

    # --- assets -----------------------------------------------------------------------------------
    def put_asset(self, tenant: str, sha256: str, size: int, media: dict[str, Any]) -> Asset:
        """Assets are content-addressed per tenant: uploading the same bytes again returns the same id."""
        import hashlib

        asset_id = "ast_" + hashlib.sha256(f"{tenant}:{sha256}".encode()).hexdigest()[:32]
        created = now()
        pipe = self.r.pipeline()
        pipe.hset(f"asset:{asset_id}", mapping={"id": asset_id, "tenant": tenant, "sha256": sha256,
                                                "size": size, "media": json.dumps(media), "created_at": created})
        pipe.sadd(f"asset:holders:{sha256}", asset_id)
        pipe.zadd(f"tenant:{tenant}:assets", {asset_id: created})
        pipe.zadd(ASSETS_USED, {asset_id: created})
        pipe.execute()
        return Asset(asset_id, tenant, sha256, size, media, created)

    def mark_assets_used(self, asset_ids: list[str], when: float, pipe: redis.client.Pipeline | None = None) -> None:
        """Retention counts from the last use: a job made on the assets, or a batch that will make some."""
        if asset_ids:
            (pipe or self.r).zadd(ASSETS_USED, dict.fromkeys(asset_ids, when))

    def unused_assets(self, since: float, limit: int = 200) -> list[Asset]:
        """Assets no job has named (nor upload refreshed) since `since`, least recently used first; ids whose
        record is gone leave the index."""
        found: list[Asset] = []
        gone: list[str] = []
        for asset_id in self.r.zrangebyscore(ASSETS_USED, "-inf", since, start=0, num=limit):
            asset = self.asset_by_id(asset_id)
            if asset is None:
                gone.append(asset_id)
            else:
                found.append(asset)
        if gone:
            self.r.zrem(ASSETS_USED, *gone)
        return found

    def asset_by_id(self, asset_id: str) -> Asset | None:
        raw = self.r.hget(f"asset:{asset_id}", "tenant")
        return self.get_asset(raw, asset_id) if raw else None

    def page_assets(self, tenant: str, cursor: str | None = None, limit: int = 20) -> tuple[list[Asset], str | None]:
        """Newest upload first; the cursor is `{created_at}:{asset_id}` of the last asset of the previous page
        (Cursor.parse raises ValueError for a malformed one)."""
        out: list[Asset] = []
        for asset_id in newest_first(self.r, f"tenant:{tenant}:assets", Cursor.parse(cursor) if cursor else None,
                                     chunk=limit * 2):
            asset = self.get_asset(tenant, asset_id)
            if asset is not None:
                out.append(asset)
                if len(out) == limit:
                    break
        return out, (str(Cursor(out[-1].created_at, out[-1].id)) if len(out) == limit else None)

    @contextmanager
    def holding_content(self, sha256: str, wait: float = 120.0) -> Iterator[None]:
        """Held while the stored bytes of `sha256` are written or deleted, so that a tenant deleting an asset
        never removes bytes another tenant's upload of the same content has just counted on. Raises
        TransientError (retry later) after `wait` seconds of another holder."""
        lock = self.r.lock(f"lock:asset:{sha256}", timeout=3600)
        if not lock.acquire(blocking_timeout=wait):
            raise TransientError(ErrorCode.storage_unavailable,
                                 "another upload or deletion of the same content is in progress; retry later")
        try:
            yield
        finally:
            with suppress(redis.exceptions.LockError):  # held past its timeout: nothing left to release
                lock.release()

    def content_held(self, sha256: str) -> bool:
        """Whether any asset still holds these bytes (none: their last asset was deleted)."""
        return bool(self.r.scard(f"asset:holders:{sha256}"))

    def contents_held(self, sha256s: Iterable[str]) -> set[str]:
        """Those of `sha256s` that some asset still holds."""
        wanted = sorted(set(sha256s))
        pipe = self.r.pipeline()
        for sha in wanted:
            pipe.exists(f"asset:holders:{sha}")
        return {sha for sha, held in zip(wanted, pipe.execute(), strict=True) if held}

    def other_holders(self, asset: Asset) -> list[str]:
        """The other assets (of any tenant) stored on the same bytes as `asset`."""
        return sorted(h for h in self.r.smembers(f"asset:holders:{asset.sha256}")
                      if h != asset.id and self.r.exists(f"asset:{h}"))

    def drop_prep_pointers(self, sha256: str) -> None:
        """Forget every prep pointer (and cached rejection) of these bytes, under any face choice or prep
        version: no job then looks for their artifacts."""
        index = f"prep:keys:{sha256}"
        self.r.delete(*self.r.smembers(index), index)

    def release_content(self, asset: Asset) -> None:
        """The asset no longer holds its bytes (it is being deleted)."""
        self.r.srem(f"asset:holders:{asset.sha256}", asset.id)

    def forget_asset(self, asset: Asset) -> None:
        pipe = self.r.pipeline()
        pipe.delete(f"asset:{asset.id}")
        pipe.zrem(f"tenant:{asset.tenant}:assets", asset.id)
        pipe.zrem(ASSETS_USED, asset.id)
        pipe.execute()

    def active_inputs(self) -> dict[str, list[str]]:
        """Asset id → the queued or running jobs that have it as an input (asset ids are per tenant). One
        pipelined read of every active job, bounded by the tenants' concurrency limits."""
        active = sorted(self.r.sunion(f"jobs:status:{JobStatus.queued}", f"jobs:status:{JobStatus.running}"))
        pipe = self.r.pipeline()
        for job_id in active:
            pipe.hget(f"job:{job_id}", "spec")
        using: dict[str, list[str]] = {}
        for job_id, raw in zip(active, pipe.execute(), strict=True):
            spec = JobSpec.model_validate_json(raw) if raw else None
            for asset_id in {ref.asset_id for ref in (spec.video, spec.audio)} - {None} if spec else ():
                using.setdefault(asset_id, []).append(job_id)
        return using

    def get_asset(self, tenant: str, asset_id: str) -> Asset | None:
        raw = self.r.hgetall(f"asset:{asset_id}")
        if not raw or raw["tenant"] != tenant:
            return None
        return Asset(raw["id"], raw["tenant"], raw["sha256"], int(raw["size"]), json.loads(raw["media"]),
                     float(raw["created_at"]))

    def put_upload(self, upload_id: str, tenant: str, s3_upload_id: str, size: int, ttl: int) -> None:
        """A presigned multipart upload in progress. Its record outlives its URLs (ttl) by as much again,
        for parts sent just before they expired; then the janitor aborts it (`uploads:open`)."""
        name = f"upload:{upload_id}"
        pipe = self.r.pipeline()
        pipe.hset(name, mapping={"tenant": tenant, "s3_upload_id": s3_upload_id, "size": size})
        pipe.expire(name, ttl * 2)
        pipe.zadd(OPEN_UPLOADS, {f"{upload_id}:{s3_upload_id}": now() + ttl * 2})
        pipe.execute()

    def get_upload(self, tenant: str, upload_id: str) -> dict[str, str] | None:
        raw = self.r.hgetall(f"upload:{upload_id}")
        return raw if raw and raw.get("tenant") == tenant else None

    def delete_upload(self, upload_id: str) -> None:
        s3_upload_id = self.r.hget(f"upload:{upload_id}", "s3_upload_id")
        pipe = self.r.pipeline()
        pipe.delete(f"upload:{upload_id}")
        if s3_upload_id:
            pipe.zrem(OPEN_UPLOADS, f"{upload_id}:{s3_upload_id}")
        pipe.execute()

    def expired_uploads(self, before: float, limit: int = 500) -> list[tuple[str, str]]:
        """Uploads never completed whose records expired before `before`: (upload id, S3 upload id)."""
        return self.due(OPEN_UPLOADS, before, limit)

    def forget_upload(self, upload_id: str, s3_upload_id: str) -> None:
        self.r.zrem(OPEN_UPLOADS, f"{upload_id}:{s3_upload_id}")

    # --- prep cache pointers ----------------------------------------------------------------------
    def prep_pointer(self, source: str) -> dict[str, Any] | None:
        """`source`: lipdub.prep.cache.source_key (the video's SHA-256, plus the face choice if any), under
        this deployment's prep version (code and prep settings: lipdub.prep.cache.prep_version)."""
        raw = self.r.get(self._prep_key(source))
        return json.loads(raw) if raw else None

    def set_prep_pointer(self, source: str, record: dict[str, Any]) -> None:
        key = self._prep_key(source)
        pipe = self.r.pipeline()
        pipe.set(key, json.dumps(record))
        pipe.sadd(f"prep:keys:{source[:64]}", key)  # every pointer of the bytes, for drop_prep_pointers
        pipe.execute()

    def _prep_key(self, source: str) -> str:
        from lipdub.prep.cache import prep_version

        return f"prep:{source}:v{prep_version(self.settings)}"

    # --- metrics ----------------------------------------------------------------------------------
    def status_counts(self) -> dict[str, int]:
        pipe = self.r.pipeline()
        for status in JobStatus:
            pipe.scard(f"jobs:status:{status}")
        return dict(zip([s.value for s in JobStatus], (int(n) for n in pipe.execute())))

    def stage_stats(self) -> dict[str, tuple[float, int]]:
        out = {}
        for stage in Stage:
            raw = self.r.hgetall(f"stats:stage:{stage}")
            if raw:
                out[stage.value] = (float(raw.get("sum", 0)), int(raw.get("count", 0)))
        return out

    def record_frames(self, n_frames: int) -> None:
        """Count the output frames of a finished job (the denominator of `stage_frame_stats`)."""
        self.r.incrby("stats:frames", n_frames)

    def stage_frame_stats(self) -> dict[str, float]:
        """Rough working seconds per output frame of each stage, over all jobs so far (for ETAs)."""
        frames = int(self.r.get("stats:frames") or 0)
        if frames == 0:
            return {}
        return {stage: total / frames for stage, (total, _) in self.stage_stats().items()}

    def queue_depth(self, queue: str) -> int:
        return int(self.r.llen(queue))


@lru_cache(maxsize=1)
def get_store() -> JobStore:
    return JobStore.from_settings(get_settings())
