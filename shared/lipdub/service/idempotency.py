"""Idempotency-Key claims: a repeated request (same tenant, key and body) gets what the first one made, a job
or a batch, instead of making another."""

from __future__ import annotations

import json

import redis

from lipdub.config import Settings
from lipdub.service import redis_keys


class Idempotency:
    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.r = client
        self.settings = settings

    def claim(self, tenant: str, key: str, body_hash: str, job_id: str) -> tuple[str, bool]:
        """Claim `key` for a new job. Returns (job id, created): the claimed id and True, or the id of the
        job an earlier request with this key made and False. Raises ValueError for the same key with a
        different body."""
        name = redis_keys.idempotency(tenant, key)
        record = json.dumps({"body": body_hash, "job": job_id})
        if self.r.set(name, record, nx=True, ex=self.settings.idempotency_ttl_seconds):
            return job_id, True
        existing = json.loads(self.r.get(name) or "{}")
        if not existing:  # expired between SET and GET: claim again
            return self.claim(tenant, key, body_hash, job_id)
        if existing["body"] != body_hash:
            raise ValueError("the Idempotency-Key was used with a different request body")
        return str(existing["job"]), False

    def release(self, tenant: str, key: str, job_id: str) -> None:
        """Forget `key` if it still names `job_id` (a job's or a batch's): what the request made failed at
        once (bad input, the queue down), or was deleted, and a retry with the same key must make a new one
        rather than get the failed one back or wait on the claim."""
        name = redis_keys.idempotency(tenant, key)
        raw = self.r.get(name)
        if raw and json.loads(raw).get("job") == job_id:
            self.r.delete(name)

    def lookup(self, tenant: str, key: str, body_hash: str) -> str | None:
        """The job id an earlier request with `key` claimed, or None if the key is unused. Raises
        ValueError for the same key with a different body. Claims nothing (claim does)."""
        raw = self.r.get(redis_keys.idempotency(tenant, key))
        if not raw:
            return None
        existing = json.loads(raw)
        if existing["body"] != body_hash:
            raise ValueError("the Idempotency-Key was used with a different request body")
        return str(existing["job"])
