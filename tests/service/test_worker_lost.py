"""A render worker killed mid-job (SIGKILL, as the OOM killer or a lost node would) costs one chunk.

A stack of its own, with a short visibility timeout, so Redis redelivers the killed worker's unacknowledged
chunk within seconds instead of the production hour.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
import redis

from lipdub.service.auth import ApiKeys
from lipdub.service.stack import StackConfig, start, start_process, stop
from lipdub.service.status import JobStore
from lipdub.service.worker import EXIT_TIMED_OUT
from tests.service.conftest import JOB_TIMEOUT, create_job, free_port, upload, wait_for

VISIBILITY_TIMEOUT = 15  # seconds: above every task of this test (chunks take ~2 s, prep of 3 s ~5 s)


@pytest.fixture(scope="module")
def lossy_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackConfig]:
    cfg = StackConfig(root=tmp_path_factory.mktemp("lossy-stack"), api_port=free_port(), redis_port=free_port(),
                      s3_port=free_port(), bucket="lipdub-lossy",
                      extra_env={"LIPDUB_CHUNK_SECONDS": "1.0", "LIPDUB_AUDIO_MODEL": "energy",
                                 "LIPDUB_VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT),
                                 "LIPDUB_REDELIVERY_SWEEP_SECONDS": "2"})
    try:
        start(cfg)
        yield cfg
    finally:
        stop(cfg.root)


def test_killed_render_worker_redoes_one_chunk(lossy_stack: StackConfig, service_media: dict[str, Path],
                                               tmp_path: Path) -> None:
    cfg = lossy_stack
    r = redis.Redis.from_url(cfg.settings().redis_url, decode_responses=True)
    with httpx.Client(base_url=cfg.api_url, timeout=60,
                      headers={"Authorization": f"Bearer {ApiKeys(r).create('lossy')}"}) as api:
        job = create_job(api, upload(api, service_media["face"]), upload(api, service_media["long_speech"]))
        store = JobStore.from_settings(cfg.settings())
        deadline = time.monotonic() + JOB_TIMEOUT
        while True:  # until a chunk after the first is running (started, not yet returned)
            state = store.get(job["id"])
            assert state is not None and not state.status.is_final and time.monotonic() < deadline, state
            running = [k for k, n in state.attempts.items() if n == 1 and k.startswith("render:") and k != "render:0"]
            if running and state.chunks_done >= 1:
                break
            time.sleep(0.05)
        pid = json.loads((cfg.root / "render_worker.pid").read_text())["pid"]
        os.killpg(pid, signal.SIGKILL)  # mid-chunk: no cleanup, no ack, nothing recorded
        os.waitpid(pid, 0)
        killed_at = api.get(f"/v1/jobs/{job['id']}").json()
        assert killed_at["status"] == "running" and killed_at["chunks"]["done"] < killed_at["chunks"]["total"]

        start_process(cfg, "render_worker")
        final = wait_for(api, job["id"])
        assert final["status"] == "succeeded", final["error"]
        assert final["chunks"]["done"] == final["chunks"]["total"]
        # Exactly one start never returned: the chunk that was running when its worker was killed, which
        # Redis redelivered after the visibility timeout and the new worker rendered again.
        attempts = store.get(job["id"]).attempts
        assert {k: n for k, n in attempts.items() if n} == {running[0]: 1}, attempts

        out = tmp_path / "result.mp4"
        out.write_bytes(api.get(f"/v1/jobs/{job['id']}/result", follow_redirects=True).content)
        frames = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
                                 "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", str(out)],
                                capture_output=True, text=True, check=True).stdout.strip()
        report = api.get(f"/v1/jobs/{job['id']}/report").json()
        assert int(frames) == report["frames"]


def test_task_past_the_time_limit_fails_its_job_and_ends_its_worker(lossy_stack: StackConfig,
                                                                    service_media: dict[str, Path]) -> None:
    """The stage workers' solo pool does not enforce Celery's time limit: the watchdog does."""
    cfg = lossy_stack
    old = json.loads((cfg.root / "render_worker.pid").read_text())["pid"]
    os.killpg(old, signal.SIGKILL)
    os.waitpid(old, 0)
    # One render chunk for the whole ~9-s output, against a 1-s limit.
    strict = replace(cfg, extra_env={**cfg.extra_env, "LIPDUB_TASK_TIME_LIMIT": "1", "LIPDUB_CHUNK_SECONDS": "30"})
    pid = start_process(strict, "render_worker")
    r = redis.Redis.from_url(cfg.settings().redis_url, decode_responses=True)
    try:
        with httpx.Client(base_url=cfg.api_url, timeout=60,
                          headers={"Authorization": f"Bearer {ApiKeys(r).create('strict')}"}) as api:
            job = wait_for(api, create_job(api, upload(api, service_media["face"]),
                                           upload(api, service_media["long_speech"]))["id"])
        assert job["status"] == "failed" and job["stage"] == "render", job
        assert job["error"]["code"] == "timeout" and job["error"]["retryable"] is True
        assert "render:0 ran longer than the task time limit (1 s)" in job["error"]["message"]
        deadline = time.monotonic() + 30
        while (ended := os.waitpid(pid, os.WNOHANG))[0] == 0:
            assert time.monotonic() < deadline, "the worker did not exit after its task overran"
            time.sleep(0.1)
        assert os.waitstatus_to_exitcode(ended[1]) == EXIT_TIMED_OUT
    finally:
        start_process(cfg, "render_worker")  # the stack as it was, for whatever runs next
