"""`dub.probe`, `dub.prep`, `dub.prep_source` and `dub.preflight`: check the inputs, then track the source face
once per source.

Prep artifacts are stored under the source's SHA-256 and face choice (`prep/{source}-v{prep_version}/`), so
every later job on the same bytes (and face) skips the work and records `cache.prep_hit`; a preflight warms
the same cache.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from celery.signals import worker_process_init

from lipdub.config import get_settings
from lipdub.errors import ErrorCode, InputError, TransientError
from lipdub.jobs import InputRef, JobError, PrepVerdict, Stage
from lipdub.media.inputs import probe_inputs
from lipdub.prep.preflight import preflight
from lipdub.prep.tracking import Target
from lipdub.service.celery_app import DEFAULT_PRIORITY, app
from lipdub.service.inputs import check_input, fetch_asset
from lipdub.service.prepcache import job_source, prepare_cached
from lipdub.service.status import get_store
from lipdub.service.storage import get_storage, keys
from lipdub.service.worker import StageTask, load_face_mesh, purge_local_prep, stage_run, warm_up

log = logging.getLogger(__name__)


@worker_process_init.connect
def _load_models(**_: object) -> None:
    warm_up("face mesh", load_face_mesh)
    purge_local_prep()


@app.task(name="dub.probe", base=StageTask)
def probe_task(job_id: str) -> None:
    """Download inputs given by URL, then reject unreadable or over-long inputs before any heavy work."""
    with stage_run(job_id, Stage.probe) as run:
        if run is None:
            return
        job = run.store.get(job_id)
        assert job is not None
        downloaded: dict[str, InputRef] = {}
        for kind in ("video", "audio"):
            ref: InputRef = getattr(job.spec, kind)
            if ref.asset_id is not None and run.store.assets.get(job.tenant, ref.asset_id) is None:
                raise InputError(ErrorCode.asset_deleted, f"{kind}: asset {ref.asset_id} was deleted before "
                                                          "the job ran")
            if ref.downloaded or ref.url is None:  # an uploaded asset, or a URL an earlier delivery downloaded
                continue
            # InputRefused (url_not_allowed, download_failed, payload_too_large, ...) fails the job.
            asset = fetch_asset(ref.url, job.tenant, run.scratch / f"download-{kind}", run.store, run.storage)
            check_input(kind, asset, job.tenant, run.store)
            downloaded[kind] = InputRef(url=ref.url, asset_id=asset.id, sha256=asset.sha256)
        if downloaded:
            run.store.set_inputs(job_id, **downloaded)  # prep and audio read the inputs' sha256 from the spec
        spec = job.spec.model_copy(update=downloaded)
        video = run.fetch(keys.asset(spec.video.digest), "input-video")
        audio = run.fetch(keys.asset(spec.audio.digest), "input-audio")
        probe_inputs(video, audio, run.settings)


@app.task(name="dub.prep", base=StageTask)
def prep_task(job_id: str) -> None:
    """Normalise the source and track its face, unless this source was prepared before."""
    with stage_run(job_id, Stage.prep) as run:
        if run is None:
            return
        sha, target = job_source(run.store.get(job_id).spec)  # type: ignore[union-attr]
        _, hit = prepare_cached(sha, run.store, run.storage, run.settings, run.scratch, run.progress, target)
        run.store.set_cache(job_id, prep_hit=hit)


_OUTSIDE_JOBS = {"autoretry_for": (TransientError,), "retry_backoff": 2, "max_retries": 3, "acks_late": True,
                 "reject_on_worker_lost": True}


@app.task(name="dub.prep_source", **_OUTSIDE_JOBS)
def prep_source_task(sha: str, target_face: dict[str, Any] | str | None = None) -> dict[str, Any]:
    """Prep one source outside any job (for the face `target_face` picks, as the job option; None or
    "auto": automatic) into the prep cache: the gate verdict and the track summary. Batches prepare each
    of their sources with this before releasing its items; a passing preflight warms the cache with it."""
    scratch = Path(tempfile.mkdtemp(prefix="lipdub-prep-source-", dir=_scratch_root()))
    try:
        summary, hit = prepare_cached(sha, get_store(), get_storage(), get_settings(), scratch,
                                      target=Target.from_option(target_face))
        return PrepVerdict(verdict="pass", summary=summary, cached=hit).model_dump(mode="json")
    except InputError as exc:
        return PrepVerdict(verdict="fail", error=JobError(code=str(exc.code), message=exc.message,
                                                          retryable=exc.retryable)).model_dump(mode="json")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@app.task(name="dub.preflight", **_OUTSIDE_JOBS)
def preflight_task(sha: str, target_face: dict[str, Any] | str | None = None) -> dict[str, Any]:
    """The fast preflight of a source not prepared yet (lipdub.prep.preflight: the face pass and gate on
    the first `preflight_seconds`): the predicted verdict and the sample's summary. A passing source is then
    queued for a full prep, so the job that usually follows finds it cached."""
    scratch = Path(tempfile.mkdtemp(prefix="lipdub-preflight-", dir=_scratch_root()))
    try:
        video = get_storage().get_file(keys.asset(sha), scratch / "source")
        result = preflight(video, get_settings(), Target.from_option(target_face))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if result.verdict.ok:
        app.signature("dub.prep_source", args=(sha, target_face), priority=DEFAULT_PRIORITY).apply_async()
    return PrepVerdict(verdict="pass" if result.verdict.ok else "fail",
                       error=None if result.verdict.ok else JobError(code=str(result.verdict.code),
                                                                     message=result.verdict.message),
                       summary=None if result.summary is None else asdict(result.summary),
                       sampled_seconds=result.sampled_seconds, duration=result.duration).model_dump(mode="json")


def _scratch_root() -> Path:
    root = get_settings().data_dir / "work"
    root.mkdir(parents=True, exist_ok=True)
    return root
