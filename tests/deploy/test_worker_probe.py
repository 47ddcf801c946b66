"""The worker readiness probe, run for real: a real redis-server and a real Celery worker started with the
command processes.py declares, probed with the exact command of the k8s manifest and of the compose
healthcheck. Also: SIGTERM (what a scale-down or `docker stop` sends) starts Celery's warm shutdown."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from lipdub.service import processes

from .conftest import ROOT, deployment_container, need_tool

BIN = Path(sys.executable).parent


def process_env(redis_url: str, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIPDUB_")}
    env.update(PATH=f"{BIN}{os.pathsep}{env['PATH']}", LIPDUB_REDIS_URL=redis_url,
               LIPDUB_DATA_DIR=str(tmp_path / "data"), HOSTNAME=socket.gethostname(),
               PYTHONPATH=os.pathsep.join(str(ROOT / p) for p in processes.SERVICE_PATHS))
    return env


def run_probe(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, check=False, env=env, capture_output=True, text=True, timeout=60)


def test_startup_probe_passes_only_once_the_worker_consumes_then_sigterm_is_a_warm_shutdown(
        rendered, compose, redis_url, tmp_path):
    need_tool("hostname")
    process = processes.prep_worker()
    probe = deployment_container(rendered["cpu"], "lipdub-prep-worker")["startupProbe"]["exec"]["command"]
    env = process_env(redis_url, tmp_path)

    # No worker yet: nobody answers the ping, the pod is not ready.
    before = run_probe(probe, env)
    assert before.returncode != 0, before.stdout

    log = (tmp_path / "worker.log").open("w")
    argv = [shutil.which(process.argv[0], path=env["PATH"]) or process.argv[0], *process.argv[1:]]
    worker = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        # As the kubelet does: probe until it passes (the worker imports its tasks first).
        deadline = time.monotonic() + 120
        while True:
            result = run_probe(probe, env)
            if result.returncode == 0:
                break
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
            assert time.monotonic() < deadline, result.stdout + result.stderr
            time.sleep(2)
        assert f"{process.name}@{socket.gethostname()}: OK" in result.stdout

        # The compose healthcheck is the same ping, written for compose's $$ escaping.
        test = compose["services"][process.name]["healthcheck"]["test"]
        compose_env = env | {"WORKER_NAME": compose["services"][process.name]["environment"]["WORKER_NAME"]}
        healthy = run_probe(["sh", "-c", test[1].replace("$$", "$")], compose_env)
        assert healthy.returncode == 0, healthy.stdout + healthy.stderr

        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        log.close()
    assert "Warm shutdown" in (tmp_path / "worker.log").read_text()
