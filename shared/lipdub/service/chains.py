"""The distributed data path: the stages of lipdub.pipeline as Celery tasks, in the same order.

Every task takes ids only and reads and writes deterministic storage keys; the workers live in services/ and
lipdub.service.celery_app routes the tasks to their queues:

    probe → (prep ∥ audio) → plan → render chunk 0..n-1 (in parallel) → mux → finalize
"""

from __future__ import annotations

from celery import chain, chord, group
from celery.canvas import Signature

from lipdub.service.celery_app import app


def start_job(job_id: str, priority: int | None = None) -> None:
    """Queue a job's first stages; `dub.plan` continues with `start_render` once the frame count is known."""
    chain(_step("probe", job_id, priority=priority),
          group(_step("prep", job_id, priority=priority), _step("audio", job_id, priority=priority)),
          _step("plan", job_id, priority=priority)).apply_async()


def start_render(job_id: str, n_chunks: int, priority: int | None = None) -> None:
    """Queue the render chunks in parallel, then mux (once every chunk is stored), then finalize."""
    chain(chord([_step("render", job_id, i, priority=priority) for i in range(n_chunks)],
                _step("mux", job_id, priority=priority)),
          _step("finalize", job_id, priority=priority)).apply_async()


def _step(stage: str, job_id: str, *args: int, priority: int | None = None) -> Signature:
    options = {} if priority is None else {"priority": priority}
    return app.signature(f"dub.{stage}", args=(job_id, *args), immutable=True, **options)
