"""The counters /metrics exports: jobs per status, stage working time, output frames, the janitor's
actions and the queues' depth."""

from __future__ import annotations

import redis

from lipdub.jobs import JobStatus, Stage
from lipdub.service import redis_keys


class Metrics:
    def __init__(self, client: redis.Redis) -> None:
        self.r = client

    def status_counts(self) -> dict[str, int]:
        pipe = self.r.pipeline()
        for status in JobStatus:
            pipe.scard(redis_keys.jobs_by_status(status))
        return dict(zip([s.value for s in JobStatus], (int(n) for n in pipe.execute())))

    def record_busy(self, stage: Stage, seconds: float) -> None:
        """Add one task's working time to the stage's totals."""
        pipe = self.r.pipeline()
        pipe.hincrbyfloat(redis_keys.stage_stats(stage), "sum", seconds)
        pipe.hincrby(redis_keys.stage_stats(stage), "count", 1)
        pipe.execute()

    def stage_stats(self) -> dict[str, tuple[float, int]]:
        out = {}
        for stage in Stage:
            raw = self.r.hgetall(redis_keys.stage_stats(stage))
            if raw:
                out[stage.value] = (float(raw.get("sum", 0)), int(raw.get("count", 0)))
        return out

    def record_frames(self, n_frames: int) -> None:
        """Count the output frames of a finished job (the denominator of `stage_frame_stats`)."""
        self.r.incrby(redis_keys.FRAMES, n_frames)

    def stage_frame_stats(self) -> dict[str, float]:
        """Rough working seconds per output frame of each stage, over all jobs so far (for ETAs)."""
        frames = int(self.r.get(redis_keys.FRAMES) or 0)
        if frames == 0:
            return {}
        return {stage: total / frames for stage, (total, _) in self.stage_stats().items()}

    def record_janitor(self, counts: dict[str, int]) -> None:
        """Add one sweep's actions to the totals."""
        pipe = self.r.pipeline()
        for action, n in counts.items():
            if n:
                pipe.hincrby(redis_keys.JANITOR_STATS, action, n)
        pipe.execute()

    def janitor_stats(self) -> dict[str, int]:
        return {action: int(n) for action, n in self.r.hgetall(redis_keys.JANITOR_STATS).items()}

    def queue_depth(self, queue: str) -> int:
        """Messages waiting in a Celery queue (its broker list is named after it)."""
        return int(self.r.llen(queue))
