"""Delivery of a job's result to the customer's own storage.

A job (or batch item) may name an `delivery_url`: a presigned PUT URL of S3, GCS, Azure Blob (SAS) or any
server that takes an HTTP PUT of the file. When the job has succeeded, the webhooks worker uploads the
result MP4 there (`deliver`, from `events.job_finished`), before it sends the job's webhook, so the
webhook says whether the file is in place. The job stays succeeded whatever happens: its result is still
at `GET /v1/jobs/{id}/result`, and the job's `delivery` says `delivered` or `failed` and why.

The URL is held to the same rules as every user-given URL (lipdub.service.urls: public addresses only,
pinned to the checked address). A 2xx answer is a delivery; 408, 429, 5xx and network errors are tried
again (`delivery_attempts` in all, backing off), other answers are final. The record never holds the URL's
query, which carries the presigned signature.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from lipdub.service.indexes import now
from lipdub.service.status import JobState, JobStore
from lipdub.service.storage import Storage, keys
from lipdub.service.urls import UrlRejected, check_url, client, pinned_request

log = logging.getLogger(__name__)


class TryAgain(RuntimeError):
    """A failure the same PUT may get past later (a timeout, 429, a server error)."""


def redacted(url: str) -> str:
    """The URL without its query and fragment (a presigned URL's signature is a credential)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def deliver(job: JobState, store: JobStore, storage: Storage) -> dict[str, Any]:
    """PUT the job's result to its `delivery_url`; returns the delivery record (also stored with the job)."""
    settings = store.settings
    url = str(job.spec.delivery_url)
    record: dict[str, Any] = {"url": redacted(url), "attempts": 0}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="lipdub-deliver-") as tmp:
        result = storage.get_file(keys.result(job.id), Path(tmp) / "result.mp4")
        size = result.stat().st_size

        def put() -> int:
            record["attempts"] += 1
            target = check_url(url, settings)  # resolved (and pinned) again on every attempt
            with client(settings, settings.delivery_timeout) as http, result.open("rb") as body:
                request = pinned_request(http, "PUT", target, content=body,
                                         headers={"Content-Type": "video/mp4", "Content-Length": str(size)})
                try:
                    response = http.send(request)
                except httpx.HTTPError as exc:
                    raise TryAgain(f"{type(exc).__name__}: {exc}") from exc
            if response.status_code in (408, 429) or response.status_code >= 500:
                raise TryAgain(f"HTTP {response.status_code}")
            return response.status_code

        try:
            status = Retrying(stop=stop_after_attempt(settings.delivery_attempts),
                              wait=wait_exponential(multiplier=settings.delivery_backoff_seconds),
                              retry=retry_if_exception_type(TryAgain), reraise=True)(put)
        except (TryAgain, UrlRejected, OSError) as exc:  # OSError: the file could not be read or sent
            record.update(status="failed", error=str(exc))
        else:
            ok = 200 <= status < 300
            record.update(status="delivered" if ok else "failed", http_status=status, bytes=size)
            if not ok:
                record["error"] = f"HTTP {status}"
    record.update(seconds=round(time.monotonic() - started, 2), at=now())
    log.log(logging.INFO if record["status"] == "delivered" else logging.WARNING,
            "delivery of job %s to %s: %s", job.id, record["url"], record)
    return record
