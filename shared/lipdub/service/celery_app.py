"""The Celery app every service process shares: Redis broker, queues per worker class, reliability settings.

Tasks are addressed by name (`dub.<stage>`), so the API builds chains without importing worker code.
"""

from __future__ import annotations

from celery import Celery
from kombu import Queue

from lipdub.config import Settings, get_settings
from lipdub.service.processes import AUDIO_QUEUE, MUX_QUEUE, PREP_QUEUE, QUEUES, RENDER_QUEUE, WEBHOOKS_QUEUE

# Redis "priorities" are separate lists per step: `render`, `render:3`, `render:6`, `render:9` (0 = highest).
PRIORITY_STEPS = [0, 3, 6, 9]
PRIORITY_SEP = ":"
DEFAULT_PRIORITY = 3

TASK_ROUTES = {
    "dub.probe": {"queue": PREP_QUEUE},
    "dub.prep": {"queue": PREP_QUEUE},
    "dub.prep_source": {"queue": PREP_QUEUE},
    "dub.preflight": {"queue": PREP_QUEUE},
    "dub.audio": {"queue": AUDIO_QUEUE},
    "dub.plan": {"queue": MUX_QUEUE},
    "dub.render": {"queue": RENDER_QUEUE},
    "dub.mux": {"queue": MUX_QUEUE},
    "dub.finalize": {"queue": MUX_QUEUE},
    "webhooks.*": {"queue": WEBHOOKS_QUEUE},
    "janitor.*": {"queue": WEBHOOKS_QUEUE},
}


def queue_lists(queue: str) -> list[str]:
    """The Redis lists that hold `queue`'s waiting messages (one per priority step)."""
    return [queue if step == 0 else f"{queue}{PRIORITY_SEP}{step}" for step in PRIORITY_STEPS]


def make_app(settings: Settings) -> Celery:
    app = Celery("lipdub", broker=settings.redis_url, backend=settings.redis_url)
    transport = {"visibility_timeout": settings.visibility_timeout, "queue_order_strategy": "priority",
                 "priority_steps": PRIORITY_STEPS, "sep": PRIORITY_SEP,
                 # Sweep for a lost worker's messages every redelivery_sweep_seconds (kombu's default,
                 # 10 s x a throttle of 10, is 100 s).
                 "unacked_restore_interval": settings.redelivery_sweep_seconds, "unacked_restore_throttle": 1}
    app.conf.update(
        task_routes=TASK_ROUTES,
        task_queues=[Queue(name) for name in QUEUES],
        task_default_queue=PREP_QUEUE,
        task_default_priority=DEFAULT_PRIORITY,
        task_serializer="json", result_serializer="json", accept_content=["json"],
        # A task is acknowledged after it returns, and requeued when its worker dies mid-task; tasks are
        # idempotent (deterministic output keys) and JobStore counts starts to stop redelivery loops.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_track_started=True,
        # Set in all three places (celery #7651); above the longest task or Redis redelivers it mid-run.
        broker_transport_options=transport,
        result_backend_transport_options={"visibility_timeout": settings.visibility_timeout},
        visibility_timeout=settings.visibility_timeout,
        task_time_limit=settings.task_time_limit,
        # Results only carry chord bookkeeping (None values); the job record lives in JobStore.
        result_expires=86400,
        broker_connection_retry_on_startup=True,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_hijack_root_logger=True,
        # Run by the scheduler embedded in the webhooks worker (lipdub.service.janitor). A sweep not taken
        # within one period is dropped: the next one does the same work.
        beat_schedule={"janitor": {"task": "janitor.sweep", "schedule": float(settings.janitor_seconds),
                                   "options": {"queue": WEBHOOKS_QUEUE, "expires": settings.janitor_seconds}}},
    )
    return app


app = make_app(get_settings())
