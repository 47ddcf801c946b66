"""The local stack without Docker: every process of lipdub.service.processes, started in the background.

`python -m lipdub.service.stack start` (what `make stack` runs) writes pids and logs under `.stack/`, waits
until Redis, S3 and the API answer and every worker is ready, then prints the API URL and a dev API key;
`python -m lipdub.service.stack stop` stops exactly the processes it started (checked by pid and command
line, so a reused pid is never killed). The service tests start their stacks with the same code.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

from lipdub.config import Settings
from lipdub.service import processes
from lipdub.service.auth import ApiKeys
from lipdub.service.processes import Process
from lipdub.service.storage import S3Storage

REPO = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent  # the virtualenv's bin: celery, uvicorn, moto_server live here


@dataclass
class StackConfig:
    root: Path = Path(".stack")
    api_port: int = 8000
    redis_port: int = 6379
    s3_port: int = 9000
    bucket: str = "lipdub"
    extra_env: dict[str, str] = field(default_factory=dict)  # more LIPDUB_* settings for every process
    render_workers: int = 1  # render worker processes (they share the render and mux queues)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def environment(self) -> dict[str, str]:
        """The settings every service process gets (moto accepts any credentials)."""
        return {
            "LIPDUB_REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "LIPDUB_STORAGE": "s3",
            "LIPDUB_S3_ENDPOINT_URL": f"http://127.0.0.1:{self.s3_port}",
            "LIPDUB_S3_BUCKET": self.bucket,
            "LIPDUB_S3_ACCESS_KEY_ID": "lipdub-dev",
            "LIPDUB_S3_SECRET_ACCESS_KEY": "lipdub-dev-secret",
            "LIPDUB_DATA_DIR": str((self.root / "var").resolve()),
            "LIPDUB_API_URL": self.api_url,
            **self.extra_env,
        }

    def settings(self) -> Settings:
        env = self.environment()
        values: dict[str, Any] = {k.removeprefix("LIPDUB_").lower(): v for k, v in env.items()
                                  if k.startswith("LIPDUB_")}
        return Settings(**values)  # pydantic parses each string as its field's type

    def processes(self) -> list[Process]:
        return processes.stack(self.api_port, self.redis_port, self.s3_port,
                               str((self.root / "redis").resolve()), self.render_workers)


def _argv(proc: Process) -> list[str]:
    exe = BIN / proc.argv[0]
    return [str(exe) if exe.exists() else proc.argv[0], *proc.argv[1:]]


def _spawn(proc: Process, cfg: StackConfig) -> subprocess.Popen[bytes]:
    env = {**os.environ, **cfg.environment(), "PYTHONUNBUFFERED": "1"}
    if proc.pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([str(REPO / p) for p in proc.pythonpath]
                                            + [p for p in [os.environ.get("PYTHONPATH")] if p])
    log = (cfg.root / f"{proc.name}.log").open("ab")
    child = subprocess.Popen(_argv(proc), cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()
    record = {"pid": child.pid, "argv": _argv(proc), "boot_ticks": _start_ticks(child.pid)}
    (cfg.root / f"{proc.name}.pid").write_text(json.dumps(record))
    return child


def wait_ready(what: str, check: Callable[[], bool], timeout: float, child: subprocess.Popen[bytes],
               log: Path | None = None) -> None:
    """Poll `check` until it holds; fail early with the log's tail if `child` exits meanwhile."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if child.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log is not None and log.exists() else ""
            raise RuntimeError(f"{what} exited with {child.returncode}:\n{tail}")
        try:
            if check():
                return
        except Exception as exc:  # noqa: BLE001 - not up yet; the last error goes into the timeout message
            last = exc
        time.sleep(0.2)
    raise RuntimeError(f"{what} was not ready within {timeout:.0f} s (log: {log}; last error: {last})")


_READY_TIMEOUT = {"redis": 20.0, "s3": 30.0, "api": 60.0}  # seconds; workers get `worker_timeout`


def _readiness(proc: Process, cfg: StackConfig, settings: Settings, log: Path,
               offset: int = 0) -> Callable[[], bool]:
    """How to tell that `proc` is ready: infrastructure answers, workers log that they are ready (past
    `offset`, so an earlier run's line in the same log does not count)."""
    if proc.name == "redis":
        client = redis.Redis.from_url(settings.redis_url)
        return lambda: bool(client.ping())
    if proc.name == "s3":
        storage = S3Storage(settings)

        def bucket_ready() -> bool:
            storage.ensure_bucket()  # raises until the server answers
            return True

        return bucket_ready
    if proc.name == "api":
        return lambda: httpx.get(f"{cfg.api_url}/readyz", timeout=2).status_code == 200
    return lambda: b" ready." in log.read_bytes()[offset:]


def start(cfg: StackConfig, worker_timeout: float = 90.0) -> str:
    """Start the stack and return a dev API key for tenant `dev`."""
    cfg.root.mkdir(parents=True, exist_ok=True)
    settings = cfg.settings()
    running = [p.name for p in cfg.processes() if _alive(cfg.root / f"{p.name}.pid")]
    if running:
        raise RuntimeError(f"already running: {', '.join(running)} (stop them first)")
    # moto keeps S3 in memory, so Redis state from an earlier run would point at objects that are gone:
    # each local stack starts empty (Redis still runs with AOF, as deployed).
    shutil.rmtree(cfg.root / "redis", ignore_errors=True)
    shutil.rmtree(cfg.root / "var", ignore_errors=True)
    (cfg.root / "redis").mkdir()
    for proc in cfg.processes():
        (cfg.root / f"{proc.name}.log").write_bytes(b"")
        start_process(cfg, proc.name, worker_timeout)
    key = ApiKeys(redis.Redis.from_url(settings.redis_url, decode_responses=True)).create("dev")
    (cfg.root / "dev-api-key").write_text(key + "\n")
    return key


def start_process(cfg: StackConfig, name: str, worker_timeout: float = 90.0) -> int:
    """Start one process of the stack (again, e.g. a worker that died) and wait until it is ready; its
    log is appended to. Returns its pid."""
    proc = next(p for p in cfg.processes() if p.name == name)
    log = cfg.root / f"{name}.log"
    offset = log.stat().st_size if log.exists() else 0
    child = _spawn(proc, cfg)
    wait_ready(name, _readiness(proc, cfg, cfg.settings(), log, offset), _READY_TIMEOUT.get(name, worker_timeout),
          child, log)
    return child.pid


def _start_ticks(pid: int) -> int | None:
    """When `pid` started (clock ticks since boot): with the pid, it identifies one process for good."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[19])  # field 22, counted after the "(comm)" field


def _alive(pid_file: Path) -> int | None:
    """The pid in `pid_file` if that very process still runs (not a later process that reused the pid;
    redis-server rewrites its command line, so the start time identifies it)."""
    if not pid_file.exists():
        return None
    record = json.loads(pid_file.read_text())
    ticks = _start_ticks(int(record["pid"]))
    if ticks is None or ticks != record.get("boot_ticks"):
        return None
    try:
        state = Path(f"/proc/{record['pid']}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return None
    return None if state == "Z" else int(record["pid"])


def stop(root: Path, timeout: float = 20.0) -> list[str]:
    """Stop the processes recorded under `root`: the API and workers together (each finishes its running
    task: Celery's warm shutdown), then S3 and Redis. Returns the names of the processes stopped."""
    # The recorded ones: a stack may run more render workers than the default one.
    names = [p.stem for p in sorted(root.glob("*.pid"))]
    infrastructure = {processes.redis_server().name, processes.s3_server().name}
    stopped = _stop_together(root, [n for n in names if n not in infrastructure], timeout)
    return stopped + _stop_together(root, [n for n in names if n in infrastructure], timeout)


def _stop_together(root: Path, names: list[str], timeout: float) -> list[str]:
    pids = {name: pid for name in names if (pid := _alive(root / f"{name}.pid")) is not None}
    for pid in pids.values():
        # Each process leads its own session (start_new_session), so its group is exactly its tree.
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(root / f"{n}.pid") for n in pids):
        time.sleep(0.1)
        for pid in pids.values():
            with contextlib.suppress(ChildProcessError):  # not our child: nothing to reap
                os.waitpid(pid, os.WNOHANG)  # reap it when we are its parent (the tests)
    for name, pid in pids.items():
        if _alive(root / f"{name}.pid"):
            os.killpg(pid, signal.SIGKILL)
    for name in names:
        (root / f"{name}.pid").unlink(missing_ok=True)
    return list(pids)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m lipdub.service.stack", description=__doc__)
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("--root", type=Path, default=Path(".stack"))
    parser.add_argument("--api-port", type=int, default=8000)
    parser.add_argument("--redis-port", type=int, default=6379)
    parser.add_argument("--s3-port", type=int, default=9000)
    args = parser.parse_args()
    if args.action == "stop":
        names = stop(args.root)
        print(f"stopped: {', '.join(names) if names else 'nothing was running'}")
        return
    cfg = StackConfig(args.root, args.api_port, args.redis_port, args.s3_port)
    try:
        key = start(cfg)
    except RuntimeError as exc:
        print(f"stack failed to start: {exc}", file=sys.stderr)
        stop(args.root)
        sys.exit(1)
    print(f"lipdub stack is up (logs and pids in {args.root}/)\n"
          f"  API      {cfg.api_url}   (OpenAPI docs: {cfg.api_url}/docs)\n"
          f"  API key  {key}   (tenant 'dev'; also in {args.root}/dev-api-key)\n"
          f"  Redis    redis://127.0.0.1:{cfg.redis_port}/0   S3 http://127.0.0.1:{cfg.s3_port} bucket {cfg.bucket}\n"
          f"stop with: make stack-stop")


if __name__ == "__main__":
    main()
