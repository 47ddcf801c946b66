"""A job as the outside sees it: the body of `GET /v1/jobs/{id}` and of the job's webhooks. The API's schemas
(lipdub_api.schemas) and the webhooks worker both use it, so a worker needs no API package on its path.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from lipdub.jobs import JobStatus, Priority, Stage
from lipdub.service.status import JobState


def iso(ts: float | None) -> datetime | None:
    return datetime.fromtimestamp(ts, UTC) if ts is not None else None


class ErrorBody(BaseModel):
    code: str
    message: str
    retryable: bool = False
    details: list[dict[str, Any]] | None = None


class DeliveryPublic(BaseModel):
    status: Literal["delivered", "failed"]
    url: str = Field(description="The delivery_url without its query (its signature)")
    attempts: int
    http_status: int | None = None
    bytes: int | None = None
    error: str | None = None
    seconds: float
    at: datetime


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
    priority: Priority
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
                   options=job.spec.options.model_dump(mode="json"), metadata=job.spec.metadata,
                   priority=job.spec.priority, batch=job.batch,
                   delivery=DeliveryPublic(**{**job.delivery, "at": iso(job.delivery["at"])})
                   if job.delivery else None)
