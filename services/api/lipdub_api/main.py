"""The lipdub API: uploads, jobs and health. Run with the command in lipdub.service.processes (uvicorn)."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from lipdub import __version__
from lipdub.errors import InputError, LipdubError, TransientError
from lipdub_api.errors import ApiError
from lipdub_api.ratelimit import rate_limit
from lipdub_api.routes import assets, batches, health, jobs, preflight, webhooks
from lipdub_api.schemas import ApiErrorCode, ErrorBody, ErrorResponse

log = logging.getLogger("lipdub_api")

app = FastAPI(title="lipdub", version=__version__,
              description="Lip-sync dubbing: upload a video and a speech track, get the video back with "
                          "the mouth re-animated to the new speech.")
for module in (health, assets, jobs, preflight, batches, webhooks):
    app.include_router(module.router)
app.middleware("http")(rate_limit)


def _error(status: int, body: ErrorBody, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(ErrorResponse(error=body).model_dump(mode="json", exclude_none=True),
                        status_code=status, headers=headers)


@app.exception_handler(ApiError)
async def api_error(_: Request, exc: ApiError) -> JSONResponse:
    return _error(exc.status, ErrorBody(code=exc.code, message=exc.message, retryable=exc.retryable,
                                        details=exc.details), exc.headers)


@app.exception_handler(InputError)
async def input_error(_: Request, exc: InputError) -> JSONResponse:
    return _error(422, ErrorBody(code=exc.code, message=exc.message))


@app.exception_handler(TransientError)
async def transient_error(_: Request, exc: TransientError) -> JSONResponse:
    log.warning("dependency unavailable: %s", exc)
    return _error(503, ErrorBody(code=exc.code, message=exc.message, retryable=True), {"Retry-After": "5"})


@app.exception_handler(LipdubError)
async def lipdub_error(_: Request, exc: LipdubError) -> JSONResponse:
    log.error("internal error: %s", exc)
    return _error(500, ErrorBody(code=exc.code, message=exc.message))


@app.exception_handler(RequestValidationError)
async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    details = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
               for e in exc.errors()]
    return _error(422, ErrorBody(code=ApiErrorCode.invalid_request, message="the request is not valid",
                                 details=details))


@app.exception_handler(StarletteHTTPException)
async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = ApiErrorCode.not_found if exc.status_code == 404 else ApiErrorCode.invalid_request
    return _error(exc.status_code, ErrorBody(code=code, message=str(exc.detail)))
