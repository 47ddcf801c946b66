"""Catalog batches: a JSONL manifest of (source video, dub audio) pairs, run as jobs with source dedup.

Life of a batch (the OpenAI Batch status enum):
  validating   the API stored the manifest and returned; a background task validates every line
               (per-line errors {line, code, message}; any error fails the whole batch, nothing runs)
  in_progress  items wait in the batch and are released as jobs at most `batch_running_per_tenant` at a
               time per tenant, on the low-priority lane (lipdub.service.limits)
  finalizing   every item is final: the output and error JSONL files are written
  completed    (individual items may still have failed: read the error file)
  failed       the manifest was invalid, or the batch could not be run
  cancelling → cancelled   waiting items are dropped, released jobs are canceled (a running render stops
               at its next chunk)

Source dedup: items are grouped by source (Item.source: the SHA-256 of their video, and their face choice).
A source with no prep in the cache gets one `dub.prep_source` (the prep stage, on the prep queue); its items are released only after it, so all of them
hit the prep cache and N languages of one source run prep once. A source that fails the prep gate fails
its items with the gate's code without running them.

Redis keys (lipdub.service.redis_keys, "Batches"): the batch record, its ready list and per-source waiting
lists of item JSON, manifest line → job id, the output and error rows as items finish, the items counted
final and those taken for release; per tenant its batches by creation time, the batches with ready items
(round robin) and its released batch jobs not yet seen final; uploaded manifests and the batches made from
them (DELETE waits until they have read it); and the retention and deletion indexes `{id}:{tenant}` (the
janitor deletes what DELETE asked for: lipdub.service.janitor.delete_requested_batches).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis

from lipdub.jobs import JobStatus
from lipdub.service import redis_keys
from lipdub.service.indexes import Cursor, due, newest_first, now, pair
from lipdub.service.manifest import MAX_REPORTED_ERRORS, Item, LineError
from lipdub.service.status import JobStore


class BatchStatus(StrEnum):
    validating = "validating"
    in_progress = "in_progress"
    finalizing = "finalizing"
    completed = "completed"
    failed = "failed"
    cancelling = "cancelling"
    cancelled = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in (BatchStatus.completed, BatchStatus.failed, BatchStatus.cancelled)


@dataclass(frozen=True)
class BatchState:
    id: str
    tenant: str
    status: BatchStatus
    created_at: float
    timestamps: dict[str, float]  # in_progress_at, finalizing_at, completed_at, failed_at, ...
    total: int
    counts: dict[str, int]  # succeeded, failed, canceled (final items)
    errors: list[dict[str, Any]]
    errors_total: int
    webhook_url: str | None
    metadata: dict[str, str]
    defaults: dict[str, Any]
    manifest: str  # storage key of the manifest JSONL
    output_key: str | None
    error_key: str | None
    sources: int  # distinct source videos
    expanded: bool = False  # validation is over (items queued, or the batch failed)

    @classmethod
    def from_hash(cls, raw: dict[str, str]) -> BatchState:
        stamps = {k: float(v) for k, v in raw.items() if k.endswith("_at") and k != "created_at" and v}
        return cls(id=raw["id"], tenant=raw["tenant"], status=BatchStatus(raw["status"]),
                   created_at=float(raw["created_at"]), timestamps=stamps, total=int(raw.get("total", 0)),
                   counts={k: int(raw.get(f"n:{k}", 0)) for k in ("succeeded", "failed", "canceled")},
                   errors=json.loads(raw.get("errors") or "[]"), errors_total=int(raw.get("errors_total", 0)),
                   webhook_url=raw.get("webhook_url") or None, metadata=json.loads(raw.get("metadata") or "{}"),
                   defaults=json.loads(raw.get("defaults") or "{}"), manifest=raw.get("manifest", ""),
                   output_key=raw.get("output_key") or None, error_key=raw.get("error_key") or None,
                   sources=int(raw.get("sources", 0)), expanded=bool(raw.get("expanded")))

    @property
    def done(self) -> int:
        return sum(self.counts.values())


# Status changes are one atomic script: final batches never change, and only listed moves happen.
_MOVE = """
local cur = redis.call('HGET', KEYS[1], 'status')
if not cur then return false end
for i = 3, #ARGV do
  if ARGV[i] == cur then
    redis.call('HSET', KEYS[1], 'status', ARGV[1], ARGV[1] .. '_at', ARGV[2])
    redis.call('HINCRBY', KEYS[1], 'version', 1)
    return 'ok'
  end
end
return cur
"""

# An item becomes final in one atomic script: counted once however often its job's event comes or its
# task is retried, and a Redis error can't leave it marked as counted without its count and row (the batch
# would never end).
_FINISH = """
if redis.call('SADD', KEYS[3], ARGV[1]) == 0 then return -1 end
redis.call('EXPIRE', KEYS[3], ARGV[4])
redis.call('RPUSH', KEYS[2], ARGV[3])
redis.call('HINCRBY', KEYS[1], 'n:' .. ARGV[2], 1)
redis.call('HINCRBY', KEYS[1], 'version', 1)
local c = redis.call('HMGET', KEYS[1], 'n:succeeded', 'n:failed', 'n:canceled')
return (tonumber(c[1]) or 0) + (tonumber(c[2]) or 0) + (tonumber(c[3]) or 0)
"""

# The next item of a tenant's batches, round robin, taken in one step: it leaves the batch's ready list and
# enters its `releasing` hash (line → item) together, and the batch goes back into the rotation if it has more,
# so an error or a lost worker between taking the item and binding its job loses nothing (pump releases
# what it finds there first). KEYS: the tenant's ready-batches list and its set of batches with releasing
# items; ARGV: the batch keys' prefix and the suffixes of its ready list and releasing hash (redis_keys).
_NEXT_READY = """
for _ = 0, redis.call('LLEN', KEYS[1]) do
  local batch = redis.call('LPOP', KEYS[1])
  if not batch then return false end
  local record = ARGV[1] .. batch
  if redis.call('HGET', record, 'status') == 'in_progress' then
    local raw = redis.call('LPOP', record .. ARGV[2])
    if raw then
      if redis.call('LLEN', record .. ARGV[2]) > 0 then redis.call('RPUSH', KEYS[1], batch) end
      redis.call('HSET', record .. ARGV[3], cjson.decode(raw)['line'], raw)
      redis.call('SADD', KEYS[2], batch)
      return {batch, raw}
    end
  end
end
return false
"""

# Waiting items become ready in one step (a Redis error half way would lose the ones in between).
_MOVE_ALL = """
local n = 0
while true do
  local raw = redis.call('LPOP', KEYS[1])
  if not raw then return n end
  redis.call('RPUSH', KEYS[2], raw)
  n = n + 1
end
"""

_ALLOWED_FROM: dict[BatchStatus, tuple[BatchStatus, ...]] = {
    BatchStatus.in_progress: (BatchStatus.validating,),
    BatchStatus.finalizing: (BatchStatus.in_progress,),
    BatchStatus.completed: (BatchStatus.finalizing,),
    BatchStatus.failed: (BatchStatus.validating, BatchStatus.in_progress, BatchStatus.finalizing),
    BatchStatus.cancelling: (BatchStatus.validating, BatchStatus.in_progress),
    BatchStatus.cancelled: (BatchStatus.cancelling,),
}


class BatchStore:
    """The batch records and their item queues; every batch status change goes through `move`."""

    def __init__(self, store: JobStore) -> None:
        self.jobs = store
        self.r: redis.Redis = store.r
        self.settings = store.settings
        self._move = self.r.register_script(_MOVE)
        self._finish = self.r.register_script(_FINISH)
        self._next_ready = self.r.register_script(_NEXT_READY)
        self._move_all = self.r.register_script(_MOVE_ALL)

    def create(self, tenant: str, manifest_key: str, webhook_url: str | None, metadata: dict[str, str],
               defaults: dict[str, Any], batch_id: str | None = None, idempotency_key: str | None = None) -> BatchState:
        batch_id = batch_id or f"batch_{uuid.uuid4().hex}"
        created = now()
        ttl = self.settings.job_ttl_seconds
        pipe = self.r.pipeline()
        pipe.hset(redis_keys.batch(batch_id), mapping={
            "id": batch_id, "tenant": tenant, "status": BatchStatus.validating, "created_at": created,
            "manifest": manifest_key, "webhook_url": webhook_url or "", "metadata": json.dumps(metadata),
            "defaults": json.dumps(defaults), "version": 0, "idempotency_key": idempotency_key or ""})
        pipe.expire(redis_keys.batch(batch_id), ttl)
        pipe.zadd(redis_keys.tenant_batches(tenant), {batch_id: created})
        pipe.zadd(redis_keys.BATCHES_EXPIRING, {pair(batch_id, tenant): created + ttl})
        pipe.execute()
        state = self.get(batch_id)
        assert state is not None
        return state

    def put_manifest(self, manifest_id: str, tenant: str, lines: int, size: int) -> None:
        ttl = self.settings.job_ttl_seconds
        pipe = self.r.pipeline()
        pipe.hset(redis_keys.manifest(manifest_id), mapping={"tenant": tenant, "lines": lines, "size": size})
        pipe.expire(redis_keys.manifest(manifest_id), ttl)
        pipe.zadd(redis_keys.MANIFESTS_EXPIRING, {pair(manifest_id, tenant): now() + ttl})
        pipe.execute()

    def manifest_tenant(self, manifest_id: str) -> str | None:
        return self.r.hget(redis_keys.manifest(manifest_id), "tenant")

    def use_manifest(self, manifest_id: str, batch_id: str) -> None:
        pipe = self.r.pipeline()
        pipe.sadd(redis_keys.manifest_batches(manifest_id), batch_id)
        pipe.expire(redis_keys.manifest_batches(manifest_id), self.settings.job_ttl_seconds)
        pipe.execute()

    def manifest_readers(self, manifest_id: str) -> list[str]:
        """The batches that have yet to read the manifest (not validated and not ended)."""
        found = (self.get(b) for b in self.r.smembers(redis_keys.manifest_batches(manifest_id)))
        return sorted(b.id for b in found if b is not None and not b.expanded and not b.status.is_final)

    def expired(self, before: float, limit: int = 200) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """(batch id, tenant) of batches and (manifest id, tenant) of uploaded manifests whose records expired
        (job_ttl_seconds after creation) before `before`."""
        return (due(self.r, redis_keys.BATCHES_EXPIRING, before, limit),
                due(self.r, redis_keys.MANIFESTS_EXPIRING, before, limit))

    def purge(self, batch_id: str, tenant: str) -> None:
        """Forget an expired batch in the tenant's listing and the retention index (its own keys expire)."""
        pipe = self.r.pipeline()
        pipe.zrem(redis_keys.tenant_batches(tenant), batch_id)
        pipe.zrem(redis_keys.BATCHES_EXPIRING, pair(batch_id, tenant))
        pipe.execute()

    def forget_manifest(self, manifest_id: str, tenant: str) -> None:
        pipe = self.r.pipeline()
        pipe.delete(redis_keys.manifest(manifest_id), redis_keys.manifest_batches(manifest_id))
        pipe.zrem(redis_keys.MANIFESTS_EXPIRING, pair(manifest_id, tenant))
        pipe.execute()

    # --- deletion (DELETE /v1/batches/{id}) -----------------------------------------------------------
    def request_deletion(self, state: BatchState) -> None:
        """Hide an ended batch at once (get() no longer finds it, the listing drops it) and leave its jobs
        and files to the janitor: a catalog of 50,000 items is too much to delete within a request. The
        Idempotency-Key that made the batch is freed now, so repeating that request makes a new batch."""
        assert state.status.is_final
        idempotency_key = self.r.hget(redis_keys.batch(state.id), "idempotency_key")
        if idempotency_key:
            self.jobs.idempotency.release(state.tenant, idempotency_key, state.id)
        pipe = self.r.pipeline()
        pipe.hset(redis_keys.batch(state.id), "deleting", now())
        pipe.zrem(redis_keys.tenant_batches(state.tenant), state.id)
        pipe.zadd(redis_keys.BATCHES_DELETING, {pair(state.id, state.tenant): now()})
        pipe.execute()

    def deletions(self, limit: int = 100) -> list[tuple[str, str]]:
        """(batch id, tenant) of the batches being deleted, oldest request first."""
        return due(self.r, redis_keys.BATCHES_DELETING, float("inf"), limit)

    def some_jobs(self, batch_id: str, count: int) -> dict[str, str]:
        """About `count` of the batch's jobs still recorded: manifest line → job id."""
        _, found = self.r.hscan(redis_keys.batch_jobs(batch_id), 0, count=count)
        return found

    def drop_jobs(self, batch_id: str, jobs: dict[str, str]) -> None:
        pipe = self.r.pipeline()
        pipe.hdel(redis_keys.batch_jobs(batch_id), *jobs)
        pipe.hdel(redis_keys.batch_job_items(batch_id), *jobs.values())
        pipe.execute()

    def forget(self, batch_id: str, tenant: str) -> None:
        """Every Redis key of a deleted batch, once its jobs are gone, and its index entries."""
        pipe = self.r.pipeline()
        pipe.delete(*redis_keys.batch_keys(batch_id),
                    *self.r.scan_iter(redis_keys.batch_waits(batch_id), count=1000))
        pipe.srem(redis_keys.tenant_releasing(tenant), batch_id)
        pipe.lrem(redis_keys.tenant_ready_batches(tenant), 0, batch_id)
        pipe.zrem(redis_keys.tenant_batches(tenant), batch_id)
        pipe.zrem(redis_keys.BATCHES_EXPIRING, pair(batch_id, tenant))
        pipe.zrem(redis_keys.BATCHES_DELETING, pair(batch_id, tenant))
        pipe.execute()

    def get(self, batch_id: str) -> BatchState | None:
        raw = self.r.hgetall(redis_keys.batch(batch_id))
        return BatchState.from_hash(raw) if raw.get("tenant") and not raw.get("deleting") else None

    def get_for_tenant(self, tenant: str, batch_id: str) -> BatchState | None:
        state = self.get(batch_id)
        return state if state is not None and state.tenant == tenant else None

    def page(self, tenant: str, cursor: str | None = None, limit: int = 20) -> tuple[list[BatchState], str | None]:
        """Newest first; the cursor is `{created_at}:{batch_id}` of the last batch of the previous page
        (Cursor.parse raises ValueError for a malformed one)."""
        out: list[BatchState] = []
        for batch_id in newest_first(self.r, redis_keys.tenant_batches(tenant),
                                     Cursor.parse(cursor) if cursor else None, chunk=limit * 2):
            state = self.get(batch_id)
            if state is not None:
                out.append(state)
                if len(out) == limit:
                    break
        return out, (str(Cursor(out[-1].created_at, out[-1].id)) if len(out) == limit else None)

    def version(self, batch_id: str) -> int:
        return int(self.r.hget(redis_keys.batch(batch_id), "version") or 0)

    def move(self, batch_id: str, to: BatchStatus, **fields: Any) -> bool:
        result = self._move(keys=[redis_keys.batch(batch_id)],
                            args=[to.value, now(), *[s.value for s in _ALLOWED_FROM[to]]])
        if result == "ok" and fields:
            self.r.hset(redis_keys.batch(batch_id), mapping=fields)
        return bool(result == "ok")

    def fail(self, batch_id: str, errors: list[LineError], errors_total: int | None = None) -> bool:
        reported = [e.as_dict() for e in errors[:MAX_REPORTED_ERRORS]]
        return self.move(batch_id, BatchStatus.failed, errors=json.dumps(reported), expanded=1,
                         errors_total=errors_total if errors_total is not None else len(errors))

    def mark_expanded(self, batch_id: str) -> None:
        self.r.hset(redis_keys.batch(batch_id), "expanded", 1)

    # --- items ---------------------------------------------------------------------------------------
    def accept_items(self, batch_id: str, tenant: str, items: list[Item], prepared: Callable[[str], bool],
                     total: int | None = None) -> dict[str, Item]:
        """Queue valid items (inputs resolved to assets, URL inputs downloaded): those whose source is
        prepared are ready, the rest wait per source (Item.source). `total` counts the manifest's items
        including those already failed (a download that failed). Returns the sources that need a prep,
        each with its first item. Moves the batch to in_progress."""
        waiting: dict[str, list[Item]] = {}
        ready: list[Item] = []
        sources: set[str] = set()
        for item in items:
            source = item.source
            sources.add(source)
            if source in waiting or not prepared(source):
                waiting.setdefault(source, []).append(item)
            else:
                ready.append(item)
        ttl = self.settings.job_ttl_seconds
        pipe = self.r.pipeline()
        for start in range(0, len(ready), 1000):
            pipe.rpush(redis_keys.batch_ready(batch_id), *[i.to_json() for i in ready[start:start + 1000]])
        pipe.expire(redis_keys.batch_ready(batch_id), ttl)
        for source, group in waiting.items():
            for start in range(0, len(group), 1000):
                pipe.rpush(redis_keys.batch_wait(batch_id, source),
                           *[i.to_json() for i in group[start:start + 1000]])
            pipe.expire(redis_keys.batch_wait(batch_id, source), ttl)
        pipe.hset(redis_keys.batch(batch_id), mapping={"total": len(items) if total is None else total,
                                                "sources": len(sources), "expanded": 1})
        pipe.execute()
        self.move(batch_id, BatchStatus.in_progress)
        if ready:
            self.r.rpush(redis_keys.tenant_ready_batches(tenant), batch_id)
        return {source: group[0] for source, group in waiting.items()}

    def source_ready(self, batch_id: str, tenant: str, source: str) -> int:
        """The source's prep is cached: its waiting items become ready. Returns how many."""
        moved = int(self._move_all(keys=[redis_keys.batch_wait(batch_id, source),
                                         redis_keys.batch_ready(batch_id)]))
        self.r.expire(redis_keys.batch_ready(batch_id), self.settings.job_ttl_seconds)
        if moved:
            self.r.rpush(redis_keys.tenant_ready_batches(tenant), batch_id)
        return moved

    def drop_waiting(self, batch_id: str, source: str | None, code: str, message: str) -> int:
        """Fail (or cancel, code 'canceled') the items waiting for `source` (None: every ready and waiting
        item). Returns how many."""
        names = [redis_keys.batch_wait(batch_id, source)] if source else \
            [redis_keys.batch_ready(batch_id), *self.r.scan_iter(redis_keys.batch_waits(batch_id), count=1000)]
        dropped = 0
        for name in names:
            while True:
                raws = self.r.lpop(name, 1000)
                if not raws:
                    break
                outcome = "canceled" if code == "canceled" else "failed"
                rows = [json.dumps({"custom_id": item.custom_id, "line": item.line, "job_id": None,
                                    "status": outcome, "error": {"code": code, "message": message}})
                        for item in map(Item.from_json, raws)]
                pipe = self.r.pipeline()  # one round trip per thousand items: a 50,000-item cancel is quick
                pipe.rpush(redis_keys.batch_rows(batch_id, "err"), *rows)
                pipe.hincrby(redis_keys.batch(batch_id), f"n:{outcome}", len(rows))
                pipe.hincrby(redis_keys.batch(batch_id), "version", 1)
                pipe.execute()
                dropped += len(raws)
        return dropped

    def item_finished(self, batch_id: str, line: int, custom_id: str, job_id: str | None, outcome: str,
                      error: dict[str, Any] | None = None, result_url: str | None = None,
                      delivery: dict[str, Any] | None = None) -> int | None:
        """Count one final item (outcome succeeded|failed|canceled) and write its output or error row, once
        per item: its job, or its manifest line when it never had one (a retried expansion fails its bad
        downloads again). Returns how many items are final now, None if this one already was."""
        row: dict[str, Any] = {"custom_id": custom_id, "line": line, "job_id": job_id, "status": outcome}
        if outcome == "succeeded":
            row["result_url"] = result_url
            if delivery is not None:  # the item's delivery_url: whether the file reached it
                row["delivery"] = {k: delivery.get(k) for k in ("status", "url", "error") if delivery.get(k)}
        else:
            row["error"] = error
        rows = redis_keys.batch_rows(batch_id, "out" if outcome == "succeeded" else "err")
        final = int(self._finish(keys=[redis_keys.batch(batch_id), rows, redis_keys.batch_final(batch_id)],
                                 args=[job_id or f"line:{line}", outcome, json.dumps(row),
                                       self.settings.job_ttl_seconds]))
        return None if final < 0 else final

    def job_item_finished(self, job_id: str, batch_id: str, job_status: JobStatus, error: dict[str, Any] | None,
                          result_url: str | None, delivery: dict[str, Any] | None = None) -> bool:
        """Record the final state of a batch job once (events may be delivered twice). True if recorded."""
        item = self.r.hget(redis_keys.batch_job_items(batch_id), job_id)
        line, custom_id = json.loads(item) if item else (0, "")
        outcome = {JobStatus.succeeded: "succeeded", JobStatus.failed: "failed"}.get(job_status, "canceled")
        return self.item_finished(batch_id, line, custom_id, job_id, outcome, error, result_url,
                                  delivery) is not None

    def next_ready(self, tenant: str) -> tuple[str, Item] | None:
        """The next item of the tenant's batches, taking batches in turn (round robin); it stays among the
        batch's releasing items until bind_job (`releasing`)."""
        found = self._next_ready(keys=[redis_keys.tenant_ready_batches(tenant),
                                       redis_keys.tenant_releasing(tenant)],
                                 args=[redis_keys.BATCH, redis_keys.READY, redis_keys.RELEASING])
        return (str(found[0]), Item.from_json(found[1])) if found else None

    def releasing(self, tenant: str) -> list[tuple[str, Item]]:
        """Items taken for release whose job was never bound (an error or a lost worker in between)."""
        out = []
        for batch_id in sorted(self.r.smembers(redis_keys.tenant_releasing(tenant))):
            raws = self.r.hvals(redis_keys.batch_releasing(batch_id))
            if not raws:
                self.r.srem(redis_keys.tenant_releasing(tenant), batch_id)
            out += [(batch_id, Item.from_json(raw)) for raw in raws]
        return out

    def bind_job(self, batch_id: str, tenant: str, item: Item, job_id: str) -> None:
        pipe = self.r.pipeline()
        pipe.hdel(redis_keys.batch_releasing(batch_id), str(item.line))
        pipe.hset(redis_keys.batch_jobs(batch_id), str(item.line), job_id)
        pipe.hset(redis_keys.batch_job_items(batch_id), job_id, json.dumps([item.line, item.custom_id]))
        for name in (redis_keys.batch_jobs(batch_id), redis_keys.batch_job_items(batch_id)):
            pipe.expire(name, self.settings.job_ttl_seconds)
        pipe.sadd(redis_keys.tenant_batch_active(tenant), job_id)
        pipe.execute()

    def job_counted(self, tenant: str, job_id: str) -> None:
        """The batch job's end is recorded (job_item_finished), or its record is gone: it no longer takes one
        of the tenant's running slots."""
        self.r.srem(redis_keys.tenant_batch_active(tenant), job_id)

    def drop_releasing(self, batch_id: str, item: Item) -> None:
        """An item taken for release that ended without a job (its batch ended first)."""
        self.r.hdel(redis_keys.batch_releasing(batch_id), str(item.line))

    def active_jobs(self, tenant: str) -> tuple[list[str], list[str]]:
        """The tenant's released batch jobs: (not final, final). The caller records the final ones (their
        event may have been lost) and removes them from the set, so a lost event never stalls a batch."""
        members = list(self.r.smembers(redis_keys.tenant_batch_active(tenant)))
        if not members:
            return [], []
        pipe = self.r.pipeline()
        for job_id in members:
            pipe.hget(redis_keys.job(job_id), "status")
        active: list[str] = []
        final: list[str] = []
        for job_id, status in zip(members, pipe.execute()):
            (final if status is None or JobStatus(status).is_final else active).append(job_id)
        return active, final

    def job_ids(self, batch_id: str) -> list[str]:
        return list(self.r.hvals(redis_keys.batch_jobs(batch_id)))

    def set_files(self, batch_id: str, output_key: str | None, error_key: str | None) -> None:
        """Record the stored output and error JSONL files (None: no rows of that kind)."""
        files = {name: key for name, key in (("output_key", output_key), ("error_key", error_key)) if key}
        if files:
            self.r.hset(redis_keys.batch(batch_id), mapping=files)

    def rows(self, batch_id: str, which: str) -> Iterator[str]:
        """Output ('out') or error ('err') rows, in the order items finished."""
        name = redis_keys.batch_rows(batch_id, which)
        start = 0
        while True:
            chunk = self.r.lrange(name, start, start + 999)
            if not chunk:
                return
            yield from chunk
            start += len(chunk)

    def public(self, state: BatchState, base_url: str, running: int | None = None) -> dict[str, Any]:
        """The batch as the API returns it (and batch webhooks carry)."""
        running = running if running is not None else self.running(state)
        done = state.done
        counts = {"total": state.total, "queued": max(0, state.total - done - running), "running": running,
                  **state.counts}
        stamps = {k: _iso(v) for k, v in sorted(state.timestamps.items())}
        return {
            "id": state.id, "object": "batch", "status": state.status, "created_at": _iso(state.created_at),
            **stamps, "request_counts": counts, "sources": state.sources,
            "errors": {"data": state.errors, "total": state.errors_total} if state.errors_total else None,
            "output_url": f"{base_url}/v1/batches/{state.id}/output" if state.output_key else None,
            "error_url": f"{base_url}/v1/batches/{state.id}/errors" if state.error_key else None,
            "webhook_url": state.webhook_url, "metadata": state.metadata,
        }

    def running(self, state: BatchState) -> int:
        if state.status.is_final or state.status == BatchStatus.validating:
            return 0
        members = self.r.smembers(redis_keys.tenant_batch_active(state.tenant))
        if not members:
            return 0
        pipe = self.r.pipeline()
        for job_id in members:
            pipe.hmget(redis_keys.job(job_id), "status", "batch")
        return sum(1 for status, batch in pipe.execute() if batch == state.id and status == JobStatus.running)


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"
