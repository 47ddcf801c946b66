"""The job vocabulary of both paths: what a dub is asked to do (`JobSpec`, `JobOptions`), where it stands
(`JobStatus`, `Stage`) and what prep said of a source (`PrepVerdict`).

`lipdub dub` builds a `JobOptions` from its flags, the API from the request body; the Celery tasks read the
same types back from Redis. JSON exists only at those edges (`model_dump_json` / `model_validate_json`).
Option defaults come from `Settings` once, when the options are made (`LIPDUB_SYNC_MODE`,
`LIPDUB_FRAME_RATE`), so a stored job keeps the defaults it was accepted under.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from lipdub.config import FrameRate, Settings, SyncMode, get_settings
from lipdub.prep.tracking import Target
from lipdub.timeline import dub_ranges


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    canceled = "canceled"

    @property
    def is_final(self) -> bool:
        return self in (JobStatus.succeeded, JobStatus.failed, JobStatus.canceled)


class Stage(StrEnum):
    probe = "probe"
    prep = "prep"
    audio = "audio"
    render = "render"
    mux = "mux"
    finalize = "finalize"


Priority = Literal["high", "normal", "low"]
# Celery/Redis priorities: 0 is served first.
QUEUE_PRIORITY: dict[str, int] = {"high": 0, "normal": 3, "low": 6}

# The options whose default is a setting (LIPDUB_<NAME>): filled in when the options are made.
FROM_SETTINGS = ("sync_mode", "frame_rate")


class FaceTarget(BaseModel):
    """The face to dub in a video with several: the one under `point`, or overlapping `box` most, at `time`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    time: float = Field(default=0.0, ge=0, description="Seconds into the video where the face is visible")
    point: tuple[float, float] | None = Field(default=None, description="(x, y) in pixels of the upright video")
    box: tuple[float, float, float, float] | None = Field(default=None,
                                                          description="(x0, y0, x1, y1) in pixels of the upright video")

    @model_validator(mode="after")
    def _point_or_box(self) -> FaceTarget:
        self.target()  # prep's rule for a face choice; its ValueError becomes a 422
        return self

    def target(self) -> Target:
        return Target(self.time, self.point, self.box)


# `JobOptions()` takes its defaults from `get_settings()`; the embedded path, which may run under other settings,
# says which: `JobOptions.model_validate(given, context={"settings": settings})` (or `JobOptions.under`).
class JobOptions(BaseModel):
    """How to dub: the options of a job."""  # the API's schema shows this docstring

    model_config = ConfigDict(extra="forbid", frozen=True)
    # Factories, not static defaults: read when the options are made (OpenAPI shows them as optional, no default).
    sync_mode: SyncMode = Field(default_factory=lambda: get_settings().sync_mode,
                                description="How the video and audio lengths are matched (default: "
                                            "LIPDUB_SYNC_MODE, bounce)")
    frame_rate: FrameRate = Field(default_factory=lambda: get_settings().frame_rate,
                                  description="The output's frame rate: 'source' keeps the video's own (23.976, "
                                  "29.97, 30, 50, 60 ...; faster sources get 60), '25' re-times it to 25 fps, "
                                  "repeating or dropping source frames (default: LIPDUB_FRAME_RATE, source)")
    target_face: Literal["auto"] | FaceTarget = Field(
        default="auto", description="Which face to dub: 'auto' = the largest, most central, most persistent one, "
        "and among equally prominent faces the one whose lips follow the video's own soundtrack (if none clearly "
        "does, or they take turns talking: multiple_faces); or a point/box at a time")
    enroll: bool = Field(default=False, description="Fine-tune the DINet renderer on this source's own frames "
                         "before rendering (LIPDUB_DINET_ENROLL_STEPS steps, once per source; later jobs of the "
                         "source use it too). Measured gain on held-out clips so far: none (BENCHMARKS.md)")
    ranges: tuple[tuple[float, float], ...] | None = Field(
        default=None, description="Re-animate only these [start, end] stretches, in seconds of the output and in "
        "time order; elsewhere the source frames are kept (a reaction shot of another person, a part left in "
        "the original language, another face's lines) while the new audio plays throughout. The job "
        "report's source_shots and other_speaker help find them. Default: the whole video")

    @model_validator(mode="before")
    @classmethod
    def _defaults_from_settings(cls, data: Any, info: ValidationInfo) -> Any:
        """None means the default; a caller with its own settings (context) gets its defaults, not get_settings()'."""
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if not (k in FROM_SETTINGS and v is None)}
            settings: Settings | None = (info.context or {}).get("settings")
            if settings is not None:
                data = {**{name: getattr(settings, name) for name in FROM_SETTINGS}, **data}
        return data

    @classmethod
    def under(cls, settings: Settings, **given: Any) -> JobOptions:
        """`given` options, the rest from `settings` (the embedded path's own, which need not be get_settings())."""
        return cls.model_validate(given, context={"settings": settings})

    @field_validator("ranges")
    @classmethod
    def _check_ranges(cls, value: tuple[tuple[float, float], ...] | None) -> tuple[tuple[float, float], ...] | None:
        return None if value is None else dub_ranges(value)  # ValueError → 422 naming the range

    @property
    def target(self) -> Target | None:
        """prep's face choice: None for 'auto'."""
        return None if self.target_face == "auto" else self.target_face.target()

    @property
    def dub_ranges(self) -> tuple[tuple[float, float], ...]:
        return self.ranges or ()


class InputRef(BaseModel):
    """A job's input as stored: an asset (`asset_id` and the bytes' `sha256`), or a `url` the probe stage
    downloads into an asset (then all three)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    asset_id: str | None = None
    sha256: str | None = None
    url: str | None = None

    @property
    def downloaded(self) -> bool:
        return self.sha256 is not None

    @property
    def digest(self) -> str:
        """The bytes' SHA-256 (their asset's storage key): known for an asset, for a URL once downloaded."""
        if self.sha256 is None:
            raise ValueError(f"input {self.url} is not downloaded yet")
        return self.sha256


class JobSpec(BaseModel):
    """An accepted job: its inputs, options and where its result and events go."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    video: InputRef
    audio: InputRef
    options: JobOptions
    webhook_url: str | None = None
    delivery_url: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    priority: Priority = "normal"

    @property
    def queue_priority(self) -> int:
        return QUEUE_PRIORITY[self.priority]


class JobError(BaseModel):
    """A failure as jobs, preflights and webhooks report it (lipdub.errors.ErrorCode values, or `internal`)."""

    model_config = ConfigDict(frozen=True)
    code: str
    message: str
    retryable: bool = False


class PrepVerdict(BaseModel):
    """What prep (or a preflight's sample) said of a source: pass with its track summary, or fail with the
    gate's error."""

    model_config = ConfigDict(frozen=True)
    verdict: Literal["pass", "fail"]
    error: JobError | None = None
    summary: dict[str, Any] | None = None  # lipdub.prep.track.TrackSummary as a dict
    cached: bool = False
    sampled_seconds: float | None = None  # a preflight's sample; None for a full prep
    duration: float | None = None

    @property
    def ok(self) -> bool:
        return self.verdict == "pass"
