"""The service under test, for real: redis-server, moto's S3 server, the API under uvicorn and one Celery
worker process per queue, started on free ports with the same code and commands as `make stack`."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from lipdub.service.auth import ApiKeys
from lipdub.service.stack import StackConfig, start, stop

MAX_UPLOAD = 3_000_000  # bytes: small, so the 413 test needs only a small body
JOB_TIMEOUT = 180.0  # seconds for one job on a loaded 2-core machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackConfig]:
    cfg = StackConfig(root=tmp_path_factory.mktemp("stack"), api_port=free_port(), redis_port=free_port(),
                      s3_port=free_port(), bucket="lipdub-test",
                      render_workers=2,  # as deployed: the chunks of one job are shared between workers
                      extra_env={
                          # Render in 1-s chunks, so a 3-s job runs a real chord of several chunks.
                          "LIPDUB_CHUNK_SECONDS": "1.0",
                          "LIPDUB_MAX_UPLOAD_BYTES": str(MAX_UPLOAD),
                          # The service is under test here, not the mouth model: the fast energy model.
                          "LIPDUB_AUDIO_MODEL": "energy",
                          # The job option `enroll` is tested for its plumbing: a few fine-tuning steps.
                          "LIPDUB_DINET_ENROLL_STEPS": "4",
                          # The janitor's sweeps every second, hand-offs redone after 2 s (test_service.py).
                          "LIPDUB_JANITOR_SECONDS": "1",
                          "LIPDUB_HANDOFF_GRACE_SECONDS": "2",
                      })
    try:
        start(cfg)
    except RuntimeError:
        stop(cfg.root)
        raise
    yield cfg
    stop(cfg.root)


def _client(cfg: StackConfig, key: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=cfg.api_url, headers=headers, timeout=60)


@pytest.fixture(scope="session")
def redis_client(stack: StackConfig) -> redis.Redis:
    return redis.Redis.from_url(stack.settings().redis_url, decode_responses=True)


@pytest.fixture(scope="session")
def api(stack: StackConfig, redis_client: redis.Redis) -> Iterator[httpx.Client]:
    """A client of tenant `acme`."""
    with _client(stack, ApiKeys(redis_client).create("acme")) as client:
        yield client


@pytest.fixture(scope="session")
def other_tenant(stack: StackConfig, redis_client: redis.Redis) -> Iterator[httpx.Client]:
    with _client(stack, ApiKeys(redis_client).create("globex")) as client:
        yield client


@pytest.fixture(scope="session")
def anonymous(stack: StackConfig) -> Iterator[httpx.Client]:
    with _client(stack, None) as client:
        yield client


# --- media ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def service_media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Short generated inputs: two face clips (3 s and 2 s, different bytes), ~2 s and ~9 s of speech, a
    clip without a face, one with two equally prominent faces, and a file that is not media."""
    from lipdub.demo import DEMO_TEXT, moving_face_video, speak
    from tests.test_prep_media import two_faces

    folder = tmp_path_factory.mktemp("service-media")
    media = {
        "face": moving_face_video(folder / "face.mp4", 3.0),
        "face2": moving_face_video(folder / "face2.mp4", 2.0),
        "speech": speak("Hello, this is the dubbing service.", folder / "speech.wav"),
        "long_speech": speak(DEMO_TEXT, folder / "long_speech.wav"),  # ~9 s: nine 1-s render chunks
        "noface": folder / "noface.mp4",
        "two_faces": two_faces(folder / "two_faces.mp4"),
        "text": folder / "notes.mp4",
    }
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:d=2",
                    "-pix_fmt", "yuv420p", str(media["noface"])], check=True)
    media["text"].write_text("this is not a video\n")
    return media


# --- helpers -------------------------------------------------------------------------------------------
def upload(client: httpx.Client, path: Path) -> dict[str, Any]:
    with path.open("rb") as f:
        response = client.post("/v1/assets", files={"file": (path.name, f)})
    assert response.status_code == 201, response.text
    return dict(response.json())


def create_job(client: httpx.Client, video: dict[str, Any], audio: dict[str, Any],
               **extra: Any) -> dict[str, Any]:
    response = client.post("/v1/jobs", json={"video": {"asset_id": video["id"]},
                                             "audio": {"asset_id": audio["id"]}, **extra})
    assert response.status_code == 202, response.text
    return dict(response.json())


def wait_for(client: httpx.Client, job_id: str, timeout: float = JOB_TIMEOUT) -> dict[str, Any]:
    """Long-poll the job until it is final."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}", params={"wait": 10}).json()
        if job["status"] in ("succeeded", "failed", "canceled"):
            return dict(job)
    raise AssertionError(f"job {job_id} not final after {timeout:.0f} s: {job}")
