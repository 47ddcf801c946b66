"""Per-API-key rate limiting for every /v1 request: 429 with Retry-After beyond the allowed rate."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from starlette.responses import Response

from lipdub.config import get_settings
from lipdub.service.limits import RateLimiter
from lipdub.service.status import get_store
from lipdub_api.schemas import ApiErrorCode, ErrorBody, ErrorResponse


async def rate_limit(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    """Counted per key (its SHA-256, as stored), before authentication, so floods of bad keys are
    limited too. Requests without a key (health, metrics, docs) are not counted."""
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and key and request.url.path.startswith("/v1/"):
        limiter = RateLimiter(get_store().r, get_settings())
        decision = await run_in_threadpool(limiter.hit, hashlib.sha256(key.strip().encode()).hexdigest())
        if not decision.allowed:
            body = ErrorResponse(error=ErrorBody(code=ApiErrorCode.rate_limited, retryable=True,
                                                 message=f"too many requests; retry in {decision.retry_after} s"))
            return JSONResponse(body.model_dump(mode="json", exclude_none=True), status_code=429,
                                headers={"Retry-After": str(decision.retry_after)})
    return await call_next(request)
