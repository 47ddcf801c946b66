"""Rate limits, quotas and admission (lipdub.service.limits) on a real redis-server."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from lipdub.config import Settings
from lipdub.jobs import InputRef, JobOptions, JobSpec, Stage
from lipdub.service.limits import QuotaExceeded, Quotas, RateLimiter
from lipdub.service.status import JobStore


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private redis-server (no persistence) on a free port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    folder: Path = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder),
                             "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def store(redis_url: str, tmp_path: Path) -> JobStore:
    settings = Settings(data_dir=tmp_path, redis_url=redis_url, rate_limit_per_minute=120, rate_limit_burst=5,
                        tenant_max_concurrent_jobs=2, tenant_max_video_seconds=60, tenant_max_file_bytes=10_000)
    store = JobStore.from_settings(settings)
    store.r.flushdb()
    return store


def test_rate_limit_allows_the_burst_then_one_request_per_interval(store: JobStore) -> None:
    limiter = RateLimiter(store.r, store.settings)  # 120/min: one request every 0.5 s, bursts of 5
    assert [limiter.hit("key-a").allowed for _ in range(5)] == [True] * 5
    refused = limiter.hit("key-a")
    assert not refused.allowed and refused.retry_after == 1
    assert limiter.hit("key-b").allowed  # another key has its own budget
    time.sleep(0.55)
    assert limiter.hit("key-a").allowed
    assert not limiter.hit("key-a").allowed


def test_quota_defaults_and_per_tenant_overrides(store: JobStore) -> None:
    quotas = Quotas(store.r, store.settings)
    assert quotas.for_tenant("acme").max_concurrent_jobs == 2
    changed = quotas.set("acme", max_concurrent_jobs=7, max_video_seconds=12.5)
    assert (changed.max_concurrent_jobs, changed.max_video_seconds, changed.max_file_bytes) == (7, 12.5, 10_000)
    assert quotas.for_tenant("globex").max_concurrent_jobs == 2
    with pytest.raises(ValueError, match="unknown quota"):
        quotas.set("acme", max_gpus=1)


def test_admission_counts_interactive_jobs_only(store: JobStore) -> None:
    quotas = Quotas(store.r, store.settings)
    spec = JobSpec(video=InputRef(), audio=InputRef(), options=JobOptions())
    quotas.admit_job("acme", 10.0, [100, 200])
    first = store.create("acme", spec)
    store.stage_started(first.id, Stage.probe)  # running
    store.create("globex", spec)  # other tenants do not count
    batch_job = store.create("acme", spec, batch="batch_1")
    store.r.sadd("tenant:acme:batch_active", batch_job.id)  # released by a batch: its own cap applies
    assert quotas.active_interactive_jobs("acme") == 1
    quotas.admit_job("acme", 10.0, [100])
    store.create("acme", spec)  # queued
    with pytest.raises(QuotaExceeded) as info:
        quotas.admit_job("acme", 10.0, [100])
    assert info.value.code == "concurrency_limit_reached" and info.value.retry_after
    with pytest.raises(QuotaExceeded) as info:
        quotas.admit_job("globex", 61.0, [100])
    assert info.value.code == "input_too_long" and info.value.retry_after is None
    with pytest.raises(QuotaExceeded) as info:
        quotas.admit_job("globex", 10.0, [100, 10_001])
    assert info.value.code == "payload_too_large"


def test_admin_set_quota_command(store: JobStore, redis_url: str) -> None:
    import json
    import os
    import sys

    lipdub = Path(sys.executable).parent / "lipdub"
    result = subprocess.run([str(lipdub), "admin", "set-quota", "--tenant", "acme", "--max-concurrent-jobs", "3",
                             "--max-video-seconds", "90"], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "LIPDUB_REDIS_URL": redis_url})
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["tenant"] == "acme" and printed["max_concurrent_jobs"] == 3
    quota = Quotas(store.r, store.settings).for_tenant("acme")
    assert (quota.max_concurrent_jobs, quota.max_video_seconds) == (3, 90.0)
