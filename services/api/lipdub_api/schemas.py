"""The HTTP shapes only: request bodies (…Create) and responses (…Public). A job's options, face choice,
priority, status and stage are lipdub.jobs' types, and its public shape is lipdub.service.public's (the
webhooks carry it too): this module does not restate them.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, field_validator, model_validator

from lipdub.jobs import FaceTarget, JobOptions, JobStatus, Priority, Stage
from lipdub.service.assets_store import Asset
from lipdub.service.public import ChunksPublic, DeliveryPublic, ErrorBody, JobPublic, iso

IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9._~-]{1,128}$")  # the sync.so rule

__all__ = ["ChunksPublic", "DeliveryPublic", "ErrorBody", "FaceTarget", "JobOptions", "JobPublic", "JobStatus",
           "Priority", "Stage"]


class ApiErrorCode(StrEnum):
    """Codes of request errors (4xx); job failures carry lipdub.errors.ErrorCode values instead."""

    unauthorized = "unauthorized"
    not_found = "not_found"
    invalid_request = "invalid_request"
    invalid_idempotency_key = "invalid_idempotency_key"
    idempotency_conflict = "idempotency_conflict"
    request_in_progress = "request_in_progress"
    payload_too_large = "payload_too_large"
    asset_not_found = "asset_not_found"
    asset_in_use = "asset_in_use"
    url_inputs_unsupported = "url_inputs_unsupported"
    job_not_cancelable = "job_not_cancelable"
    job_not_deletable = "job_not_deletable"
    result_not_ready = "result_not_ready"
    unsupported_storage = "unsupported_storage"
    service_unavailable = "service_unavailable"
    # Batches, webhooks and tenancy limits (issue 8).
    rate_limited = "rate_limited"
    concurrency_limit_reached = "concurrency_limit_reached"
    input_too_long = "input_too_long"
    url_not_allowed = "url_not_allowed"
    manifest_not_found = "manifest_not_found"
    batch_not_cancelable = "batch_not_cancelable"
    batch_not_deletable = "batch_not_deletable"
    manifest_in_use = "manifest_in_use"


class ErrorResponse(BaseModel):
    error: ErrorBody


# --- assets --------------------------------------------------------------------------------------------
class AssetPublic(BaseModel):
    id: str
    sha256: str
    size: int
    media: dict[str, Any] = Field(description="What ffprobe found: kind, duration, streams")
    created_at: datetime

    @classmethod
    def of(cls, asset: Asset) -> AssetPublic:
        return cls(id=asset.id, sha256=asset.sha256, size=asset.size, media=asset.media,
                   created_at=iso(asset.created_at))  # type: ignore[arg-type]


class AssetList(BaseModel):
    data: list[AssetPublic]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null on the last page")


class UploadCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    size: int = Field(gt=0, description="Total size of the file in bytes")
    filename: str | None = Field(default=None, max_length=255)


class UploadPart(BaseModel):
    part_number: int
    url: str


class UploadPublic(BaseModel):
    id: str
    part_size: int
    parts: list[UploadPart] = Field(description="PUT each part's bytes to its URL; keep the ETag headers")
    expires_at: datetime


class UploadComplete(BaseModel):
    model_config = ConfigDict(extra="forbid")
    etags: list[str] = Field(min_length=1, description="ETag of every part, in part order")


# --- jobs ----------------------------------------------------------------------------------------------
class InputRef(BaseModel):
    """An uploaded asset (`asset_id`), or an http(s) URL the job downloads in its probe stage (jobs only;
    a preflight takes an asset)."""

    model_config = ConfigDict(extra="forbid")
    asset_id: str | None = None
    url: HttpUrl | None = None

    @model_validator(mode="after")
    def one_source(self) -> InputRef:
        if (self.asset_id is None) == (self.url is None):
            raise ValueError("give exactly one of asset_id or url")
        return self


DELIVERY_URL = ("A presigned PUT URL (S3, GCS, Azure Blob SAS, or any server taking an HTTP PUT) the result MP4 is "
              "uploaded to once the job has succeeded, before its webhook; the job's `delivery` says whether it "
              "arrived. The result stays downloadable from lipdub as well")


def delivery_url(value: str | None) -> str | None:
    """An http(s) URL, kept exactly as given: a presigned URL's signature covers its query as written."""
    if value is not None:
        HttpUrl(value)  # ValueError → 422
    return value


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    video: InputRef
    audio: InputRef
    # Made per request: LIPDUB_SYNC_MODE and LIPDUB_FRAME_RATE of the API are the defaults of what the body leaves out.
    options: JobOptions = Field(default_factory=JobOptions)
    webhook_url: HttpUrl | None = Field(default=None, description="Stored with the job; delivered by the "
                                                                   "webhooks worker")
    delivery_url: str | None = Field(default=None, max_length=4096, description=DELIVERY_URL)

    @field_validator("delivery_url")
    @classmethod
    def _check_delivery_url(cls, value: str | None) -> str | None:
        return delivery_url(value)
    metadata: dict[str, str] = Field(default_factory=dict, max_length=16,
                                     description="Up to 16 string pairs, returned with the job")
    priority: Priority = "normal"


class JobList(BaseModel):
    data: list[JobPublic]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null on the last page")


class PreflightCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    video: InputRef
    target_face: Literal["auto"] | FaceTarget = Field(default="auto", description="As the job option")


class PreflightPublic(BaseModel):
    verdict: Literal["pass", "fail"]
    error: ErrorBody | None = None
    summary: dict[str, Any] | None = Field(default=None, description="The prep stage's track summary (of the "
                                                                    "sampled seconds when not cached)")
    cached: bool = Field(description="The summary came from the prep cache (a job on this source is faster)")
    sampled_seconds: float | None = Field(default=None, description="Seconds of the video the verdict is "
                                                                    "predicted from; null for a cached full prep")
    eta_seconds: float | None = Field(default=None, description="Estimated processing time of a job on this "
                                                                "source, from the stage timings so far")
