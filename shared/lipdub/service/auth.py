"""Tenant API keys. Only a SHA-256 of each key is stored: keys are 256-bit random tokens, so a fast hash
is enough (no password stretching needed) and a leaked Redis dump reveals no usable key."""

from __future__ import annotations

import hashlib
import secrets

import redis

from lipdub.service import redis_keys
from lipdub.service.indexes import now

KEY_PREFIX = "ldk_"


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKeys:
    def __init__(self, client: redis.Redis) -> None:
        self.r = client

    def create(self, tenant: str) -> str:
        """A new key for `tenant`; shown once, never stored in clear."""
        if not tenant or not tenant.replace("-", "").replace("_", "").isalnum():
            raise ValueError("tenant names use letters, digits, '-' and '_'")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        digest = _digest(key)
        pipe = self.r.pipeline()
        pipe.hset(redis_keys.api_key(digest), mapping={"tenant": tenant, "created_at": now(), "hint": key[:8]})
        pipe.sadd(redis_keys.tenant_keys(tenant), digest)
        pipe.execute()
        return key

    def tenant(self, key: str) -> str | None:
        """The tenant owning `key`, or None for an unknown or revoked key."""
        if not key.startswith(KEY_PREFIX):
            return None
        tenant = self.r.hget(redis_keys.api_key(_digest(key)), "tenant")
        return str(tenant) if tenant else None

    def revoke(self, key: str) -> bool:
        digest = _digest(key)
        tenant = self.r.hget(redis_keys.api_key(digest), "tenant")
        if not tenant:
            return False
        self.r.delete(redis_keys.api_key(digest))
        self.r.srem(redis_keys.tenant_keys(tenant), digest)
        return True
