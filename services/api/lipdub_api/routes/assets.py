"""Uploads: multipart streamed through a temp file to storage, or presigned S3 multipart for large files.

Assets are content-addressed: stored under their SHA-256, so the same bytes are stored once and every job
on them shares the prep cache.
"""

from __future__ import annotations

import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from python_multipart import create_form_parser
from python_multipart.multipart import File

from lipdub.service.indexes import now
from lipdub.service.inputs import delete_asset, store_asset
from lipdub.service.limits import Quotas
from lipdub.service.status import JobStore
from lipdub.service.storage import PartsRejected, S3Storage, keys
from lipdub_api.deps import SettingsDep, StorageDep, StoreDep, TenantDep
from lipdub_api.errors import ApiError, check_cursor, not_found
from lipdub_api.schemas import (
    ApiErrorCode,
    AssetList,
    AssetPublic,
    ErrorResponse,
    UploadComplete,
    UploadCreate,
    UploadPart,
    UploadPublic,
)

router = APIRouter(prefix="/v1/assets", tags=["assets"],
                   responses={401: {"model": ErrorResponse}, 413: {"model": ErrorResponse},
                              422: {"model": ErrorResponse}})

MULTIPART_OVERHEAD = 64 * 1024  # bytes of multipart framing allowed on top of the file size cap


@router.post("", status_code=status.HTTP_201_CREATED)
async def upload_asset(request: Request, tenant: TenantDep, store: StoreDep, storage: StorageDep,
                       settings: SettingsDep) -> AssetPublic:
    """Upload a video or audio file as multipart form field `file`. The body is streamed to a temporary
    file (never held whole in memory) and stored under its SHA-256."""
    cap = upload_cap(tenant, store)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap + MULTIPART_OVERHEAD:
        raise ApiError(413, ApiErrorCode.payload_too_large, f"uploads are limited to {cap} bytes")
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise ApiError(415, ApiErrorCode.invalid_request, "send the file as multipart/form-data field 'file'")
    with tempfile.TemporaryDirectory(prefix="lipdub-upload-", dir=_upload_root(settings.data_dir)) as tmp:
        files: list[File] = []
        try:
            parser = create_form_parser({"Content-Type": content_type.encode()}, on_field=None,
                                        on_file=files.append,
                                        config={"UPLOAD_DIR": tmp, "MAX_MEMORY_FILE_SIZE": 1024 * 1024,
                                                "UPLOAD_DELETE_TMP": False})
            received = 0
            async for block in request.stream():
                received += len(block)
                if received > cap + MULTIPART_OVERHEAD:
                    raise ApiError(413, ApiErrorCode.payload_too_large, f"uploads are limited to {cap} bytes")
                parser.write(block)
            parser.finalize()
        except ValueError as exc:  # no boundary, or not multipart (python_multipart's errors are ValueErrors)
            raise ApiError(400, ApiErrorCode.invalid_request, f"malformed multipart/form-data body: {exc}") from exc
        upload = next((f for f in files if f.field_name == b"file"), None)
        if upload is None:
            raise ApiError(422, ApiErrorCode.invalid_request, "the form has no 'file' field")
        if upload.size > cap:
            raise ApiError(413, ApiErrorCode.payload_too_large, f"uploads are limited to {cap} bytes")
        path = Path(tmp) / "upload"
        upload.file_object.seek(0)
        with path.open("wb") as out:
            while block := upload.file_object.read(1024 * 1024):
                out.write(block)
        upload.close()
        asset = await run_in_threadpool(store_asset, path, tenant, store, storage)
    return AssetPublic.of(asset)


@router.get("")
def list_assets(tenant: TenantDep, store: StoreDep, cursor: str | None = None,
                limit: Annotated[int, Query(ge=1, le=100)] = 20) -> AssetList:
    """The tenant's assets, newest upload first, `limit` per page; follow `next_cursor` for more."""
    check_cursor(cursor)
    found, next_cursor = store.assets.page(tenant, cursor, limit)
    return AssetList(data=[AssetPublic.of(a) for a in found], next_cursor=next_cursor)


@router.get("/{asset_id}")
def get_asset(asset_id: str, tenant: TenantDep, store: StoreDep) -> AssetPublic:
    asset = store.assets.get(tenant, asset_id)
    if asset is None:
        raise not_found("asset")
    return AssetPublic.of(asset)


@router.delete("/{asset_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response,
               responses={409: {"model": ErrorResponse}, 503: {"model": ErrorResponse}})
def remove_asset(asset_id: str, tenant: TenantDep, store: StoreDep, storage: StorageDep) -> Response:
    """Delete an asset now (assets are otherwise kept): its record and, unless another asset holds the same
    bytes, the stored file and everything prep derived from it (face tracks, reference frames, an enrolled
    renderer). Ended jobs keep their results. A queued or running job with the asset as input must end
    first (409 `asset_in_use`); a batch item on it that has not started yet fails with `asset_deleted`."""
    asset = store.assets.get(tenant, asset_id)
    if asset is None:
        raise not_found("asset")
    using = sorted(store.active_inputs().get(asset_id, []))
    if using:
        shown = ", ".join(using[:5]) + (f" and {len(using) - 5} more" if len(using) > 5 else "")
        raise ApiError(409, ApiErrorCode.asset_in_use, f"queued or running jobs use the asset: {shown}; "
                                                       "cancel them or let them end first")
    delete_asset(asset, store, storage)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/uploads", status_code=status.HTTP_201_CREATED)
def create_upload(body: UploadCreate, tenant: TenantDep, store: StoreDep, storage: StorageDep,
                  settings: SettingsDep) -> UploadPublic:
    """Start a presigned S3 multipart upload for a large file: PUT each part to its URL, then call
    `POST /v1/assets/uploads/{id}/complete` with the parts' ETags."""
    if not isinstance(storage, S3Storage):
        raise ApiError(400, ApiErrorCode.unsupported_storage, "presigned uploads need S3 storage; "
                                                              "use POST /v1/assets")
    cap = upload_cap(tenant, store)
    if body.size > cap:
        raise ApiError(413, ApiErrorCode.payload_too_large, f"uploads are limited to {cap} bytes")
    upload_id = f"upl_{uuid.uuid4().hex}"
    s3_upload, urls = storage.create_multipart(keys.upload(upload_id), body.size)
    store.assets.put_upload(upload_id, tenant, s3_upload, body.size, settings.presign_seconds)
    return UploadPublic(id=upload_id, part_size=storage.part_bytes,
                        parts=[UploadPart(part_number=n, url=u) for n, u in enumerate(urls, start=1)],
                        expires_at=datetime.fromtimestamp(now() + settings.presign_seconds, UTC))


@router.post("/uploads/{upload_id}/complete", status_code=status.HTTP_201_CREATED)
def complete_upload(upload_id: str, body: UploadComplete, tenant: TenantDep, store: StoreDep,
                    storage: StorageDep, settings: SettingsDep) -> AssetPublic:
    """Finish a presigned upload; the file is then hashed, probed and stored like any other asset."""
    record = store.assets.get_upload(tenant, upload_id)
    if record is None or not isinstance(storage, S3Storage):
        raise not_found("upload")
    key = keys.upload(upload_id)
    try:
        storage.complete_multipart(key, record["s3_upload_id"], body.etags)
    except PartsRejected as exc:  # the upload stays open: completing again with the right ETags works
        raise ApiError(422, ApiErrorCode.invalid_request,
                       f"S3 could not assemble the upload from these parts ({exc}); send every part's ETag, "
                       "in part order") from exc
    try:
        size = storage.size(key)
        cap = upload_cap(tenant, store)
        if size > cap:
            raise ApiError(413, ApiErrorCode.payload_too_large, f"uploads are limited to {cap} bytes")
        with tempfile.TemporaryDirectory(prefix="lipdub-upload-", dir=_upload_root(settings.data_dir)) as tmp:
            path = storage.get_file(key, Path(tmp) / "upload")
            asset = store_asset(path, tenant, store, storage)
    finally:
        storage.delete(key)
        store.assets.delete_upload(upload_id)
    return AssetPublic.of(asset)


def upload_cap(tenant: str, store: JobStore) -> int:
    """The largest upload of this tenant: the deployment's cap, or the tenant's file-size quota if lower."""
    return min(store.settings.max_upload_bytes, Quotas(store.r, store.settings).for_tenant(tenant).max_file_bytes)


def _upload_root(data_dir: Path) -> Path:
    root = data_dir / "uploads"
    root.mkdir(parents=True, exist_ok=True)
    return root
