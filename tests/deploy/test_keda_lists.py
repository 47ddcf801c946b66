"""KEDA watches the Redis lists Celery really writes: tasks sent through lipdub's Celery app at every
priority land in exactly the lists the ScaledObjects' triggers name (a real redis-server, no worker)."""

from __future__ import annotations

import redis

from lipdub.config import Settings
from lipdub.service.celery_app import make_app

from .conftest import by_kind, deployment_container


def test_triggers_name_the_lists_celery_fills_at_every_priority(rendered, redis_url, tmp_path):
    app = make_app(Settings(redis_url=redis_url, data_dir=tmp_path))
    client = redis.Redis.from_url(redis_url)
    docs = rendered["gpu"]
    for name, scaled in by_kind(docs, "ScaledObject").items():
        command = deployment_container(docs, scaled["spec"]["scaleTargetRef"]["name"])["command"]
        queues = command[command.index("-Q") + 1].split(",")
        watched = {t["metadata"]["listName"] for t in scaled["spec"]["triggers"]}
        for queue in queues:
            for priority in range(10):
                # A name no worker knows: the message only has to reach the broker.
                app.send_task("deploy.test.noop", queue=queue, priority=priority)
        with_messages = {key.decode() for key in client.keys("*")
                         if client.type(key) == b"list" and client.llen(key) > 0}
        assert with_messages <= watched, f"{name}: messages in lists KEDA does not watch"
        assert sum(client.llen(key) for key in watched) == 10 * len(queues), name
        client.flushdb()
