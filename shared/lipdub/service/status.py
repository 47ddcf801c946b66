"""Job records in Redis, read and written only through `JobStore`; every status change goes through it.

`get_store()` is the one entry point to the service's Redis state: the job verbs are JobStore's own, and
it holds the other stores on the same connection (`assets`: assets, uploads and prep pointers;
`idempotency`; `metrics`). Key names: lipdub.service.redis_keys.

Celery's own result backend is used only for chord bookkeeping; nothing here depends on it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import redis

from lipdub.config import Settings, get_settings
from lipdub.errors import ErrorCode, TransientError
from lipdub.jobs import InputRef, JobSpec, JobStatus, Stage
from lipdub.service import chains, events, redis_keys
from lipdub.service.assets_store import AssetStore
from lipdub.service.idempotency import Idempotency
from lipdub.service.indexes import Cursor, due, newest_first, now, pair
from lipdub.service.metrics import Metrics

# Share of the whole job each stage accounts for in `progress` (rough CPU-time shares on this machine).
STAGE_WEIGHTS = {Stage.probe: 0.02, Stage.prep: 0.35, Stage.audio: 0.03, Stage.render: 0.5,
                 Stage.mux: 0.08, Stage.finalize: 0.02}

# Atomic status transition: final jobs never change; status sets and the version follow every write.
# KEYS: the job, the outbox; ARGV: job id, new status ('' for none), the status sets' prefix, the job's
# start and finished hand-offs (outbox members), then field/value pairs.
_TRANSITION = """
local job = KEYS[1]
local cur = redis.call('HGET', job, 'status')
if not cur then return false end
if cur == 'succeeded' or cur == 'failed' or cur == 'canceled' then return cur end
local new = ARGV[2]
if new ~= '' and new ~= cur then
  redis.call('SREM', ARGV[3] .. cur, ARGV[1])
  redis.call('SADD', ARGV[3] .. new, ARGV[1])
  redis.call('HSET', job, 'status', new)
end
for i = 6, #ARGV, 2 do redis.call('HSET', job, ARGV[i], ARGV[i + 1]) end
redis.call('HINCRBY', job, 'version', 1)
if new == 'succeeded' or new == 'failed' or new == 'canceled' then
  -- Hand-offs in the same step (see JobStore.start/_finished): the end event is owed, a start no longer.
  redis.call('ZREM', KEYS[2], ARGV[4])
  redis.call('ZADD', KEYS[2], redis.call('TIME')[1], ARGV[5])
end
return 'ok'
"""

# One write to a job's hash only while the job exists: a task still running when its (canceled) job is
# deleted must not bring back a partial record without its TTL.
_IF_EXISTS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
return redis.call(ARGV[1], KEYS[1], unpack(ARGV, 2))
"""

# The outbox's hand-offs owed to Celery, `{start|finished}:{job id}` scored by when they became owed. Each is
# written in the same Redis step as the state that owes it and removed once its message is published, so
# one cut off by a dying process is found and redone by the janitor (lipdub.service.janitor).
START, FINISHED = "start", "finished"


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
    unmatched: int = 0  # frames drawn without a mouth of the target's shape (all chunks)
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
            spec=JobSpec.model_validate_json(raw["spec"]),
            report=json.loads(raw["report"]) if raw.get("report") else None,
            n_frames=int(raw["n_frames"]) if raw.get("n_frames") else None,
            chunks=int(raw["chunks"]) if raw.get("chunks") else None,
            chunks_done=int(raw.get("chunks_done", 0)),
            chunk_frames=int(raw["chunk_frames"]) if raw.get("chunk_frames") else None,
            passed_through=sum(int(v) for k, v in raw.items() if k.startswith("passed:")),
            unmatched=sum(int(v) for k, v in raw.items() if k.startswith("unmatched:")),
            version=int(raw.get("version", 0)),
            batch=raw.get("batch") or None,
            rate=raw.get("rate") or "25",
            delivery=json.loads(raw["delivery"]) if raw.get("delivery") else None,
            attempts={k.removeprefix("starts:"): int(v) for k, v in raw.items() if k.startswith("starts:")})


class JobStore:
    """Verbs over job records; every status change goes through here. Also the way to the other stores on
    the same connection (`assets`, `idempotency`, `metrics`)."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.r = client
        self.settings = settings
        self.assets = AssetStore(client, settings)
        self.idempotency = Idempotency(client, settings)
        self.metrics = Metrics(client)
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
        key = redis_keys.job(job_id)
        pipe = self.r.pipeline()
        pipe.hset(key, mapping={"id": job_id, "tenant": tenant, "status": JobStatus.queued,
                                "created_at": created, "spec": spec.model_dump_json(), "version": 0,
                                "batch": batch or "", "idempotency_key": idempotency_key or ""})
        pipe.expire(key, self.settings.job_ttl_seconds)
        pipe.sadd(redis_keys.jobs_by_status(JobStatus.queued), job_id)
        pipe.zadd(redis_keys.tenant_jobs(tenant), {job_id: created})
        pipe.zadd(redis_keys.OUTBOX, {pair(START, job_id): created})
        pipe.zadd(redis_keys.EXPIRING, {pair(job_id, tenant): created + self.settings.job_ttl_seconds})
        self.assets.mark_used([ref.asset_id for ref in (spec.video, spec.audio) if ref.asset_id is not None],
                              created, pipe)  # URL inputs count once downloaded: put_asset
        pipe.execute()
        state = self.get(job_id)
        assert state is not None
        return state

    def start(self, job_id: str, priority: int | None = None) -> None:
        """Queue the job's pipeline (raises when the broker refuses). Its `start` hand-off, owed since
        create, is settled only once the chain is published: a caller that dies in between leaves it for
        the janitor, so a created job is never left queued forever."""
        chains.start_job(job_id, priority)
        self.r.zrem(redis_keys.OUTBOX, pair(START, job_id))

    def get(self, job_id: str) -> JobState | None:
        raw = self.r.hgetall(redis_keys.job(job_id))
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
        index = redis_keys.tenant_jobs(tenant)
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
        args: list[Any] = [job_id, status.value if status else "", redis_keys.JOBS_BY_STATUS,
                           pair(START, job_id), pair(FINISHED, job_id)]
        for name, value in fields.items():
            args += [name, value]
        return bool(self._transition(keys=[redis_keys.job(job_id), redis_keys.OUTBOX], args=args) == "ok")

    def stage_started(self, job_id: str, stage: Stage, attempt_key: str | None = None) -> int | None:
        """Mark `stage` running. Returns how many starts of this task (attempt_key, default the stage) for
        the job are unfinished, counting this one (stage_left ends a start; only starts lost with their
        worker stay counted), or None when the job is final (canceled): skip the work."""
        ts = now()
        if not self._apply(job_id, JobStatus.running, {"stage": stage}):
            return None
        key = redis_keys.job(job_id)
        self.r.hsetnx(key, "started_at", ts)
        self.r.hsetnx(key, f"t:{stage}:start", ts)
        return int(self.r.hincrby(key, f"starts:{attempt_key or stage}", 1))

    def stage_left(self, job_id: str, attempt_key: str) -> None:
        """The task started under `attempt_key` returned (or raised): it was not lost with its worker."""
        self._if_exists(keys=[redis_keys.job(job_id)], args=["HINCRBY", f"starts:{attempt_key}", -1])

    def stage_stopped(self, job_id: str, stage: Stage) -> None:
        """A stage ended with an error: record its end time (its timing), not completion."""
        self._if_exists(keys=[redis_keys.job(job_id)], args=["HSET", f"t:{stage}:end", now()])

    def stage_progress(self, job_id: str, stage: Stage, fraction: float) -> None:
        self._apply(job_id, None, {f"p:{stage}": round(min(1.0, max(0.0, fraction)), 4)})

    def stage_finished(self, job_id: str, stage: Stage, busy_seconds: float | None = None) -> None:
        self._apply(job_id, None, {f"t:{stage}:end": now(), f"p:{stage}": 1.0})
        if busy_seconds is not None:
            self.metrics.record_busy(stage, busy_seconds)

    def set_plan(self, job_id: str, n_frames: int, chunks: int, chunk_frames: int, rate: str) -> None:
        self._apply(job_id, None, {"n_frames": n_frames, "chunks": chunks, "chunk_frames": chunk_frames,
                                   "rate": rate})

    def set_delivery(self, job_id: str, record: dict[str, Any]) -> None:
        """Record the upload of a succeeded job's result to its delivery_url (a final job's record changes only
        here: delivery follows success)."""
        self._if_exists(keys=[redis_keys.job(job_id)], args=["HSET", "delivery", json.dumps(record)])

    def render_queued(self, job_id: str) -> bool:
        """Whether the job's render chunks were queued (by an earlier delivery of dub.plan)."""
        return bool(self.r.hget(redis_keys.job(job_id), "render_queued"))

    def mark_render_queued(self, job_id: str) -> None:
        self._apply(job_id, None, {"render_queued": 1})

    def chunk_rendered(self, job_id: str, index: int, passed_through: int, unmatched: int = 0) -> None:
        """Record how many frames render chunk `index` passed through (no usable face) and drew without a
        mouth of the target's shape, before its part is stored: a redelivered chunk that finds the part
        stored renders nothing and keeps these counts."""
        self._apply(job_id, None, {f"passed:{index}": passed_through, f"unmatched:{index}": unmatched})

    def mark_chunk(self, job_id: str, index: int) -> int:
        """Count render chunk `index` as done (a re-run chunk counts once); returns chunks done."""
        chunks = redis_keys.job_chunks(job_id)
        pipe = self.r.pipeline()
        pipe.sadd(chunks, index)
        pipe.expire(chunks, self.settings.job_ttl_seconds)
        pipe.scard(chunks)
        pipe.hget(redis_keys.job(job_id), "chunks")
        *_, done, total = pipe.execute()
        fields: dict[str, Any] = {"chunks_done": int(done)}
        if total:
            fields[f"p:{Stage.render}"] = round(int(done) / int(total), 4)
        self._apply(job_id, None, fields)
        return int(done)

    def set_inputs(self, job_id: str, video: InputRef | None = None, audio: InputRef | None = None) -> None:
        """Record the assets that inputs given by URL were downloaded into (spec.video / spec.audio)."""
        raw = self.r.hget(redis_keys.job(job_id), "spec")
        if not raw:
            return
        spec = JobSpec.model_validate_json(raw)
        changed = {name: ref for name, ref in (("video", video), ("audio", audio)) if ref is not None}
        self._apply(job_id, None, {"spec": spec.model_copy(update=changed).model_dump_json()})

    def set_sync(self, job_id: str, estimate: dict[str, Any]) -> None:
        """The mux task's sync estimate of the result, for the report finalize writes."""
        self._apply(job_id, None, {"sync": json.dumps(estimate)})

    def sync(self, job_id: str) -> dict[str, Any] | None:
        raw = self.r.hget(redis_keys.job(job_id), "sync")
        return json.loads(raw) if raw else None

    def set_cache(self, job_id: str, **hits: bool) -> None:
        raw = self.r.hget(redis_keys.job(job_id), "cache")
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
            self.r.zrem(redis_keys.OUTBOX, pair(FINISHED, job_id))
            return True
        return False

    def handoffs_due(self, before: float, limit: int = 500) -> list[tuple[str, str]]:
        """Hand-offs owed since before `before`: (kind, job id), oldest first."""
        return due(self.r, redis_keys.OUTBOX, before, limit)

    def drop_handoff(self, kind: str, job_id: str) -> None:
        self.r.zrem(redis_keys.OUTBOX, pair(kind, job_id))

    def handoffs_owed(self) -> tuple[int, float | None]:
        """How many hand-offs are owed, and since when the oldest (None if none): for /metrics."""
        oldest = self.r.zrange(redis_keys.OUTBOX, 0, 0, withscores=True)
        return int(self.r.zcard(redis_keys.OUTBOX)), (float(oldest[0][1]) if oldest else None)

    # --- retention --------------------------------------------------------------------------------
    def expired_jobs(self, before: float, limit: int = 200) -> list[tuple[str, str]]:
        """Jobs whose records expired (job_ttl_seconds after creation) before `before`: (job id, tenant)."""
        return due(self.r, redis_keys.EXPIRING, before, limit)

    def purge(self, job_id: str, tenant: str) -> None:
        """Forget a job everywhere it is indexed: expired (its record is gone already) or deleted now. The
        Idempotency-Key that made it is freed, so repeating that request makes a new job."""
        idempotency_key = self.r.hget(redis_keys.job(job_id), "idempotency_key")
        if idempotency_key:
            self.idempotency.release(tenant, idempotency_key, job_id)
        pipe = self.r.pipeline()
        pipe.delete(redis_keys.job(job_id), redis_keys.job_chunks(job_id))
        for status in JobStatus:
            pipe.srem(redis_keys.jobs_by_status(status), job_id)
        pipe.zrem(redis_keys.tenant_jobs(tenant), job_id)
        pipe.zrem(redis_keys.OUTBOX, pair(START, job_id), pair(FINISHED, job_id))
        pipe.zrem(redis_keys.EXPIRING, pair(job_id, tenant))
        pipe.execute()

    def is_final(self, job_id: str) -> bool:
        status = self.r.hget(redis_keys.job(job_id), "status")
        return status is None or JobStatus(status).is_final

    def version(self, job_id: str) -> int:
        return int(self.r.hget(redis_keys.job(job_id), "version") or 0)

    @contextmanager
    def admission(self, tenant: str) -> Iterator[None]:
        """One admission at a time per tenant: a quota's count and the job it admits are one step, so
        concurrent requests can't all see room under the cap. Held for a few Redis calls."""
        lock = self.r.lock(redis_keys.admission_lock(tenant), timeout=30, blocking_timeout=30)
        if not lock.acquire():
            raise TransientError(ErrorCode.storage_unavailable, "job admission is busy; retry later")
        try:
            yield
        finally:
            # Held past its timeout, the lock may be another request's by now: leave it to that one.
            with suppress(redis.exceptions.LockNotOwnedError):
                lock.release()

    def active_inputs(self) -> dict[str, list[str]]:
        """Asset id → the queued or running jobs that have it as an input (asset ids are per tenant). One
        pipelined read of every active job, bounded by the tenants' concurrency limits."""
        active = sorted(self.r.sunion(redis_keys.jobs_by_status(JobStatus.queued),
                                      redis_keys.jobs_by_status(JobStatus.running)))
        pipe = self.r.pipeline()
        for job_id in active:
            pipe.hget(redis_keys.job(job_id), "spec")
        using: dict[str, list[str]] = {}
        for job_id, raw in zip(active, pipe.execute(), strict=True):
            if not raw:  # ended and deleted meanwhile
                continue
            spec = JobSpec.model_validate_json(raw)
            for asset_id in {ref.asset_id for ref in (spec.video, spec.audio) if ref.asset_id is not None}:
                using.setdefault(asset_id, []).append(job_id)
        return using


@lru_cache(maxsize=1)
def get_store() -> JobStore:
    return JobStore.from_settings(get_settings())
