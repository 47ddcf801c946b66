"""Dependencies of the routes, as Annotated aliases: settings, job store, storage and the caller's tenant."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from lipdub.config import Settings, get_settings
from lipdub.service.auth import ApiKeys
from lipdub.service.status import JobStore, get_store
from lipdub.service.storage import Storage, get_storage
from lipdub_api.errors import ApiError
from lipdub_api.schemas import ApiErrorCode

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
