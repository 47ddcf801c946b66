"""Jobs: create (idempotent), read (with long-poll), list, cancel, result and quality report."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, StreamingResponse
from starlette.responses import Response

from lipdub.jobs import InputRef as JobInput  # the stored input; schemas.InputRef is the request's
from lipdub.jobs import JobSpec, JobStatus
from lipdub.service import janitor
from lipdub.service.batches import BatchStore
from lipdub.service.limits import QuotaExceeded, Quotas
from lipdub.service.status import JobState, JobStore
from lipdub.service.storage import keys
from lipdub.service.urls import UrlRejected, check_url
from lipdub_api.deps import BaseUrlDep, StorageDep, StoreDep, TenantDep, idempotency_body_hash
from lipdub_api.errors import ApiError, check_cursor, not_found
from lipdub_api.schemas import (
    ApiErrorCode,
    ErrorResponse,
    InputRef,
    JobCreate,
    JobList,
    JobPublic,
)

router = APIRouter(prefix="/v1/jobs", tags=["jobs"],
                   responses={401: {"model": ErrorResponse}, 404: {"model": ErrorResponse}})

MAX_WAIT_SECONDS = 60.0
POLL_SECONDS = 0.25


def resolve_input(ref: InputRef, kind: str, tenant: str, store: JobStore,
                  allow_url: bool = False) -> JobInput:
    """The job's reference to an input: an asset (asset_id, sha256), or a URL the probe task downloads
    (checked here without a DNS lookup, which happens at download time, on the resolved address)."""
    if ref.url is not None:
        if not allow_url:
            raise ApiError(422, ApiErrorCode.url_inputs_unsupported,
                           f"{kind}: give an uploaded asset here (POST /v1/assets)")
        try:
            check_url(str(ref.url), store.settings, resolve=False)
        except UrlRejected as exc:
            raise ApiError(422, ApiErrorCode.url_not_allowed, f"{kind}: {exc.message}") from exc
        return JobInput(url=str(ref.url))
    asset = store.assets.get(tenant, ref.asset_id or "")
    if asset is None:
        raise ApiError(422, ApiErrorCode.asset_not_found, f"{kind}: no asset {ref.asset_id}")
    if kind not in asset.media:
        code = "no_video_stream" if kind == "video" else "no_audio_stream"
        raise ApiError(422, code, f"{kind}: asset {asset.id} has no {kind} stream")  # type: ignore[arg-type]
    return JobInput(asset_id=asset.id, sha256=asset.sha256)


def admit(spec: JobSpec, tenant: str, store: JobStore) -> None:
    """The tenant's quotas (concurrent jobs, video length, file size) and safe webhook and output targets."""
    for field, url in (("webhook_url", spec.webhook_url), ("delivery_url", spec.delivery_url)):
        if url:
            try:
                check_url(url, store.settings, resolve=False)  # resolved again on delivery
            except UrlRejected as exc:
                raise ApiError(422, ApiErrorCode.url_not_allowed, f"{field}: {exc.message}") from exc
    # Inputs by URL are held to the same quotas after their download (lipdub.service.inputs).
    video, audio = (store.assets.get(tenant, ref.asset_id) if ref.asset_id is not None else None
                    for ref in (spec.video, spec.audio))
    try:
        Quotas(store.r, store.settings).admit_job(
            tenant, float(video.media.get("duration") or 0) if video else None,
            [a.size for a in (video, audio) if a is not None])
    except QuotaExceeded as exc:
        status_code = 429 if exc.retry_after is not None else 422
        raise ApiError(status_code, ApiErrorCode(exc.code), exc.message,
                       headers={"Retry-After": str(exc.retry_after)} if exc.retry_after else None) from exc


@router.post("", status_code=status.HTTP_202_ACCEPTED, responses={409: {"model": ErrorResponse},
                                                                   422: {"model": ErrorResponse}})
def create_job(body: JobCreate, tenant: TenantDep, store: StoreDep, base_url: BaseUrlDep,
               idempotency_key: Annotated[str | None, Header()] = None) -> JobPublic:
    """Accept a dubbing job; follow it at `GET /v1/jobs/{id}`. With an `Idempotency-Key`, repeating the
    same request returns the same job, and reusing the key for another request is a 409. Inputs given by
    `url` are downloaded by the job's probe stage (a failed download fails the job with its code)."""
    body_hash = None
    if idempotency_key is not None:
        body_hash = idempotency_body_hash(idempotency_key, body)
        # A retry of a request that already made its job gets that job, before any quota is counted
        # (the job itself may be what holds the tenant at its concurrency cap).
        try:
            earlier = store.idempotency.lookup(tenant, idempotency_key, body_hash)
        except ValueError as exc:
            raise ApiError(409, ApiErrorCode.idempotency_conflict, str(exc)) from exc
        if earlier is not None:
            return _existing(store, tenant, earlier, base_url)
    spec = JobSpec(video=resolve_input(body.video, "video", tenant, store, allow_url=True),
                   audio=resolve_input(body.audio, "audio", tenant, store, allow_url=True),
                   options=body.options, webhook_url=str(body.webhook_url) if body.webhook_url else None,
                   delivery_url=body.delivery_url, metadata=body.metadata, priority=body.priority)
    with store.admission(tenant):
        admit(spec, tenant, store)
        job_id = f"job_{uuid.uuid4().hex}"
        if idempotency_key is not None and body_hash is not None:
            try:
                job_id, created = store.idempotency.claim(tenant, idempotency_key, body_hash, job_id)
            except ValueError as exc:
                raise ApiError(409, ApiErrorCode.idempotency_conflict, str(exc)) from exc
            if not created:  # a concurrent request with this key won the claim
                return _existing(store, tenant, job_id, base_url)
        job = store.create(tenant, spec, job_id=job_id, idempotency_key=idempotency_key)
    try:
        store.start(job.id, spec.queue_priority)
    except Exception as exc:  # the broker is down: the client is told, so the job must not start later
        store.fail(job.id, "internal", f"could not queue the job: {exc}", retryable=True)
        if idempotency_key is not None:
            store.idempotency.release(tenant, idempotency_key, job.id)
        raise ApiError(503, ApiErrorCode.service_unavailable, "the job queue is unavailable; retry later",
                       headers={"Retry-After": "5"}) from exc
    return JobPublic.of(job, base_url)


@router.get("")
def list_jobs(tenant: TenantDep, store: StoreDep, base_url: BaseUrlDep,
              status: JobStatus | None = None, batch: str | None = None,
              created_after: datetime | None = None, created_before: datetime | None = None,
              cursor: str | None = None, limit: Annotated[int, Query(ge=1, le=100)] = 20) -> JobList:
    """The tenant's jobs, newest first, `limit` per page; follow `next_cursor` for more."""
    check_cursor(cursor)
    jobs, next_cursor = store.page(tenant, status=status, batch=batch,
                                   created_after=created_after.timestamp() if created_after else None,
                                   created_before=created_before.timestamp() if created_before else None,
                                   cursor=cursor, limit=limit)
    return JobList(data=[JobPublic.of(j, base_url) for j in jobs], next_cursor=next_cursor)


@router.get("/{job_id}")
async def get_job(job_id: str, tenant: TenantDep, store: StoreDep, base_url: BaseUrlDep,
                  wait: Annotated[float, Query(ge=0, le=MAX_WAIT_SECONDS,
                                               description="Long-poll: wait up to this many seconds "
                                                           "for the job to change")] = 0) -> JobPublic:
    job = await run_in_threadpool(store.get_for_tenant, tenant, job_id)
    if job is None:
        raise not_found("job")
    deadline = time.monotonic() + wait
    while not job.status.is_final and time.monotonic() < deadline:
        await asyncio.sleep(POLL_SECONDS)
        if await run_in_threadpool(store.version, job_id) != job.version:
            job = await run_in_threadpool(store.get_for_tenant, tenant, job_id) or job
            break
    return JobPublic.of(job, base_url)


@router.post("/{job_id}/cancel", responses={409: {"model": ErrorResponse}})
def cancel_job(job_id: str, tenant: TenantDep, store: StoreDep, base_url: BaseUrlDep) -> JobPublic:
    """Cancel a queued or running job; a running render stops at its next chunk."""
    job = _job(store, tenant, job_id)
    if job.status.is_final or not store.cancel(job_id):
        raise ApiError(409, ApiErrorCode.job_not_cancelable, f"the job is already {job.status}")
    return JobPublic.of(_job(store, tenant, job_id), base_url)


@router.delete("/{job_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response,
               responses={409: {"model": ErrorResponse}})
def delete_job(job_id: str, tenant: TenantDep, store: StoreDep, storage: StorageDep) -> Response:
    """Delete an ended job now: its record, its result and intermediate files (otherwise kept for
    `LIPDUB_JOB_TTL_SECONDS`). Its inputs (assets) stay. A queued or running job must be canceled first,
    and a batch's job waits for its batch to end (the batch counts it)."""
    job = _job(store, tenant, job_id)
    if not job.status.is_final:
        raise ApiError(409, ApiErrorCode.job_not_deletable, f"the job is {job.status}; cancel it first")
    if job.batch:
        batch = BatchStore(store).get(job.batch)
        if batch is not None and not batch.status.is_final:
            raise ApiError(409, ApiErrorCode.job_not_deletable,
                           f"the job belongs to batch {job.batch}, which is {batch.status}; delete it once the "
                           "batch has ended")
    janitor.delete_job(job_id, tenant, store, storage)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{job_id}/result", status_code=307, response_class=Response,
            responses={307: {"description": "Redirect to a short-lived download URL"},
                       200: {"content": {"video/mp4": {}}, "description": "The video (local storage)"},
                       409: {"model": ErrorResponse}})
def get_result(job_id: str, tenant: TenantDep, store: StoreDep, storage: StorageDep) -> Response:
    """The dubbed MP4: a redirect to a presigned URL (S3), or the file itself (local storage)."""
    job = _succeeded(store, tenant, job_id)
    key, filename = keys.result(job.id), f"{job.id}.mp4"
    url = storage.download_url(key, filename)
    if url is not None:
        return RedirectResponse(url, status_code=307)
    return StreamingResponse(storage.stream(key), media_type="video/mp4",
                             headers={"Content-Disposition": f'attachment; filename="{filename}"',
                                      "Content-Length": str(storage.size(key))})


@router.get("/{job_id}/report", responses={409: {"model": ErrorResponse}})
def get_report(job_id: str, tenant: TenantDep, store: StoreDep) -> dict[str, Any]:
    """Quality report: frames, frames passed through without a face, face coverage, stage durations."""
    job = _succeeded(store, tenant, job_id)
    return {"job_id": job.id, **(job.report or {}), "cache": job.cache}


def _existing(store: JobStore, tenant: str, job_id: str, base_url: str) -> JobPublic:
    """The job an earlier request with the same Idempotency-Key made."""
    existing = store.get_for_tenant(tenant, job_id)
    if existing is None:  # the first request claimed the key but has not stored its job yet
        raise ApiError(409, ApiErrorCode.request_in_progress,
                       "a request with this Idempotency-Key is still being processed")
    return JobPublic.of(existing, base_url)


def _job(store: JobStore, tenant: str, job_id: str) -> JobState:
    job = store.get_for_tenant(tenant, job_id)
    if job is None:
        raise not_found("job")
    return job


def _succeeded(store: JobStore, tenant: str, job_id: str) -> JobState:
    job = _job(store, tenant, job_id)
    if job.status != JobStatus.succeeded:
        raise ApiError(409, ApiErrorCode.result_not_ready, f"the job is {job.status}, not succeeded")
    return job

