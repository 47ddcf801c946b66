"""The exact command line of every service process, declared once.

`make stack` (lipdub.service.stack), the service tests, docker-compose and the Kubernetes manifests all
run these commands, so a flag changed here changes everywhere (issue 9 checks the others against this file).

Worker names and the queues they consume:
  prep_worker   → prep      (CPU: probe + face tracking)
  audio_worker  → audio     (CPU: audio features)
  render_worker → render, mux (GPU in production: render chunks, then mux and finalize)
  webhooks      → webhooks  (delivery of job events, batches; issue 8) + the janitor's schedule
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Queue names; lipdub.service.celery_app routes tasks onto them.
PREP_QUEUE = "prep"
AUDIO_QUEUE = "audio"
RENDER_QUEUE = "render"
MUX_QUEUE = "mux"
WEBHOOKS_QUEUE = "webhooks"
QUEUES = (PREP_QUEUE, AUDIO_QUEUE, RENDER_QUEUE, MUX_QUEUE, WEBHOOKS_QUEUE)

# Where each service package lives, relative to the repository root. Processes run with these on
# PYTHONPATH (images copy them to the same relative paths under their workdir).
SERVICE_PATHS = ("services/api", "services/prep_worker", "services/audio_worker", "services/render_worker",
                 "services/webhooks_worker")


@dataclass(frozen=True)
class Process:
    name: str
    argv: tuple[str, ...]  # argv[0] is looked up on PATH (the virtualenv's bin first, in the stack)
    queues: tuple[str, ...] = ()
    pythonpath: tuple[str, ...] = field(default=SERVICE_PATHS)


def celery_worker(name: str, app: str, queues: tuple[str, ...]) -> Process:
    """One Celery worker. --pool=solo with prefetch 1: one long task at a time per process, tasks run in the
    process that loaded the models (CUDA and MediaPipe do not survive fork), and nothing sits reserved on a
    busy worker while another one idles."""
    return Process(name, ("celery", "-A", app, "worker", "-Q", ",".join(queues), "-n", f"{name}@%h",
                          "--pool=solo", "--concurrency=1", "--prefetch-multiplier=1",
                          "--without-gossip", "--without-mingle", "-l", "INFO"), queues)


def api(host: str = "0.0.0.0", port: int = 8000) -> Process:
    return Process("api", ("uvicorn", "lipdub_api.main:app", "--host", host, "--port", str(port),
                           "--no-access-log"))


def prep_worker() -> Process:
    return celery_worker("prep_worker", "lipdub_prep_worker.tasks", (PREP_QUEUE,))


def audio_worker() -> Process:
    return celery_worker("audio_worker", "lipdub_audio_worker.tasks", (AUDIO_QUEUE,))


def render_worker(index: int = 1) -> Process:
    """The render worker; index 2, 3, ... are more of them (one process each, e.g. one per GPU)."""
    name = "render_worker" if index == 1 else f"render_worker_{index}"
    return celery_worker(name, "lipdub_render_worker.tasks", (RENDER_QUEUE, MUX_QUEUE))


def webhooks() -> Process:
    """Webhook deliveries, job events and batch bookkeeping: short I/O-bound tasks, so a thread pool (one
    slow receiver must not hold up the others) instead of the solo pool of the stage workers. It also
    embeds the Celery scheduler (-B) that sends the janitor's sweeps: in memory (no schedule file on a
    read-only filesystem), and harmless when several replicas each send them, as a sweep takes a lock."""
    return Process("webhooks", ("celery", "-A", "lipdub_webhooks_worker.tasks", "worker", "-Q", WEBHOOKS_QUEUE,
                                "-n", "webhooks@%h", "--pool=threads", "--concurrency=8",
                                "--prefetch-multiplier=1", "--without-gossip", "--without-mingle",
                                "-B", "--scheduler", "celery.beat:Scheduler", "-l", "INFO"),
                   (WEBHOOKS_QUEUE,))


def redis_server(port: int = 6379, data_dir: str = ".") -> Process:
    """Job status lives in Redis: AOF persistence so it survives a restart, and no eviction, because an
    evicted broker list or job hash is lost work (celery's Redis notes)."""
    return Process("redis", ("redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", data_dir,
                             "--appendonly", "yes", "--appendfsync", "everysec",
                             "--maxmemory-policy", "noeviction", "--save", ""), pythonpath=())


def s3_server(host: str = "127.0.0.1", port: int = 9000) -> Process:
    """moto's standalone server speaks the S3 HTTP API (MinIO takes its place in compose and k8s)."""
    return Process("s3", ("moto_server", "-H", host, "-p", str(port)), pythonpath=())


def stack(api_port: int = 8000, redis_port: int = 6379, s3_port: int = 9000,
          data_dir: str = ".", render_workers: int = 1) -> list[Process]:
    """Everything `make stack` runs, in start order (infrastructure first)."""
    return [redis_server(redis_port, data_dir), s3_server(port=s3_port), api("127.0.0.1", api_port),
            prep_worker(), audio_worker(), *(render_worker(k) for k in range(1, render_workers + 1)), webhooks()]
