"""Dependencies of the routes, as Annotated aliases: settings, job store, storage and the caller's tenant."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated

from fastapi import Depends, Request
from pydantic import BaseModel

from lipdub.config import Settings, get_settings
from lipdub.service.auth import ApiKeys
from lipdub.service.status import JobStore, get_store
from lipdub.service.storage import Storage, get_storage
from lipdub_api.errors import ApiError
from lipdub_api.schemas import IDEMPOTENCY_KEY, ApiErrorCode

SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[JobStore, Depends(get_store)]
StorageDep = Annotated[Storage, Depends(get_storage)]


def tenant(request: Request, store: StoreDep) -> str:
    """The tenant of the `Authorization: Bearer <key>` key; every read and write is scoped to it."""
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key:
        raise ApiError(401, ApiErrorCode.unauthorized, "send an API key as 'Authorization: Bearer <key>'",
                       headers={"WWW-Authenticate": "Bearer"})
    name = ApiKeys(store.r).tenant(key.strip())
    if name is None:
        raise ApiError(401, ApiErrorCode.unauthorized, "unknown or revoked API key",
                       headers={"WWW-Authenticate": "Bearer"})
    return name


TenantDep = Annotated[str, Depends(tenant)]


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


BaseUrlDep = Annotated[str, Depends(base_url)]


def idempotency_body_hash(key: str, body: BaseModel) -> str:
    """Check an `Idempotency-Key` header and fingerprint the request it guards (same key + same body =
    the same resource; same key + another body = 409)."""
    if not IDEMPOTENCY_KEY.match(key):
        raise ApiError(400, ApiErrorCode.invalid_idempotency_key,
                       "Idempotency-Key must be 1-128 characters of A-Z a-z 0-9 . _ ~ -")
    return hashlib.sha256(json.dumps(body.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()
