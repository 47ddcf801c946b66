"""Errors with a machine-readable code, a human message, and whether a retry can help."""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    # Bad input: the caller must change something; retrying never helps.
    input_unreadable = "input_unreadable"
    no_video_stream = "no_video_stream"
    no_audio_stream = "no_audio_stream"
    empty_input = "empty_input"
    input_too_long = "input_too_long"
    no_speech = "no_speech"
    no_face = "no_face"
    face_too_small = "face_too_small"
    face_not_frontal = "face_not_frontal"
    multiple_faces = "multiple_faces"
    video_too_short = "video_too_short"
    unsupported_video = "unsupported_video"
    asset_deleted = "asset_deleted"  # an input asset was deleted before the job (a batch item) ran
    # Our side.
    timeout = "timeout"
    storage_unavailable = "storage_unavailable"
    internal = "internal"


class LipdubError(Exception):
    """Base error; `code` and `message` are what users and API clients see."""

    retryable = False

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    def __reduce__(self) -> tuple[type, tuple[object, ...]]:
        # Picklable with code and message intact: Celery round-trips task exceptions through pickle.
        return (type(self), (self.code, self.message))

    def as_dict(self) -> dict[str, object]:
        return {"code": str(self.code), "message": self.message, "retryable": self.retryable}


class InputError(LipdubError):
    """The input can't be dubbed as given (final, never retried)."""


class TransientError(LipdubError):
    """A failure of storage, network or a worker that a retry may fix."""

    retryable = True
