"""The HTTP shapes only: request bodies (…Create) and responses (…Public)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, field_validator, model_validator

from lipdub.config import FrameRate, SyncMode
from lipdub.prep.tracking import Target
from lipdub.service.assets_store import Asset
from lipdub.service.status import JobState, JobStatus, Stage
from lipdub.timeline import dub_ranges

IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9._~-]{1,128}$")  # the sync.so rule

# Celery/Redis priorities: 0 is served first.
PRIORITIES = {"high": 0, "normal": 3, "low": 6}


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


class ErrorBody(BaseModel):
    code: str
    message: str
    retryable: bool = False
    details: list[dict[str, Any]] | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


def iso(ts: float | None) -> datetime | None:
    return datetime.fromtimestamp(ts, UTC) if ts is not None else None


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


class FaceTarget(BaseModel):
    """The face to dub in a video with several: the one under `point`, or overlapping `box` most, at `time`."""

    model_config = ConfigDict(extra="forbid")
    time: float = Field(default=0.0, ge=0, description="Seconds into the video where the face is visible")
    point: tuple[float, float] | None = Field(default=None, description="(x, y) in pixels of the upright video")
    box: tuple[float, float, float, float] | None = Field(default=None,
                                                          description="(x0, y0, x1, y1) in pixels of the upright video")

    @model_validator(mode="after")
    def point_or_box(self) -> FaceTarget:
        Target(self.time, self.point, self.box)  # prep's rule for a face choice; its ValueError becomes a 422
        return self


class JobOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sync_mode: SyncMode = Field(default="bounce", description="How the video and audio lengths are matched")
    frame_rate: FrameRate = Field(default="source", description="The output's frame rate: 'source' keeps the "
                                  "video's own (23.976, 29.97, 30, 50, 60 ...; faster sources get 60), '25' "
                                  "re-times it to 25 fps, repeating or dropping source frames")
    target_face: Literal["auto"] | FaceTarget = Field(
        default="auto", description="Which face to dub: 'auto' = the largest, most central, most persistent one, "
        "and among equally prominent faces the one whose lips follow the video's own soundtrack (if none clearly "
        "does, or they take turns talking: multiple_faces); or a point/box at a time")
    enroll: bool = Field(default=False, description="Fine-tune the DINet renderer on this source's own frames "
                         "before rendering (LIPDUB_DINET_ENROLL_STEPS steps, once per source; later jobs of the "
                         "source use it too). Measured gain on held-out clips so far: none (BENCHMARKS.md)")
    ranges: list[tuple[float, float]] | None = Field(
        default=None, description="Re-animate only these [start, end] stretches, in seconds of the output and in "
        "time order; elsewhere the source frames are kept (a reaction shot of another person, a part left in "
        "the original language, another face's lines) while the new audio plays throughout. The job "
        "report's source_shots and other_speaker help find them. Default: the whole video")

    @field_validator("ranges")
    @classmethod
    def _check_ranges(cls, value: list[tuple[float, float]] | None) -> list[tuple[float, float]] | None:
        return None if value is None else list(dub_ranges(value))  # ValueError → 422 naming the range


DELIVERY_URL = ("A presigned PUT URL (S3, GCS, Azure Blob SAS, or any server taking an HTTP PUT) the result MP4 is "
              "uploaded to once the job has succeeded, before its webhook; the job's `delivery` says whether it "
              "arrived. The result stays downloadable from lipdub as well")


def delivery_url(value: str | None) -> str | None:
    """An http(s) URL, kept exactly as given: a presigned URL's signature covers its query as written."""
    if value is not None:
        HttpUrl(value)  # ValueError → 422
    return value


class DeliveryPublic(BaseModel):
    status: Literal["delivered", "failed"]
    url: str = Field(description="The delivery_url without its query (its signature)")
    attempts: int
    http_status: int | None = None
    bytes: int | None = None
    error: str | None = None
    seconds: float
    at: datetime


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    video: InputRef
    audio: InputRef
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
    priority: Literal["high", "normal", "low"] = "normal"


class ChunksPublic(BaseModel):
    done: int
    total: int | None


class JobPublic(BaseModel):
    id: str
    status: JobStatus
    stage: Stage | None
    progress: float = Field(description="0–1 over all stages")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    timings: dict[str, float] = Field(description="Seconds per stage (wall clock), plus time queued")
    error: ErrorBody | None
    outputs: dict[str, str] = Field(description="Result URLs of a succeeded job")
    cache: dict[str, bool] = Field(description="prep_hit: the source's prep was reused from an earlier job")
    chunks: ChunksPublic
    options: dict[str, Any]
    metadata: dict[str, str]
    priority: str
    batch: str | None = None
    delivery: DeliveryPublic | None = Field(default=None, description="The upload of the result to the job's "
                                            "delivery_url; null before it ends, or without a delivery_url")

    @classmethod
    def of(cls, job: JobState, base_url: str) -> JobPublic:
        outputs = {"video": f"{base_url}/v1/jobs/{job.id}/result",
                   "report": f"{base_url}/v1/jobs/{job.id}/report"} if job.status == JobStatus.succeeded else {}
        return cls(id=job.id, status=job.status, stage=job.stage, progress=job.progress,
                   created_at=iso(job.created_at), started_at=iso(job.started_at),  # type: ignore[arg-type]
                   finished_at=iso(job.finished_at), timings=job.timings,
                   error=ErrorBody(**job.error) if job.error else None, outputs=outputs, cache=job.cache,
                   chunks=ChunksPublic(done=job.chunks_done, total=job.chunks),
                   options=job.spec.get("options", {}), metadata=job.spec.get("metadata", {}),
                   priority=job.spec.get("priority_name", "normal"), batch=job.batch,
                   delivery=DeliveryPublic(**{**job.delivery, "at": iso(job.delivery["at"])})
                   if job.delivery else None)


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
