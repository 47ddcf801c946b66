"""Preflight: the prep stage's summary and gate verdict for a source, and an ETA, without rendering."""

from __future__ import annotations

from fractions import Fraction

from celery.exceptions import TimeoutError as CeleryTimeout
from fastapi import APIRouter

from lipdub import FPS
from lipdub.jobs import JobError, PrepVerdict, Stage
from lipdub.prep.cache import source_key
from lipdub.service.celery_app import app as celery_app
from lipdub.service.status import JobStore
from lipdub_api.deps import SettingsDep, StoreDep, TenantDep
from lipdub_api.errors import ApiError
from lipdub_api.routes.jobs import resolve_input
from lipdub_api.schemas import ApiErrorCode, ErrorBody, ErrorResponse, PreflightCreate, PreflightPublic

router = APIRouter(prefix="/v1", tags=["preflight"], responses={401: {"model": ErrorResponse}})


def eta_seconds(store: JobStore, n_frames: int, prep_cached: bool) -> float | None:
    """Seconds a job on this source should take, from the mean seconds per frame of each stage so far."""
    stats = store.metrics.stage_frame_stats()
    if not stats:
        return None
    stages = [s for s in Stage if not (prep_cached and s == Stage.prep)]
    return round(sum(stats.get(s, 0.0) for s in stages) * n_frames, 1)


@router.post("/preflight", responses={503: {"model": ErrorResponse}})
def preflight(body: PreflightCreate, tenant: TenantDep, store: StoreDep, settings: SettingsDep) -> PreflightPublic:
    """The prep stage's verdict on a video, without rendering: from the prep cache when the source was
    prepared before (the full summary), else a fast look at its first seconds (the face pass and quality
    gate on `LIPDUB_PREFLIGHT_SECONDS`), after which a passing source is prepared in the background so the
    job that follows finds it cached."""
    video = resolve_input(body.video, "video", tenant, store)
    target = None if body.target_face == "auto" else body.target_face.target()
    pointer = store.assets.prep_pointer(source_key(video.digest, target))
    if pointer is not None and "rejected" in pointer:
        result = PrepVerdict(verdict="fail", error=JobError(**pointer["rejected"]), cached=True)
    elif pointer is not None:
        result = PrepVerdict(verdict="pass", summary=pointer["summary"], cached=True)
    else:
        pending = celery_app.send_task("dub.preflight", priority=0,
                                       args=(video.digest, body.model_dump(mode="json")["target_face"]))
        try:
            raw = pending.get(timeout=settings.preflight_wait_seconds, propagate=False)
        except CeleryTimeout as exc:
            raise ApiError(503, ApiErrorCode.service_unavailable, "the preflight did not finish in "
                           f"{settings.preflight_wait_seconds} s; try again") from exc
        finally:
            pending.forget()
        if not isinstance(raw, dict):
            raise ApiError(503, ApiErrorCode.service_unavailable, f"the preflight failed: {raw}")
        result = PrepVerdict.model_validate(raw)
    summary = result.summary
    # Output frames of a job at the default frame rate, the source's own (render and mux cost per frame).
    fps = float(Fraction(summary.get("native_rate") or FPS)) if summary else FPS
    if result.duration is not None:  # a sampled summary counts the sample's frames: the ETA needs the whole's
        n_frames = round(result.duration * fps)
    else:
        n_frames = int(summary.get("native_frames") or summary["n_frames"]) if summary else 0
    eta = eta_seconds(store, n_frames, result.cached) if result.ok and n_frames else None
    return PreflightPublic(verdict=result.verdict,
                           error=ErrorBody(**result.error.model_dump()) if result.error is not None else None,
                           summary=summary, cached=result.cached, eta_seconds=eta,
                           sampled_seconds=result.sampled_seconds)
