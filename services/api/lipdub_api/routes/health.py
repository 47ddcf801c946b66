"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.responses import Response

from lipdub.errors import LipdubError
from lipdub.service.celery_app import queue_lists
from lipdub.service.indexes import now
from lipdub.service.processes import QUEUES
from lipdub.service.status import JobStore, get_store
from lipdub_api.deps import StorageDep, StoreDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Redis or storage unreachable"}})
def readyz(store: StoreDep, storage: StorageDep) -> JSONResponse:
    """Redis and storage are reachable."""
    checks: dict[str, str] = {}
    for name, ping in (("redis", store.ping), ("storage", storage.ping)):
        try:
            ping()
            checks[name] = "ok"
        except (LipdubError, OSError) as exc:
            checks[name] = str(exc)
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ready" if ready else "unavailable", "checks": checks},
                        status_code=200 if ready else 503)


class ServiceCollector(Collector):
    """Reads the numbers from Redis at scrape time, so every API replica reports the same values."""

    def __init__(self, store: JobStore) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("lipdub_jobs", "Jobs by status (records still kept)", labels=["status"])
        for status, n in self.store.metrics.status_counts().items():
            jobs.add_metric([status], n)
        yield jobs
        seconds = CounterMetricFamily("lipdub_stage_seconds", "Working seconds spent in stage tasks",
                                      labels=["stage"])
        tasks = CounterMetricFamily("lipdub_stage_tasks", "Stage tasks finished", labels=["stage"])
        for stage, (total, count) in self.store.metrics.stage_stats().items():
            seconds.add_metric([stage], total)
            tasks.add_metric([stage], count)
        yield seconds
        yield tasks
        depth = GaugeMetricFamily("lipdub_queue_depth", "Messages waiting in a Celery queue", labels=["queue"])
        for queue in QUEUES:
            depth.add_metric([queue], sum(self.store.metrics.queue_depth(name) for name in queue_lists(queue)))
        yield depth
        owed, oldest = self.store.handoffs_owed()
        yield GaugeMetricFamily("lipdub_handoffs_owed", "Job hand-offs to Celery not yet confirmed (queueing a "
                                "job, its end event); the janitor redoes overdue ones", value=owed)
        # Alert on this one: it grows when the broker refuses messages or no janitor runs.
        yield GaugeMetricFamily("lipdub_oldest_handoff_seconds", "Age of the oldest owed hand-off (0 if none)",
                                value=max(0.0, now() - oldest) if oldest is not None else 0.0)
        actions = CounterMetricFamily("lipdub_janitor_actions", "What the janitor did", labels=["action"])
        for action, n in self.store.metrics.janitor_stats().items():
            actions.add_metric([action], n)
        yield actions


@router.get("/metrics", response_class=Response)
def metrics() -> Response:
    """Prometheus metrics: jobs by status, stage durations, queue depths, hand-offs owed, janitor actions."""
    registry = CollectorRegistry()
    registry.register(ServiceCollector(get_store()))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)



