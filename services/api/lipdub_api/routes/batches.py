"""Batches: many (video, audio) pairs from one JSONL manifest, run as jobs with source dedup.

POST /v1/batches/manifests   upload a JSONL manifest (raw body, streamed to storage) → {id, lines, size}
POST /v1/batches             {manifest_id | items[], options?, webhook_url?, metadata?} (+ Idempotency-Key) → 202
GET  /v1/batches[/{id}]      the batch with request_counts; list newest first
POST /v1/batches/{id}/cancel queued items are dropped, running ones stop at their next chunk
GET  /v1/batches/{id}/output, /errors   the JSONL result files once the batch is done
GET  /v1/batches/{id}/deliveries (+ /{n}/replay)   the batch's webhook deliveries

Creating a batch only stores the manifest and queues `batches.expand`: validation of every line, URL
downloads and job creation run on the webhooks worker, so the API answers at once whatever the size.
"""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, HttpUrl
from starlette.responses import Response

from lipdub.jobs import JobOptions
from lipdub.service import events, redis_keys
from lipdub.service.batches import BatchState, BatchStatus, BatchStore
from lipdub.service.manifest import ManifestLine
from lipdub.service.storage import Storage, keys
from lipdub.service.urls import UrlRejected, check_url
from lipdub_api.deps import BaseUrlDep, SettingsDep, StorageDep, StoreDep, TenantDep, idempotency_body_hash
from lipdub_api.errors import ApiError, check_cursor, not_found
from lipdub_api.schemas import ApiErrorCode, ErrorResponse

router = APIRouter(prefix="/v1/batches", tags=["batches"],
                   responses={401: {"model": ErrorResponse}, 404: {"model": ErrorResponse}})

JSONL_TYPES = ("application/jsonl", "application/x-ndjson", "application/json-lines", "text/plain",
               "application/octet-stream")


class ManifestPublic(BaseModel):
    id: str
    lines: int
    size: int


class BatchCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    manifest_id: str | None = Field(default=None, description="A manifest uploaded to /v1/batches/manifests")
    items: list[ManifestLine] | None = Field(default=None, description="Inline manifest lines (small batches)")
    webhook_url: HttpUrl | None = Field(default=None, description="Receives batch.completed/failed/canceled")
    metadata: dict[str, str] = Field(default_factory=dict, max_length=16)
    options: JobOptions | None = Field(default=None, description="Default options of every item; an item's "
                                                                 "own options override them field by field")


class RequestCounts(BaseModel):
    total: int
    queued: int
    running: int
    succeeded: int
    failed: int
    canceled: int


class BatchPublic(BaseModel):
    model_config = ConfigDict(extra="allow")  # the *_at timestamps of the transitions so far
    id: str
    object: str = "batch"
    status: BatchStatus
    created_at: str
    request_counts: RequestCounts
    sources: int = Field(description="Distinct source videos (each is prepared once)")
    errors: dict[str, Any] | None = Field(description="Manifest errors {data: [{line, code, message}], total}")
    output_url: str | None = Field(description="Output JSONL (custom_id → job id, result URL)")
    error_url: str | None = Field(description="Error JSONL (custom_id → error) of failed or canceled items")
    webhook_url: str | None
    metadata: dict[str, str]


class BatchList(BaseModel):
    data: list[BatchPublic]
    next_cursor: str | None


def _public(batches: BatchStore, state: BatchState, base_url: str) -> BatchPublic:
    return BatchPublic.model_validate(batches.public(state, base_url))


@router.post("/manifests", status_code=status.HTTP_201_CREATED, responses={413: {"model": ErrorResponse}})
async def upload_manifest(request: Request, tenant: TenantDep, store: StoreDep, storage: StorageDep,
                          settings: SettingsDep) -> ManifestPublic:
    """Upload a JSONL manifest as the raw request body (`Content-Type: application/jsonl`), one item per
    line: `{"custom_id": "...", "video": {"asset_id"|"url": ...}, "audio": {...}, "options": {...}}`."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in JSONL_TYPES:
        raise ApiError(415, ApiErrorCode.invalid_request, "send the manifest as the raw body with "
                                                          "Content-Type: application/jsonl")
    cap = settings.batch_max_manifest_bytes
    manifest_id = f"bman_{uuid.uuid4().hex}"
    with tempfile.TemporaryDirectory(prefix="lipdub-manifest-") as tmp:
        path = Path(tmp) / "manifest.jsonl"
        size = lines = 0
        last = b"\n"
        with path.open("wb") as out:
            async for block in request.stream():
                size += len(block)
                if size > cap:
                    raise ApiError(413, ApiErrorCode.payload_too_large, f"manifests are limited to {cap} bytes")
                lines += block.count(b"\n")
                if block:
                    last = block[-1:]
                out.write(block)
        lines += 0 if last == b"\n" else 1
        if lines > settings.batch_max_lines:
            raise ApiError(413, ApiErrorCode.payload_too_large,
                           f"the manifest has {lines} lines; a batch has at most {settings.batch_max_lines}")
        await run_in_threadpool(storage.put_file, keys.manifest(manifest_id), path, "application/jsonl")
    BatchStore(store).put_manifest(manifest_id, tenant, lines, size)
    return ManifestPublic(id=manifest_id, lines=lines, size=size)


@router.delete("/manifests/{manifest_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response,
               responses={409: {"model": ErrorResponse}})
def delete_manifest(manifest_id: str, tenant: TenantDep, store: StoreDep, storage: StorageDep) -> Response:
    """Delete an uploaded manifest now (otherwise kept for `LIPDUB_JOB_TTL_SECONDS`). The batches made from
    it keep running: they read it once, when they are validated; one not validated yet makes this a 409."""
    batches = BatchStore(store)
    if batches.manifest_tenant(manifest_id) != tenant:
        raise not_found("manifest")
    if readers := batches.manifest_readers(manifest_id):
        raise ApiError(409, ApiErrorCode.manifest_in_use,
                       f"batch {', '.join(readers)} has not read the manifest yet; retry in a few seconds")
    storage.delete(keys.manifest(manifest_id))  # first: if this fails, the manifest is there to retry
    batches.forget_manifest(manifest_id, tenant)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("", status_code=status.HTTP_202_ACCEPTED, responses={409: {"model": ErrorResponse},
                                                                   422: {"model": ErrorResponse}})
def create_batch(body: BatchCreate, tenant: TenantDep, store: StoreDep, storage: StorageDep,
                 settings: SettingsDep, base_url: BaseUrlDep,
                 idempotency_key: Annotated[str | None, Header()] = None) -> BatchPublic:
    """Accept a batch; it starts in `validating` and moves on in the background. Follow it with
    `GET /v1/batches/{id}` or its webhook. With an `Idempotency-Key`, repeating the request returns the
    same batch."""
    batches = BatchStore(store)
    if (body.manifest_id is None) == (body.items is None):
        raise ApiError(422, ApiErrorCode.invalid_request, "give exactly one of manifest_id or items")
    if body.items is not None and not 0 < len(body.items) <= settings.batch_max_inline_items:
        raise ApiError(422, ApiErrorCode.invalid_request,
                       f"inline batches have 1 to {settings.batch_max_inline_items} items; upload a manifest "
                       "for more")
    webhook_url = str(body.webhook_url) if body.webhook_url else None
    if webhook_url:
        try:
            check_url(webhook_url, settings, resolve=False)
        except UrlRejected as exc:
            raise ApiError(422, ApiErrorCode.url_not_allowed, f"webhook_url: {exc.message}") from exc
    batch_id = f"batch_{uuid.uuid4().hex}"
    idem_key = None
    if idempotency_key is not None:
        idem_key = redis_keys.batch_request(idempotency_key)
        body_hash = idempotency_body_hash(idempotency_key, body)
        try:
            batch_id, created = store.idempotency.claim(tenant, idem_key, body_hash, batch_id)
        except ValueError as exc:
            raise ApiError(409, ApiErrorCode.idempotency_conflict, str(exc)) from exc
        if not created:
            existing = batches.get_for_tenant(tenant, batch_id)
            if existing is None:
                raise ApiError(409, ApiErrorCode.request_in_progress,
                               "a request with this Idempotency-Key is still being processed")
            return _public(batches, existing, base_url)
    try:
        state = _start_batch(body, tenant, batch_id, webhook_url, batches, storage, idem_key)
    except Exception:
        # No batch will run for this request (bad manifest, storage or queue down): a retry with the same
        # key must be free to make one, not wait on a claim for the key's whole lifetime.
        if idem_key is not None:
            store.idempotency.release(tenant, idem_key, batch_id)
        raise
    return _public(batches, state, base_url)


def _start_batch(body: BatchCreate, tenant: str, batch_id: str, webhook_url: str | None, batches: BatchStore,
                 storage: Storage, idempotency_key: str | None) -> BatchState:
    """Store the batch's input (an uploaded manifest or the inline items), create it and queue its expansion."""
    if body.manifest_id is not None:
        if batches.manifest_tenant(body.manifest_id) != tenant:
            raise ApiError(422, ApiErrorCode.manifest_not_found, f"no manifest {body.manifest_id}")
        key = keys.manifest(body.manifest_id)
        batches.use_manifest(body.manifest_id, batch_id)
    else:
        key = keys.batch(batch_id, "input.jsonl")
        with tempfile.TemporaryDirectory(prefix="lipdub-manifest-") as tmp:
            path = Path(tmp) / "input.jsonl"
            path.write_text("".join(item.model_dump_json(exclude_defaults=True) + "\n"
                                    for item in body.items or []))
            storage.put_file(key, path, "application/jsonl")
    # Only the options given: the rest are the items' defaults, made when the manifest is validated (batches.expand).
    defaults = {"options": body.options.model_dump(mode="json", exclude_unset=True)} if body.options else {}
    state = batches.create(tenant, key, webhook_url, body.metadata, defaults, batch_id=batch_id,
                           idempotency_key=idempotency_key)
    try:
        events.expand_batch(state.id)
    except Exception as exc:  # the broker is down: don't leave a batch that will never move
        batches.fail(state.id, [])
        raise ApiError(503, ApiErrorCode.service_unavailable, "the batch queue is unavailable; retry later",
                       headers={"Retry-After": "5"}) from exc
    return state


@router.get("")
def list_batches(tenant: TenantDep, store: StoreDep, base_url: BaseUrlDep, cursor: str | None = None,
                 limit: Annotated[int, Query(ge=1, le=100)] = 20) -> BatchList:
    batches = BatchStore(store)
    check_cursor(cursor)
    found, next_cursor = batches.page(tenant, cursor, limit)
    return BatchList(data=[_public(batches, b, base_url) for b in found], next_cursor=next_cursor)


@router.get("/{batch_id}")
def get_batch(batch_id: str, tenant: TenantDep, store: StoreDep, base_url: BaseUrlDep) -> BatchPublic:
    batches = BatchStore(store)
    return _public(batches, _batch(batches, tenant, batch_id), base_url)


@router.post("/{batch_id}/cancel", status_code=status.HTTP_202_ACCEPTED, responses={409: {"model": ErrorResponse}})
def cancel_batch(batch_id: str, tenant: TenantDep, store: StoreDep, base_url: BaseUrlDep) -> BatchPublic:
    """Move the batch to `cancelling`: waiting items are dropped, released jobs canceled (a running render
    stops at its next chunk); it becomes `cancelled` once no item runs."""
    batches = BatchStore(store)
    state = _batch(batches, tenant, batch_id)
    if not batches.move(batch_id, BatchStatus.cancelling):
        current = batches.get(batch_id) or state
        if current.status != BatchStatus.cancelling:
            raise ApiError(409, ApiErrorCode.batch_not_cancelable, f"the batch is already {current.status}")
    events.settle_batch(batch_id)
    return _public(batches, _batch(batches, tenant, batch_id), base_url)


@router.delete("/{batch_id}", status_code=status.HTTP_202_ACCEPTED, response_class=Response,
               responses={409: {"model": ErrorResponse}})
def delete_batch(batch_id: str, tenant: TenantDep, store: StoreDep) -> Response:
    """Delete an ended batch with everything it made: its jobs (records, results, intermediate files,
    webhook messages), its files (input, output and error JSONL) and its records. The batch is gone at once
    (404, out of the listing); its jobs and files are deleted in the background by the janitor, within a
    sweep or a few for a big catalog. An uploaded manifest is not part of the batch: delete it with
    `DELETE /v1/batches/manifests/{id}`. A batch still running must be canceled first."""
    batches = BatchStore(store)
    state = _batch(batches, tenant, batch_id)
    if not state.status.is_final:
        raise ApiError(409, ApiErrorCode.batch_not_deletable, f"the batch is {state.status}; cancel it first")
    batches.request_deletion(state)
    events.sweep_soon()
    return Response(status_code=status.HTTP_202_ACCEPTED)


@router.get("/{batch_id}/output", response_class=Response,
            responses={200: {"content": {"application/jsonl": {}}}, 409: {"model": ErrorResponse}})
def get_output(batch_id: str, tenant: TenantDep, store: StoreDep, storage: StorageDep) -> Response:
    """One JSON line per succeeded item: {custom_id, line, job_id, status, result_url}."""
    return _file(_batch(BatchStore(store), tenant, batch_id), "output", storage)


@router.get("/{batch_id}/errors", response_class=Response,
            responses={200: {"content": {"application/jsonl": {}}}, 409: {"model": ErrorResponse}})
def get_errors(batch_id: str, tenant: TenantDep, store: StoreDep, storage: StorageDep) -> Response:
    """One JSON line per failed or canceled item: {custom_id, line, job_id, status, error{code, message}}."""
    return _file(_batch(BatchStore(store), tenant, batch_id), "errors", storage)


def _file(state: BatchState, which: str, storage: Any) -> Response:
    key = state.output_key if which == "output" else state.error_key
    if key is None:
        if not state.status.is_final:
            raise ApiError(409, ApiErrorCode.result_not_ready, f"the batch is {state.status}")
        return Response(b"", media_type="application/jsonl")  # no item ended that way
    url = storage.download_url(key, f"{state.id}-{which}.jsonl")
    if url is not None:
        return RedirectResponse(url, status_code=307)
    return StreamingResponse(storage.stream(key), media_type="application/jsonl")


def _batch(batches: BatchStore, tenant: str, batch_id: str) -> BatchState:
    state = batches.get_for_tenant(tenant, batch_id)
    if state is None:
        raise not_found("batch")
    return state
