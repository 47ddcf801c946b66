"""Tenancy limits: per-key request rate, per-tenant quotas, and fair admission of work.

- Rate: each API key may send `rate_limit_per_minute` requests, in bursts of up to `rate_limit_burst`
  (GCRA, one atomic Redis script per request; the answer says exactly when the next request fits, which
  becomes the 429's Retry-After).
- Quotas: per tenant, interactive jobs queued or running at once, the longest source video and the
  largest input file. Defaults come from Settings; a Redis hash per tenant (redis_keys.tenant_quota, set
  with `Quotas.set`) overrides them.
- Fairness: batch items never all enter the queues. A tenant has at most `batch_running_per_tenant` batch
  jobs queued or running (lipdub.service.batches releases the next one when one finishes), and batch jobs
  go on the low priority lane while interactive jobs use normal/high, so one tenant's catalog neither
  fills the queues nor delays another tenant's single job by more than the tasks already running.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, fields

import redis

from lipdub.config import Settings
from lipdub.jobs import JobStatus
from lipdub.service import redis_keys

# Celery/Redis priority of batch items (0 is served first; interactive jobs use 0 or 3).
BATCH_PRIORITY = 6

# GCRA: the key holds the "theoretical arrival time" (TAT) in ms. A request fits when
# TAT - burst_window <= now; it then pushes TAT one emission interval further.
_GCRA = """
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local allow_at = tat + interval - window
if allow_at > now then return {0, allow_at - now} end
local new_tat = tat + interval
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil(new_tat - now) + 1000)
return {1, 0}
"""


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    retry_after: int  # whole seconds until a request fits (0 when allowed)


class RateLimiter:
    def __init__(self, r: redis.Redis, settings: Settings) -> None:
        self.r = r
        self.interval_ms = 60_000.0 / settings.rate_limit_per_minute
        self.window_ms = self.interval_ms * settings.rate_limit_burst
        self._script = r.register_script(_GCRA)

    def hit(self, key_id: str) -> RateDecision:
        """Count one request of the API key whose digest is `key_id`."""
        allowed, wait_ms = self._script(keys=[redis_keys.rate(key_id)],
                                        args=[int(time.time() * 1000), self.interval_ms, self.window_ms])
        return RateDecision(bool(allowed), 0 if allowed else max(1, math.ceil(float(wait_ms) / 1000)))


@dataclass(frozen=True)
class Quota:
    max_concurrent_jobs: int
    max_video_seconds: float
    max_file_bytes: int


class QuotaExceeded(Exception):
    """A request over a tenant quota; `code` is the API error code, `retry_after` set when waiting helps."""

    def __init__(self, code: str, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after


class Quotas:
    def __init__(self, r: redis.Redis, settings: Settings) -> None:
        self.r = r
        self.settings = settings

    def for_tenant(self, tenant: str) -> Quota:
        raw = self.r.hgetall(redis_keys.tenant_quota(tenant))
        s = self.settings
        return Quota(
            max_concurrent_jobs=int(raw.get("max_concurrent_jobs", s.tenant_max_concurrent_jobs)),
            max_video_seconds=float(raw.get("max_video_seconds", s.tenant_max_video_seconds)),
            max_file_bytes=int(raw.get("max_file_bytes", s.tenant_max_file_bytes)))

    def set(self, tenant: str, **values: float | int) -> Quota:
        known = {f.name for f in fields(Quota)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown quota {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
        if values:
            self.r.hset(redis_keys.tenant_quota(tenant), mapping={k: v for k, v in values.items()})
        return self.for_tenant(tenant)

    def active_interactive_jobs(self, tenant: str) -> int:
        """The tenant's jobs queued or running, not counting batch items (they have their own cap)."""
        index = redis_keys.tenant_jobs(tenant)
        pipe = self.r.pipeline()
        for status in (JobStatus.queued, JobStatus.running):
            # ZINTERCARD walks the smaller input: the status set, not the tenant's whole history.
            pipe.execute_command("ZINTERCARD", 2, index, redis_keys.jobs_by_status(status))
        pipe.smembers(redis_keys.tenant_batch_active(tenant))
        queued, running, batch_ids = pipe.execute()
        batch_active = 0
        if batch_ids:
            pipe = self.r.pipeline()
            for job_id in batch_ids:
                pipe.hget(redis_keys.job(job_id), "status")
            batch_active = sum(1 for s in pipe.execute() if s in (JobStatus.queued, JobStatus.running))
        return max(0, int(queued) + int(running) - batch_active)

    def admit_job(self, tenant: str, video_seconds: float | None, file_bytes: list[int]) -> None:
        """Raise QuotaExceeded unless the tenant may start one more interactive job on these inputs."""
        quota = self.for_tenant(tenant)
        if video_seconds is not None and video_seconds > quota.max_video_seconds:
            raise QuotaExceeded("input_too_long", f"the video lasts {video_seconds:.1f} s; this account "
                                                  f"accepts up to {quota.max_video_seconds:g} s")
        for size in file_bytes:
            if size > quota.max_file_bytes:
                raise QuotaExceeded("payload_too_large", f"an input has {size} bytes; this account accepts "
                                                         f"files up to {quota.max_file_bytes} bytes")
        active = self.active_interactive_jobs(tenant)
        if active >= quota.max_concurrent_jobs:
            raise QuotaExceeded("concurrency_limit_reached",
                                f"{active} jobs are queued or running; this account runs up to "
                                f"{quota.max_concurrent_jobs} at once (batches are not limited by this)",
                                retry_after=10)
