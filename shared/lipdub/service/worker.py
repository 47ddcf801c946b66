"""What every worker task shares: the StageTask base (retries, failure recording) and `stage_run`, which
marks a stage started/finished in JobStore, stops canceled jobs, gives the task a scratch directory and
enforces the task time limit (`Watchdog`)."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from celery import Task
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded

from lipdub.config import Settings, get_settings
from lipdub.errors import ErrorCode, LipdubError, TransientError
from lipdub.face.mesh import FaceMesh
from lipdub.jobs import Stage
from lipdub.progress import CallbackProgress
from lipdub.service.inputs import InputRefused
from lipdub.service.prepcache import fetch_prep, purge_deleted
from lipdub.service.status import JobStore, get_store
from lipdub.service.storage import Storage, get_storage

log = logging.getLogger(__name__)
_settings = get_settings()


class StageTask(Task):
    """Base of every `dub.*` task: retry transient errors (storage, network) with capped exponential
    backoff, never bad input; record the final failure on the job."""

    # Redis holds the job state every stage writes: an outage longer than redis-py's own retries is as
    # transient as a storage one (the stages are idempotent: outputs go to fixed keys).
    autoretry_for = (TransientError, redis.ConnectionError, redis.TimeoutError)
    retry_backoff = 2  # seconds before the first retry; doubles each time
    retry_backoff_max = _settings.task_retry_backoff_max
    retry_jitter = True
    max_retries = _settings.task_max_retries
    acks_late = True
    reject_on_worker_lost = True

    def on_failure(self, exc: BaseException, task_id: str, args: tuple[Any, ...], kwargs: dict[str, Any],
                   einfo: Any) -> None:
        job_id = str(args[0]) if args else "?"
        if isinstance(exc, InputRefused):  # an input by URL that could not be downloaded or used
            code, message, retryable = exc.code, exc.message, exc.retryable
        elif isinstance(exc, LipdubError):
            code, message, retryable = str(exc.code), exc.message, exc.retryable
        elif isinstance(exc, redis.ConnectionError | redis.TimeoutError):
            code, message, retryable = ErrorCode.storage_unavailable.value, f"Redis: {exc}", True
        elif isinstance(exc, SoftTimeLimitExceeded | TimeLimitExceeded):
            code, message, retryable = ErrorCode.timeout.value, f"{self.name} ran out of time: {exc}", True
        else:
            code, message, retryable = ErrorCode.internal.value, f"{type(exc).__name__}: {exc}", False
        log.warning("task %s failed job=%s code=%s: %s", self.name, job_id, code, message)
        get_store().fail(job_id, code, message, retryable)


@dataclass
class StageRun:
    job_id: str
    stage: Stage
    scratch: Path
    store: JobStore
    storage: Storage
    settings: Settings
    progress: CallbackProgress

    def fetch(self, key: str, name: str) -> Path:
        return self.storage.get_file(key, self.scratch / name)

    def fetch_prep(self, source: str) -> Path:
        """The local directory of a source's prep artifacts (downloaded once per host)."""
        return fetch_prep(source, self.store, self.storage, self.settings)


EXIT_TIMED_OUT = 75  # the worker's exit status after a task overran (EX_TEMPFAIL: restart me)


class Watchdog:
    """The task time limit of the stage workers. Their solo pool (one task at a time in the worker process)
    does not enforce Celery's task_time_limit, and a task stuck in a C call or waiting on a child process
    can't be interrupted from Python; so when a task overruns `limit` seconds, this timer fails its job with
    `timeout` (retryable) and ends the worker process, which compose/Kubernetes restart. The task's message
    was never acknowledged: Redis redelivers it later and the task then finds its job final and skips."""

    def __init__(self, job_id: str, what: str, limit: float, store: JobStore) -> None:
        self.job_id, self.what, self.limit, self.store = job_id, what, limit, store
        self._timer = threading.Timer(limit, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()

    def _expire(self) -> None:
        log.critical("%s of job %s ran longer than %.0f s: failing the job and restarting this worker",
                     self.what, self.job_id, self.limit)
        try:
            self.store.fail(self.job_id, ErrorCode.timeout, f"{self.what} ran longer than the task time limit "
                                                            f"({self.limit:.0f} s)", retryable=True)
        finally:
            logging.shutdown()
            os._exit(EXIT_TIMED_OUT)


@contextmanager
def stage_run(job_id: str, stage: Stage, attempt_key: str | None = None,
              progress_span: tuple[float, float] = (0.0, 1.0), finish: bool = True) -> Iterator[StageRun | None]:
    """Run one stage of a job. Yields None when the job is already final (canceled or failed elsewhere),
    in which case the task does nothing. `progress_span` maps the stage functions' fractions into this
    task's share of the stage (a render chunk is one slice of the render stage); with finish=False the
    caller marks the stage finished itself (the last render chunk does)."""
    store, storage = get_store(), get_storage()
    starts = store.stage_started(job_id, stage, attempt_key)
    if starts is None:
        log.info("skip %s job=%s: the job is final", stage, job_id)
        yield None
        return
    if starts > _settings.max_task_starts:
        store.stage_left(job_id, attempt_key or stage)
        # Redis has no redelivery counter: a task that kills its worker (OOM) would loop forever.
        store.fail(job_id, ErrorCode.internal, f"{attempt_key or stage} was started {starts} times "
                                               "(its worker was lost each time)", retryable=True)
        yield None
        return
    lo, hi = progress_span

    def report(_: str, fraction: float) -> None:
        store.stage_progress(job_id, stage, lo + (hi - lo) * fraction)

    scratch = Path(tempfile.mkdtemp(prefix=f"lipdub-{stage}-", dir=_scratch_root()))
    started = time.perf_counter()
    try:
        with Watchdog(job_id, attempt_key or str(stage), _settings.task_time_limit, store):
            yield StageRun(job_id, stage, scratch, store, storage, _settings, CallbackProgress(report))
        busy = time.perf_counter() - started
        if finish:
            store.stage_finished(job_id, stage, busy)
        else:
            store.metrics.record_busy(stage, busy)
        log.info("%s done job=%s in %.1fs", attempt_key or stage, job_id, time.perf_counter() - started)
    except BaseException:
        if finish:
            store.stage_stopped(job_id, stage)  # a failed stage keeps its timing too
        raise
    finally:
        # The task got to run its cleanup, so this start was not a lost worker: only starts that never
        # return here (killed, OOM) add up towards max_task_starts; retries of transient errors do not.
        store.stage_left(job_id, attempt_key or stage)
        shutil.rmtree(scratch, ignore_errors=True)


def _scratch_root() -> Path:
    root = _settings.data_dir / "work"
    root.mkdir(parents=True, exist_ok=True)
    return root


def purge_local_prep() -> threading.Thread:
    """Start this worker process's sweep of its local prep cache (from its `worker_process_init` handler):
    every `janitor_seconds` it deletes the entries of sources whose assets were deleted, so a deleted video
    leaves no face tracks or frames on any worker's disk. A worker that is down catches up when it starts."""

    def loop() -> None:
        while True:
            try:
                purge_deleted(get_store(), _settings)
            except Exception:  # Redis unreachable for a while: the next round retries
                log.exception("local prep cache sweep failed")
            time.sleep(_settings.janitor_seconds)

    thread = threading.Thread(target=loop, name="prep-cache-purge", daemon=True)
    thread.start()
    return thread


def warm_up(what: str, load: Callable[[], object]) -> None:
    """Load a worker's models before it consumes (called from a `worker_process_init` handler, which the
    solo pool runs before the worker starts consuming and answering `celery inspect ping`): readiness
    probes then pass only once the models are loaded. A model that can't be loaded stops the worker
    (SystemExit gets past Celery's signal dispatch, which logs and swallows ordinary exceptions), so a
    broken deployment never reports ready."""
    started = time.perf_counter()
    try:
        load()
    except Exception as exc:
        log.critical("warm-up: %s could not be loaded: %s: %s", what, type(exc).__name__, exc)
        raise SystemExit(f"lipdub worker: {what} could not be loaded: {exc}") from exc
    log.info("warm-up: %s loaded in %.2fs", what, time.perf_counter() - started)


def load_face_mesh() -> None:
    """MediaPipe's face mesh (prep's tracker, and the sync estimate's): the graph and its model files."""
    import numpy as np

    with FaceMesh() as mesh:
        mesh(np.zeros((64, 64, 3), np.uint8))
