"""The API's request errors; main.py turns them (and LipdubError) into JSON error bodies."""

from __future__ import annotations

from typing import Any

from lipdub.service.indexes import Cursor
from lipdub_api.schemas import ApiErrorCode


class ApiError(Exception):
    def __init__(self, status: int, code: ApiErrorCode, message: str,
                 details: list[dict[str, Any]] | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details, self.headers = status, code, message, details, headers
        # Too many requests or a dependency down: the same request may succeed later (Retry-After says when).
        self.retryable = status in (429, 503)


def not_found(what: str) -> ApiError:
    return ApiError(404, ApiErrorCode.not_found, f"{what} not found")


def check_cursor(cursor: str | None) -> None:
    """A 422 for a list cursor that no page returned (the listings' `next_cursor`)."""
    if cursor is not None:
        try:
            Cursor.parse(cursor)
        except ValueError as exc:
            raise ApiError(422, ApiErrorCode.invalid_request, "malformed cursor; pass a next_cursor as given") from exc
