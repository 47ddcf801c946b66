"""Uploaded assets, the presigned uploads that make them, and the prep cache pointers of their bytes.

Assets are content-addressed per tenant; their bytes are stored once for all tenants (assets/{sha256}),
so deleting one asset frees the bytes only when no other asset holds them (holding_content, content_held).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import redis

from lipdub.config import Settings
from lipdub.errors import ErrorCode, TransientError
from lipdub.prep.track import prep_version
from lipdub.service import redis_keys
from lipdub.service.indexes import Cursor, due, newest_first, now, pair


@dataclass(frozen=True)
class Asset:
    id: str
    tenant: str
    sha256: str
    size: int
    media: dict[str, Any]
    created_at: float


class AssetStore:
    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.r = client
        self.settings = settings

    # --- assets -----------------------------------------------------------------------------------
    def put(self, tenant: str, sha256: str, size: int, media: dict[str, Any]) -> Asset:
        """Uploading the same bytes again returns the same id."""
        asset_id = "ast_" + hashlib.sha256(f"{tenant}:{sha256}".encode()).hexdigest()[:32]
        created = now()
        pipe = self.r.pipeline()
        pipe.hset(redis_keys.asset(asset_id), mapping={"id": asset_id, "tenant": tenant, "sha256": sha256,
                                                       "size": size, "media": json.dumps(media),
                                                       "created_at": created})
        pipe.sadd(redis_keys.asset_holders(sha256), asset_id)
        pipe.zadd(redis_keys.tenant_assets(tenant), {asset_id: created})
        pipe.zadd(redis_keys.ASSETS_USED, {asset_id: created})
        pipe.execute()
        return Asset(asset_id, tenant, sha256, size, media, created)

    def get(self, tenant: str, asset_id: str) -> Asset | None:
        """The asset, or None when it does not exist or belongs to another tenant."""
        raw = self.r.hgetall(redis_keys.asset(asset_id))
        if not raw or raw["tenant"] != tenant:
            return None
        return Asset(raw["id"], raw["tenant"], raw["sha256"], int(raw["size"]), json.loads(raw["media"]),
                     float(raw["created_at"]))

    def by_id(self, asset_id: str) -> Asset | None:
        """The asset, whichever its tenant."""
        raw = self.r.hget(redis_keys.asset(asset_id), "tenant")
        return self.get(raw, asset_id) if raw else None

    def page(self, tenant: str, cursor: str | None = None, limit: int = 20) -> tuple[list[Asset], str | None]:
        """Newest upload first; the cursor is `{created_at}:{asset_id}` of the last asset of the previous page
        (Cursor.parse raises ValueError for a malformed one)."""
        out: list[Asset] = []
        for asset_id in newest_first(self.r, redis_keys.tenant_assets(tenant),
                                     Cursor.parse(cursor) if cursor else None, chunk=limit * 2):
            asset = self.get(tenant, asset_id)
            if asset is not None:
                out.append(asset)
                if len(out) == limit:
                    break
        return out, (str(Cursor(out[-1].created_at, out[-1].id)) if len(out) == limit else None)

    def mark_used(self, asset_ids: list[str], when: float, pipe: redis.client.Pipeline | None = None) -> None:
        """Retention counts from the last use: a job made on the assets, or a batch that will make some."""
        if asset_ids:
            (pipe or self.r).zadd(redis_keys.ASSETS_USED, dict.fromkeys(asset_ids, when))

    def unused(self, since: float, limit: int = 200) -> list[Asset]:
        """Assets no job has named (nor upload refreshed) since `since`, least recently used first; ids whose
        record is gone leave the index."""
        found: list[Asset] = []
        gone: list[str] = []
        for asset_id in self.r.zrangebyscore(redis_keys.ASSETS_USED, "-inf", since, start=0, num=limit):
            asset = self.by_id(asset_id)
            if asset is None:
                gone.append(asset_id)
            else:
                found.append(asset)
        if gone:
            self.r.zrem(redis_keys.ASSETS_USED, *gone)
        return found

    def forget(self, asset: Asset) -> None:
        pipe = self.r.pipeline()
        pipe.delete(redis_keys.asset(asset.id))
        pipe.zrem(redis_keys.tenant_assets(asset.tenant), asset.id)
        pipe.zrem(redis_keys.ASSETS_USED, asset.id)
        pipe.execute()

    # --- the stored bytes -------------------------------------------------------------------------
    @contextmanager
    def holding_content(self, sha256: str, wait: float = 120.0) -> Iterator[None]:
        """Held while the stored bytes of `sha256` are written or deleted, so that a tenant deleting an asset
        never removes bytes another tenant's upload of the same content has just counted on. Raises
        TransientError (retry later) after `wait` seconds of another holder."""
        lock = self.r.lock(redis_keys.content_lock(sha256), timeout=3600)
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
        return bool(self.r.scard(redis_keys.asset_holders(sha256)))

    def contents_held(self, sha256s: Iterable[str]) -> set[str]:
        """Those of `sha256s` that some asset still holds."""
        wanted = sorted(set(sha256s))
        pipe = self.r.pipeline()
        for sha in wanted:
            pipe.exists(redis_keys.asset_holders(sha))
        return {sha for sha, held in zip(wanted, pipe.execute(), strict=True) if held}

    def other_holders(self, asset: Asset) -> list[str]:
        """The other assets (of any tenant) stored on the same bytes as `asset`."""
        return sorted(h for h in self.r.smembers(redis_keys.asset_holders(asset.sha256))
                      if h != asset.id and self.r.exists(redis_keys.asset(h)))

    def release_content(self, asset: Asset) -> None:
        """The asset no longer holds its bytes (it is being deleted)."""
        self.r.srem(redis_keys.asset_holders(asset.sha256), asset.id)

    # --- presigned multipart uploads --------------------------------------------------------------
    def put_upload(self, upload_id: str, tenant: str, s3_upload_id: str, size: int, ttl: int) -> None:
        """A presigned multipart upload in progress. Its record outlives its URLs (ttl) by as much again,
        for parts sent just before they expired; then the janitor aborts it (expired_uploads)."""
        name = redis_keys.upload(upload_id)
        pipe = self.r.pipeline()
        pipe.hset(name, mapping={"tenant": tenant, "s3_upload_id": s3_upload_id, "size": size})
        pipe.expire(name, ttl * 2)
        pipe.zadd(redis_keys.OPEN_UPLOADS, {pair(upload_id, s3_upload_id): now() + ttl * 2})
        pipe.execute()

    def get_upload(self, tenant: str, upload_id: str) -> dict[str, str] | None:
        raw = self.r.hgetall(redis_keys.upload(upload_id))
        return raw if raw and raw.get("tenant") == tenant else None

    def delete_upload(self, upload_id: str) -> None:
        s3_upload_id = self.r.hget(redis_keys.upload(upload_id), "s3_upload_id")
        pipe = self.r.pipeline()
        pipe.delete(redis_keys.upload(upload_id))
        if s3_upload_id:
            pipe.zrem(redis_keys.OPEN_UPLOADS, pair(upload_id, s3_upload_id))
        pipe.execute()

    def expired_uploads(self, before: float, limit: int = 500) -> list[tuple[str, str]]:
        """Uploads never completed whose records expired before `before`: (upload id, S3 upload id)."""
        return due(self.r, redis_keys.OPEN_UPLOADS, before, limit)

    def forget_upload(self, upload_id: str, s3_upload_id: str) -> None:
        self.r.zrem(redis_keys.OPEN_UPLOADS, pair(upload_id, s3_upload_id))

    # --- prep cache pointers ----------------------------------------------------------------------
    def prep_pointer(self, source: str) -> dict[str, Any] | None:
        """`source`: lipdub.prep.cache.source_key (the video's SHA-256, plus the face choice if any), under
        this deployment's prep version (code and prep settings: lipdub.prep.track.prep_version)."""
        raw = self.r.get(self._prep_key(source))
        return json.loads(raw) if raw else None

    def set_prep_pointer(self, source: str, record: dict[str, Any]) -> None:
        key = self._prep_key(source)
        pipe = self.r.pipeline()
        pipe.set(key, json.dumps(record))
        pipe.sadd(redis_keys.prep_keys(source[:64]), key)  # every pointer of the bytes, for drop_prep_pointers
        pipe.execute()

    def drop_prep_pointers(self, sha256: str) -> None:
        """Forget every prep pointer (and cached rejection) of these bytes, under any face choice or prep
        version: no job then looks for their artifacts."""
        index = redis_keys.prep_keys(sha256)
        self.r.delete(*self.r.smembers(index), index)

    def _prep_key(self, source: str) -> str:
        return redis_keys.prep_pointer(source, prep_version(self.settings))
