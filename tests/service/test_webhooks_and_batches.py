"""Webhooks, batches, tenancy limits and URL safety through the API, on a real stack: redis-server, the
moto S3 server, uvicorn and one Celery worker process per queue (lipdub.service.stack), with receivers and
file servers on 127.0.0.1 only (the stack allows 127.0.0.0/8 as outbound targets, nothing else)."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from lipdub.prep.cache import prep_version
from lipdub.service.auth import ApiKeys
from lipdub.service.limits import Quotas
from tests.service.conftest import wait_for

RETRY_SCHEDULE = [1, 1, 2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Stack:
    api_url: str
    redis: redis.Redis
    settings: Any

    def client(self, tenant: str) -> httpx.Client:
        key = ApiKeys(self.redis).create(tenant)
        return httpx.Client(base_url=self.api_url, headers={"Authorization": f"Bearer {key}"}, timeout=60)


@pytest.fixture(scope="module")
def hooks_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The stack as `make stack` runs it, with the settings under test here: outbound calls to 127.0.0.0/8
    allowed, a retry schedule of seconds, one batch job per tenant at a time, a low rate limit. (Not the
    session stack of conftest.py: these settings would change what its tests see.)"""
    from lipdub.service.stack import StackConfig, start, stop

    # List settings are JSON in the environment; the stack passes os.environ on to every process.
    list_env = {"LIPDUB_OUTBOUND_ALLOW_NETWORKS": json.dumps(["127.0.0.0/8"]),
                "LIPDUB_WEBHOOK_RETRY_SCHEDULE": json.dumps(RETRY_SCHEDULE)}
    saved = {k: os.environ.get(k) for k in list_env}
    os.environ.update(list_env)
    roots = []
    try:
        for attempt in range(2):
            # A free port can be taken by another process of this shared machine before ours binds it:
            # then the stack fails to start, and a second try with new ports is fair.
            roots.append(tmp_path_factory.mktemp("stack"))
            cfg = StackConfig(root=roots[-1], api_port=free_port(), redis_port=free_port(), s3_port=free_port(),
                              extra_env={"LIPDUB_BATCH_RUNNING_PER_TENANT": "1",
                                         "LIPDUB_RATE_LIMIT_PER_MINUTE": "600", "LIPDUB_RATE_LIMIT_BURST": "40",
                                         "LIPDUB_CHUNK_SECONDS": "10", "LIPDUB_DELIVERY_BACKOFF_SECONDS": "0.2",
                                         # The mouth model is not under test here: the fast energy model.
                                         "LIPDUB_AUDIO_MODEL": "energy"})
            try:
                start(cfg)
                break
            except RuntimeError as exc:
                stop(cfg.root)
                if attempt:
                    raise
                warnings.warn(f"the test stack did not start, trying new ports: {exc}", stacklevel=1)
        settings = cfg.settings()
        yield Stack(cfg.api_url, redis.Redis.from_url(settings.redis_url, decode_responses=True), settings)
    finally:
        for root in roots:
            stop(root)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# --- local servers ----------------------------------------------------------------------------------
@dataclass
class Receiver:
    """A webhook endpoint on 127.0.0.1: answers 500 to the first `fail_first` requests, then 200."""

    fail_first: int = 1
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""

    def wait_for(self, n: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.requests) < n and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(self.requests) >= n, f"{len(self.requests)} of {n} webhook requests arrived"

    def of_type(self, event: str) -> list[tuple[dict[str, str], bytes]]:
        return [(h, b) for h, b in self.requests if json.loads(b)["type"] == event]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_: object) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            state.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(500 if len(state.requests) <= state.fail_first else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/lipdub"
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One short source video and its dub in three languages (espeak-ng)."""
    from lipdub.demo import moving_face_video, speak

    folder = tmp_path_factory.mktemp("catalog")
    return {"video": moving_face_video(folder / "episode.mp4", 2.5),
            "de": speak("Guten Tag zusammen", folder / "de.wav", voice="de"),
            "fr": speak("Bonjour tout le monde", folder / "fr.wav", voice="fr"),
            "es": speak("Hola a todos", folder / "es.wav", voice="es")}


@pytest.fixture(scope="module")
def file_server(media: dict[str, Path]) -> Iterator[str]:
    """Serves the media folder on 127.0.0.1, for inputs given by URL."""
    folder = media["video"].parent

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_: object) -> None:
            pass

        def do_GET(self) -> None:
            path = folder / self.path.lstrip("/")
            if not path.is_file():
                self.send_response(404)
                self.end_headers()
                return
            data = path.read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _upload(client: httpx.Client, path: Path) -> str:
    response = client.post("/v1/assets", files={"file": (path.name, path.read_bytes())})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _wait_batch(client: httpx.Client, batch_id: str, timeout: float = 240,
                on_poll: Any = None) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = client.get(f"/v1/batches/{batch_id}").json()
        if on_poll is not None:
            on_poll(batch)
        if batch["status"] in ("completed", "failed", "cancelled"):
            return dict(batch)
        time.sleep(0.5)
    raise AssertionError(f"batch {batch_id} still {batch['status']} after {timeout} s: {batch}")


def _s3(stack: Stack) -> Any:
    """A client of the stack's S3 server, standing in for a customer's bucket."""
    import boto3

    return boto3.client("s3", endpoint_url=stack.settings.s3_endpoint_url, aws_access_key_id="test",
                        aws_secret_access_key="test", region_name="us-east-1")


def _verify(secret: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    """The Standard Webhooks reference library's check (signature, ±5 min timestamp)."""
    return dict(Webhook(secret).verify(body, headers))


# --- webhooks ---------------------------------------------------------------------------------------
def test_webhook_is_signed_retried_and_replayed_with_rotated_secrets(hooks_stack: Stack, receiver: Receiver,
                                                                      media: dict[str, Path]) -> None:
    client = hooks_stack.client("hooks")
    secret = client.get("/v1/webhooks/secret").json()["data"][0]["secret"]
    assert secret.startswith("whsec_")
    video, audio = _upload(client, media["video"]), _upload(client, media["de"])
    job = client.post("/v1/jobs", json={"video": {"asset_id": video}, "audio": {"asset_id": audio},
                                        "webhook_url": receiver.url}).json()
    assert client.post(f"/v1/jobs/{job['id']}/cancel").json()["status"] == "canceled"

    # The first attempt gets a 500; the retry 1 s later is delivered, with the same webhook-id.
    receiver.wait_for(2)
    (h1, b1), (h2, b2) = receiver.requests[:2]
    assert h1["webhook-id"] == h2["webhook-id"] and b1 == b2
    payload = _verify(secret, h2, b2)
    assert payload["type"] == "job.canceled"
    assert payload["data"]["id"] == job["id"] and payload["data"]["status"] == "canceled"
    with pytest.raises(WebhookVerificationError):  # a tampered body fails verification
        _verify(secret, h2, b2.replace(b"canceled", b"succeeded"))

    deliveries = _wait_deliveries(client, job["id"], lambda d: d[0]["status"] == "delivered")
    (delivery,) = deliveries
    assert delivery["id"] == h1["webhook-id"] and delivery["type"] == "job.canceled"
    assert [(a["attempt"], a["status_code"], a["delivered"]) for a in delivery["attempts"]] == \
        [(1, 500, False), (2, 200, True)]

    # Rotation: the next delivery carries a signature per active secret; each verifies on its own.
    secrets = client.post("/v1/webhooks/secret/rotate").json()["data"]
    assert len(secrets) == 2 and secrets[1]["secret"] == secret and secrets[1]["expires_at"] is not None
    replayed = client.post(f"/v1/jobs/{job['id']}/deliveries/1/replay")
    assert replayed.status_code == 202, replayed.text
    receiver.wait_for(3)
    h3, b3 = receiver.requests[2]
    assert h3["webhook-id"] == h1["webhook-id"] and b3 == b1  # same message, fresh timestamp/signature
    assert len(h3["webhook-signature"].split(" ")) == 2
    for s in secrets:
        assert _verify(s["secret"], h3, b3)["data"]["id"] == job["id"]
    deliveries = _wait_deliveries(client, job["id"], lambda d: len(d[0]["attempts"]) == 3)
    assert deliveries[0]["attempts"][-1]["run"] == 2 and deliveries[0]["status"] == "delivered"

    assert client.get("/v1/jobs/job_nope/deliveries").status_code == 404
    assert client.post(f"/v1/jobs/{job['id']}/deliveries/9/replay").status_code == 404
    other = hooks_stack.client("hooks-other")  # another tenant sees neither the log nor the replay
    assert other.get(f"/v1/jobs/{job['id']}/deliveries").status_code == 404
    assert other.post(f"/v1/jobs/{job['id']}/deliveries/1/replay").status_code == 404


def _wait_deliveries(client: httpx.Client, job_id: str, done: Any, timeout: float = 30) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data = client.get(f"/v1/jobs/{job_id}/deliveries").json()["data"]
        if data and done(data):
            return list(data)
        time.sleep(0.2)
    raise AssertionError(f"deliveries of {job_id}: {data}")


# --- batches ----------------------------------------------------------------------------------------
def test_batch_of_one_source_in_three_languages_preps_once_and_is_fair(
        hooks_stack: Stack, receiver: Receiver, media: dict[str, Path], file_server: str) -> None:
    receiver.fail_first = 0
    catalog, single = hooks_stack.client("catalog"), hooks_stack.client("single")
    secret = catalog.get("/v1/webhooks/secret").json()["data"][0]["secret"]
    single_secret = single.get("/v1/webhooks/secret").json()["data"][0]["secret"]
    video = _upload(catalog, media["video"])
    de, fr = _upload(catalog, media["de"]), _upload(catalog, media["fr"])
    s3 = _s3(hooks_stack)
    s3.create_bucket(Bucket="catalog")  # the customer's bucket: ep1-de is delivered there too
    put_url = s3.generate_presigned_url("put_object", Params={"Bucket": "catalog", "Key": "ep1-de.mp4"})
    lines = [{"custom_id": "ep1-de", "video": {"asset_id": video}, "audio": {"asset_id": de},
              "delivery_url": put_url},
             {"custom_id": "ep1-fr", "video": {"asset_id": video}, "audio": {"asset_id": fr},
              "options": {"sync_mode": "loop"}},
             # an input by URL (a loopback server, allowed in this stack): downloaded in the background
             {"custom_id": "ep1-es", "video": {"asset_id": video}, "audio": {"url": f"{file_server}/es.wav"}},
             {"custom_id": "ep1-it", "video": {"asset_id": video}, "audio": {"url": f"{file_server}/missing.wav"}}]
    manifest = catalog.post("/v1/batches/manifests", content="\n".join(json.dumps(x) for x in lines) + "\n",
                            headers={"Content-Type": "application/jsonl"})
    assert manifest.status_code == 201 and manifest.json()["lines"] == 4, manifest.text
    created = catalog.post("/v1/batches", json={"manifest_id": manifest.json()["id"], "webhook_url": receiver.url,
                                                "metadata": {"show": "demo"}, "options": {"sync_mode": "silence"}},
                           headers={"Idempotency-Key": "catalog-ep1"})
    assert created.status_code == 202 and created.json()["status"] == "validating", created.text
    batch_id = created.json()["id"]
    again = catalog.post("/v1/batches", json={"manifest_id": manifest.json()["id"], "webhook_url": receiver.url,
                                              "metadata": {"show": "demo"}, "options": {"sync_mode": "silence"}},
                         headers={"Idempotency-Key": "catalog-ep1"})
    assert again.json()["id"] == batch_id
    other_body = catalog.post("/v1/batches", json={"manifest_id": manifest.json()["id"]},
                              headers={"Idempotency-Key": "catalog-ep1"})
    assert other_body.status_code == 409 and other_body.json()["error"]["code"] == "idempotency_conflict"

    # Another tenant's single job, submitted right behind the catalog.
    single_video, single_audio = _upload(single, media["video"]), _upload(single, media["de"])
    job = single.post("/v1/jobs", json={"video": {"asset_id": single_video}, "audio": {"asset_id": single_audio},
                                        "webhook_url": receiver.url})
    assert job.status_code == 202, job.text

    most_active = 0

    def watch(_: dict[str, Any]) -> None:  # the stack runs 1 batch job of a tenant at a time
        nonlocal most_active
        jobs = catalog.get("/v1/jobs", params={"batch": batch_id, "limit": 100}).json()["data"]
        most_active = max(most_active, sum(j["status"] in ("queued", "running") for j in jobs))

    batch = _wait_batch(catalog, batch_id, on_poll=watch)
    assert batch["status"] == "completed", batch
    assert batch["request_counts"] == {"total": 4, "queued": 0, "running": 0, "succeeded": 3, "failed": 1,
                                       "canceled": 0}
    assert batch["sources"] == 1 and batch["metadata"] == {"show": "demo"}
    (failed,) = [json.loads(x) for x in catalog.get(f"/v1/batches/{batch_id}/errors",
                                                     follow_redirects=True).text.splitlines()]
    assert failed["custom_id"] == "ep1-it" and failed["job_id"] is None  # a failed download runs nothing
    assert failed["error"]["code"] == "download_failed" and "404" in failed["error"]["message"]
    assert most_active == 1

    rows = [json.loads(x) for x in catalog.get(f"/v1/batches/{batch_id}/output",
                                                follow_redirects=True).text.splitlines()]
    assert sorted(r["custom_id"] for r in rows) == ["ep1-de", "ep1-es", "ep1-fr"]
    by_id = {r["custom_id"]: r for r in rows}
    assert by_id["ep1-de"]["delivery"] == {"status": "delivered", "url": put_url.split("?")[0]}
    assert "delivery" not in by_id["ep1-fr"]  # no delivery_url
    jobs = {r["custom_id"]: catalog.get(f"/v1/jobs/{r['job_id']}").json() for r in rows}
    for custom_id, batch_job in jobs.items():
        assert batch_job["status"] == "succeeded" and batch_job["batch"] == batch_id
        assert batch_job["priority"] == "low" and batch_job["metadata"]["custom_id"] == custom_id
        # The source was prepared once, by the batch's dub.prep_source: every language hit the prep cache.
        assert batch_job["cache"] == {"prep_hit": True}, batch_job
        assert rows[[r["custom_id"] for r in rows].index(custom_id)]["result_url"].endswith(
            f"/v1/jobs/{batch_job['id']}/result")
    assert jobs["ep1-de"]["delivery"]["status"] == "delivered" and jobs["ep1-fr"]["delivery"] is None
    assert s3.head_object(Bucket="catalog", Key="ep1-de.mp4")["ContentLength"] == jobs["ep1-de"]["delivery"]["bytes"]
    # The batch's default options apply where an item sets none.
    assert jobs["ep1-fr"]["options"]["sync_mode"] == "loop" and jobs["ep1-de"]["options"]["sync_mode"] == "silence"
    # ... and that one preparation happened inside this batch (the cache pointer is younger than it).
    sha = catalog.get(f"/v1/assets/{video}").json()["sha256"]
    pointer = json.loads(hooks_stack.redis.get(f"prep:{sha}:v{prep_version(hooks_stack.settings)}") or "{}")
    assert pointer["created_at"] >= hooks_stack.redis.zscore("tenant:catalog:batches", batch_id)
    result = catalog.get(f"/v1/jobs/{jobs['ep1-de']['id']}/result", follow_redirects=True)
    assert result.status_code == 200 and result.content[4:8] == b"ftyp"

    # Fairness: the single job did not wait for the whole catalog. With one batch job of a tenant in the
    # queues at a time, the last item starts only after two others finished; the single job, on the
    # higher-priority lane, is done by then (about one batch job earlier on this machine).
    single_job = wait_for(single, job.json()["id"], timeout=240)
    assert single_job["status"] == "succeeded", single_job
    last_start = max(j["started_at"] for j in jobs.values())
    assert single_job["finished_at"] < last_start, (single_job["finished_at"], last_start)

    # Webhooks: batch.completed carries the batch as the API returns it; job.succeeded for the single job.
    receiver.wait_for(2)
    (headers, body), = receiver.of_type("batch.completed")
    event = _verify(secret, headers, body)
    assert event["data"]["id"] == batch_id and event["data"]["request_counts"]["succeeded"] == 3
    (headers, body), = receiver.of_type("job.succeeded")
    assert _verify(single_secret, headers, body)["data"]["id"] == job.json()["id"]
    with pytest.raises(WebhookVerificationError):  # each tenant signs with its own secret
        _verify(secret, headers, body)
    deliveries = catalog.get(f"/v1/batches/{batch_id}/deliveries").json()["data"]
    assert [d["type"] for d in deliveries] == ["batch.completed"]

    listed = catalog.get("/v1/batches").json()["data"]
    assert [b["id"] for b in listed] == [batch_id]
    assert single.get(f"/v1/batches/{batch_id}").status_code == 404  # tenant isolation


def test_manifest_errors_are_reported_per_line_and_nothing_runs(hooks_stack: Stack, media: dict[str, Path],
                                                                 receiver: Receiver) -> None:
    receiver.fail_first = 0
    client = hooks_stack.client("errors")
    video, audio = _upload(client, media["video"]), _upload(client, media["fr"])
    good = {"video": {"asset_id": video}, "audio": {"asset_id": audio}}
    lines = [
        json.dumps({"custom_id": "ok-1", **good}),
        "{not json",
        json.dumps({"custom_id": "ok-1", **good}),  # duplicate
        json.dumps({"custom_id": "no-audio", "video": {"asset_id": video}}),
        json.dumps({"custom_id": "unknown", "video": {"asset_id": "ast_missing"}, "audio": {"asset_id": audio}}),
        json.dumps({"custom_id": "swapped", "video": {"asset_id": audio}, "audio": {"asset_id": audio}}),
        json.dumps({"custom_id": "metadata", "video": {"url": "http://169.254.169.254/latest/"},
                    "audio": {"asset_id": audio}}),
        json.dumps({"custom_id": "ftp", "video": {"url": "ftp://media.example.com/a.mp4"},
                    "audio": {"asset_id": audio}}),
        json.dumps({"custom_id": "mode", **good, "options": {"sync_mode": "stretch"}}),
        "",
        json.dumps({"custom_id": "ok-2", **good}),
    ]
    manifest = client.post("/v1/batches/manifests", content="\n".join(lines),
                           headers={"Content-Type": "application/jsonl"}).json()
    batch = _wait_batch(client, client.post("/v1/batches", json={"manifest_id": manifest["id"],
                                                                "webhook_url": receiver.url}).json()["id"])
    assert batch["status"] == "failed" and "failed_at" in batch
    errors = [(e["line"], e["code"]) for e in batch["errors"]["data"]]
    assert errors == [(2, "invalid_json"), (3, "duplicate_custom_id"), (4, "invalid_line"),
                      (5, "asset_not_found"), (6, "no_video_stream"), (7, "url_not_allowed"),
                      (8, "url_scheme_not_allowed"), (9, "invalid_options"), (10, "empty_line")]
    assert batch["errors"]["total"] == 9 and batch["request_counts"]["total"] == 0
    assert all(e["message"] for e in batch["errors"]["data"])
    assert client.get("/v1/jobs", params={"batch": batch["id"]}).json()["data"] == []
    receiver.wait_for(1)
    secret = client.get("/v1/webhooks/secret").json()["data"][0]["secret"]
    event = _verify(secret, *receiver.requests[0])
    assert event["type"] == "batch.failed" and event["data"]["errors"]["total"] == 9


def test_ten_thousand_line_manifest_is_validated_in_the_background(hooks_stack: Stack, media: dict[str, Path]) -> None:
    """Every line is checked (the one bad line near the end is found) while the API keeps answering."""
    client = hooks_stack.client("big")
    video, audio = _upload(client, media["video"]), _upload(client, media["es"])
    lines = [json.dumps({"custom_id": f"item-{i}", "video": {"asset_id": video}, "audio": {"asset_id": audio}})
             for i in range(10_000)]
    lines[9_998] = json.dumps({"custom_id": "item-9998", "video": {"asset_id": video}})
    manifest = client.post("/v1/batches/manifests", content="\n".join(lines) + "\n",
                           headers={"Content-Type": "application/jsonl"}).json()
    assert manifest["lines"] == 10_000
    created = client.post("/v1/batches", json={"manifest_id": manifest["id"]}).json()
    assert created["status"] == "validating"
    assert httpx.get(f"{hooks_stack.api_url}/healthz", timeout=5).status_code == 200
    batch = _wait_batch(client, created["id"], timeout=120)
    assert batch["status"] == "failed"
    assert [(e["line"], e["code"]) for e in batch["errors"]["data"]] == [(9_999, "invalid_line")]


def test_cancel_drops_waiting_items_and_cancels_released_jobs(hooks_stack: Stack, media: dict[str, Path]) -> None:
    client = hooks_stack.client("cancel")
    video = _upload(client, media["video"])
    audios = [_upload(client, media[lang]) for lang in ("de", "fr", "es")]
    items = [{"custom_id": f"c-{i}", "video": {"asset_id": video}, "audio": {"asset_id": a}}
             for i, a in enumerate(audios)]
    batch_id = client.post("/v1/batches", json={"items": items}).json()["id"]
    deadline = time.monotonic() + 60  # wait until the first item is a job (the source is prepared by then)
    while not client.get("/v1/jobs", params={"batch": batch_id}).json()["data"]:
        assert time.monotonic() < deadline, client.get(f"/v1/batches/{batch_id}").json()
        time.sleep(0.3)
    running = client.delete(f"/v1/batches/{batch_id}")
    assert running.status_code == 409 and running.json()["error"]["code"] == "batch_not_deletable"
    cancel = client.post(f"/v1/batches/{batch_id}/cancel")
    assert cancel.status_code == 202 and cancel.json()["status"] in ("cancelling", "cancelled"), cancel.text
    batch = _wait_batch(client, batch_id, timeout=60)
    assert batch["status"] == "cancelled", batch
    counts = batch["request_counts"]
    assert counts["total"] == 3 and counts["canceled"] >= 2 and counts["queued"] == counts["running"] == 0
    assert counts["succeeded"] + counts["failed"] + counts["canceled"] == 3
    rows = [json.loads(x) for x in client.get(f"/v1/batches/{batch_id}/errors", follow_redirects=True).text.splitlines()]
    assert {r["status"] for r in rows} == {"canceled"} and len(rows) == counts["canceled"]
    jobs = client.get("/v1/jobs", params={"batch": batch_id}).json()["data"]
    assert len(jobs) == 1 and jobs[0]["status"] in ("canceled", "succeeded")  # only one was ever released
    assert client.post(f"/v1/batches/{batch_id}/cancel").status_code == 409

    # Deleted: the batch is gone at once; the janitor sweep the API queued deletes its job and files.
    assert hooks_stack.client("someone-else").delete(f"/v1/batches/{batch_id}").status_code == 404
    assert client.delete(f"/v1/batches/{batch_id}").status_code == 202
    assert client.get(f"/v1/batches/{batch_id}").status_code == 404
    assert batch_id not in [b["id"] for b in client.get("/v1/batches").json()["data"]]
    deadline = time.monotonic() + 30
    while client.get(f"/v1/jobs/{jobs[0]['id']}").status_code != 404:
        assert time.monotonic() < deadline, "the batch's job was not deleted"
        time.sleep(0.3)
    assert client.get("/v1/jobs", params={"batch": batch_id}).json()["data"] == []
    assert not [k for k in hooks_stack.redis.keys(f"*{batch_id}*")], "Redis keeps some of the batch"
    assert not [k for k in hooks_stack.redis.keys(f"*{jobs[0]['id']}*")], "Redis keeps some of the job"
    assert client.delete(f"/v1/batches/{batch_id}").status_code == 404


def test_cancel_while_validating(hooks_stack: Stack, media: dict[str, Path]) -> None:
    """A cancel that arrives before or during validation wins: at most one item is released (the cap) and
    the counts add up (all zero when the cancel came before validation started)."""
    client = hooks_stack.client("early-cancel")
    video, audio = _upload(client, media["video"]), _upload(client, media["fr"])
    lines = "".join(json.dumps({"custom_id": f"i-{i}", "video": {"asset_id": video}, "audio": {"asset_id": audio}})
                    + "\n" for i in range(3000))
    manifest = client.post("/v1/batches/manifests", content=lines, headers={"Content-Type": "application/jsonl"})
    batch_id = client.post("/v1/batches", json={"manifest_id": manifest.json()["id"]}).json()["id"]
    assert client.post(f"/v1/batches/{batch_id}/cancel").status_code == 202
    batch = _wait_batch(client, batch_id, timeout=60)
    assert batch["status"] == "cancelled", batch
    counts = batch["request_counts"]
    assert counts["queued"] == counts["running"] == counts["failed"] == 0
    assert counts["canceled"] + counts["succeeded"] == counts["total"] and counts["total"] in (0, 3000)
    assert len(client.get("/v1/jobs", params={"batch": batch_id}).json()["data"]) <= 1
    # The manifest can go now that its batch has ended; only its own tenant can delete it.
    manifest_id = manifest.json()["id"]
    assert hooks_stack.client("someone-else").delete(f"/v1/batches/manifests/{manifest_id}").status_code == 404
    assert client.delete(f"/v1/batches/manifests/{manifest_id}").status_code == 204
    assert client.delete(f"/v1/batches/manifests/{manifest_id}").status_code == 404
    reuse = client.post("/v1/batches", json={"manifest_id": manifest_id})
    assert reuse.status_code == 422 and reuse.json()["error"]["code"] == "manifest_not_found"


# --- delivery to the customer's storage ---------------------------------------------------------------
def test_results_are_put_to_the_jobs_presigned_delivery_url(hooks_stack: Stack, receiver: Receiver,
                                                         media: dict[str, Path]) -> None:
    """The result lands in the customer's bucket (a presigned S3 PUT URL of the stack's own S3 server, a
    real S3 endpoint) before the job's webhook, which says so; an unreachable target fails the delivery, not
    the job; an unsafe one is refused at creation."""
    receiver.fail_first = 0
    client = hooks_stack.client("delivery")
    s3 = _s3(hooks_stack)
    s3.create_bucket(Bucket="customer")
    put_url = s3.generate_presigned_url("put_object", Params={"Bucket": "customer", "Key": "dubs/ep1-de.mp4",
                                                              "ContentType": "video/mp4"}, ExpiresIn=3600)
    video, audio = _upload(client, media["video"]), _upload(client, media["de"])
    job = client.post("/v1/jobs", json={"video": {"asset_id": video}, "audio": {"asset_id": audio},
                                         "delivery_url": put_url, "webhook_url": receiver.url}).json()
    done = wait_for(client, job["id"], timeout=240)
    assert done["status"] == "succeeded", done
    deadline = time.monotonic() + 30  # the delivery runs on the webhooks worker, after the job succeeded
    while done["delivery"] is None and time.monotonic() < deadline:
        time.sleep(0.3)
        done = client.get(f"/v1/jobs/{job['id']}").json()
    delivery = done["delivery"]
    assert delivery["status"] == "delivered" and delivery["http_status"] == 200 and delivery["attempts"] == 1
    assert delivery["url"] == put_url.split("?")[0]  # the signature is never shown again
    result = client.get(f"/v1/jobs/{job['id']}/result", follow_redirects=True).content
    stored = s3.get_object(Bucket="customer", Key="dubs/ep1-de.mp4")
    assert stored["Body"].read() == result and delivery["bytes"] == len(result)
    assert stored["ContentType"] == "video/mp4"
    receiver.wait_for(1)
    (_, body), = [r for r in receiver.of_type("job.succeeded") if json.loads(r[1])["data"]["id"] == job["id"]]
    assert json.loads(body)["data"]["delivery"]["status"] == "delivered"  # the webhook came after it

    # Nobody listens there: the job still succeeds, the delivery fails after its attempts.
    dead = f"http://127.0.0.1:{free_port()}/upload/ep1-fr.mp4?sig=secret"
    job = client.post("/v1/jobs", json={"video": {"asset_id": video}, "audio": {"asset_id": audio},
                                         "delivery_url": dead}).json()
    deadline = time.monotonic() + 240
    while (done := client.get(f"/v1/jobs/{job['id']}").json())["delivery"] is None:
        assert time.monotonic() < deadline, done
        time.sleep(0.5)
    assert done["status"] == "succeeded" and done["delivery"]["status"] == "failed"
    assert done["delivery"]["attempts"] == hooks_stack.settings.delivery_attempts
    assert "ConnectError" in done["delivery"]["error"] and "secret" not in json.dumps(done["delivery"])
    # The cloud metadata endpoint is no place to send a file.
    refused = client.post("/v1/jobs", json={"video": {"asset_id": video}, "audio": {"asset_id": audio},
                                             "delivery_url": "http://169.254.169.254/latest/x"})
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "url_not_allowed"


# --- limits and URL safety --------------------------------------------------------------------------
def test_rate_limit_answers_429_with_retry_after(hooks_stack: Stack) -> None:
    client = hooks_stack.client("flood")
    codes, retry_after = [], None
    for _ in range(80):  # burst 40 at 10/s: the tail of a quick flood is refused
        response = client.get("/v1/batches")
        codes.append(response.status_code)
        if response.status_code == 429:
            retry_after = response.headers["retry-after"]
            assert response.json()["error"]["code"] == "rate_limited"
    assert codes[:35] == [200] * 35 and 429 in codes
    assert retry_after is not None and 1 <= int(retry_after) <= 60
    time.sleep(int(retry_after))
    assert client.get("/v1/batches").status_code == 200
    assert hooks_stack.client("calm").get("/v1/batches").status_code == 200  # limits are per key


def test_tenant_quotas_on_concurrency_video_length_and_file_size(hooks_stack: Stack, media: dict[str, Path]) -> None:
    client = hooks_stack.client("quota")
    quotas = Quotas(hooks_stack.redis, hooks_stack.settings)
    video, audio = _upload(client, media["video"]), _upload(client, media["de"])
    body = {"video": {"asset_id": video}, "audio": {"asset_id": audio}}
    quotas.set("quota", max_concurrent_jobs=1)
    # Requests that race are admitted one at a time: however many arrive together, the cap holds.
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: client.post("/v1/jobs", json=body), range(6)))
    assert sorted(a.status_code for a in answers) == [202] + [429] * 5, [a.text for a in answers]
    first = next(a.json() for a in answers if a.status_code == 202)
    refused = next(a for a in answers if a.status_code == 429)
    assert all(a.json()["error"]["code"] == "concurrency_limit_reached" for a in answers if a.status_code == 429)
    assert refused.json()["error"]["retryable"] is True
    assert int(refused.headers["retry-after"]) > 0
    client.post(f"/v1/jobs/{first['id']}/cancel")
    second = client.post("/v1/jobs", json=body)
    assert second.status_code == 202, second.text
    client.post(f"/v1/jobs/{second.json()['id']}/cancel")
    quotas.set("quota", max_video_seconds=1.0)
    too_long = client.post("/v1/jobs", json=body)
    assert too_long.status_code == 422 and too_long.json()["error"]["code"] == "input_too_long"
    quotas.set("quota", max_video_seconds=600, max_file_bytes=1000)
    too_big = client.post("/v1/jobs", json=body)
    assert too_big.status_code == 422 and too_big.json()["error"]["code"] == "payload_too_large"
    upload = client.post("/v1/assets", files={"file": ("de.wav", media["de"].read_bytes())})
    assert upload.status_code == 413 and upload.json()["error"]["code"] == "payload_too_large"
    assert hooks_stack.client("quota-free").post(  # other tenants keep the default quota
        "/v1/assets", files={"file": ("de.wav", media["de"].read_bytes())}).status_code == 201


def test_unsafe_webhook_targets_are_refused(hooks_stack: Stack, media: dict[str, Path]) -> None:
    client = hooks_stack.client("ssrf")
    video, audio = _upload(client, media["video"]), _upload(client, media["de"])
    for url in ("http://169.254.169.254/latest/meta-data/", "http://10.1.2.3/hook", "http://[::1]:80/hook",
                "http://192.168.0.10/hook"):
        response = client.post("/v1/jobs", json={"video": {"asset_id": video}, "audio": {"asset_id": audio},
                                                 "webhook_url": url})
        assert response.status_code == 422 and response.json()["error"]["code"] == "url_not_allowed", url
        batch = client.post("/v1/batches", json={"items": [{"custom_id": "a", "video": {"asset_id": video},
                                                            "audio": {"asset_id": audio}}], "webhook_url": url})
        assert batch.status_code == 422 and batch.json()["error"]["code"] == "url_not_allowed", url


# --- single jobs: inputs by URL, idempotency at the concurrency cap ----------------------------------------
def test_job_inputs_by_url_are_downloaded_by_the_worker(hooks_stack: Stack, media: dict[str, Path],
                                                        file_server: str) -> None:
    client = hooks_stack.client("by-url")
    body = {"video": {"url": f"{file_server}/episode.mp4"}, "audio": {"url": f"{file_server}/fr.wav"}}
    accepted = client.post("/v1/jobs", json=body)
    assert accepted.status_code == 202, accepted.text  # answered before any download
    missing = client.post("/v1/jobs", json={**body, "audio": {"url": f"{file_server}/missing.wav"}})
    assert missing.status_code == 202, missing.text
    refused = client.post("/v1/jobs", json={**body, "video": {"url": "http://169.254.169.254/latest/x.mp4"}})
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "url_not_allowed"

    failed = wait_for(client, missing.json()["id"], timeout=240)
    assert failed["status"] == "failed" and failed["error"]["code"] == "download_failed", failed
    assert "404" in failed["error"]["message"] and failed["error"]["retryable"]

    job = wait_for(client, accepted.json()["id"], timeout=240)
    assert job["status"] == "succeeded", job
    result = client.get(f"/v1/jobs/{job['id']}/result", follow_redirects=True)
    assert result.status_code == 200 and result.content[4:8] == b"ftyp"
    # The downloads became the tenant's assets, content-addressed like uploads.
    spec = json.loads(hooks_stack.redis.hget(f"job:{job['id']}", "spec"))
    assert spec["video"]["asset_id"] == _upload(client, media["video"])

    # The tenant's file-size quota caps the download itself.
    small = hooks_stack.client("by-url-small")
    Quotas(hooks_stack.redis, hooks_stack.settings).set("by-url-small", max_file_bytes=1000)
    too_big = wait_for(small, small.post("/v1/jobs", json=body).json()["id"], timeout=240)
    assert too_big["status"] == "failed" and too_big["error"]["code"] == "download_too_large", too_big


def test_idempotent_retry_returns_the_job_even_at_the_concurrency_cap(hooks_stack: Stack,
                                                                      media: dict[str, Path]) -> None:
    client = hooks_stack.client("idem-cap")
    Quotas(hooks_stack.redis, hooks_stack.settings).set("idem-cap", max_concurrent_jobs=1)
    body = {"video": {"asset_id": _upload(client, media["video"])}, "audio": {"asset_id": _upload(client, media["es"])}}
    first = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "catalog-42"})
    assert first.status_code == 202, first.text
    try:
        # The first job is what holds the tenant at its cap; its retry must still get it, not a 429.
        retry = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "catalog-42"})
        assert retry.status_code == 202 and retry.json()["id"] == first.json()["id"], retry.text
        other = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "catalog-43"})
        assert other.status_code == 429 and other.json()["error"]["code"] == "concurrency_limit_reached"
        conflict = client.post("/v1/jobs", json={**body, "priority": "high"}, headers={"Idempotency-Key": "catalog-42"})
        assert conflict.status_code == 409 and conflict.json()["error"]["code"] == "idempotency_conflict"
        # A refused request claims no key: once there is room, the same key makes its job.
        client.post(f"/v1/jobs/{first.json()['id']}/cancel")
        later = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "catalog-43"})
        assert later.status_code == 202 and later.json()["id"] != first.json()["id"], later.text
        client.post(f"/v1/jobs/{later.json()['id']}/cancel")
    finally:
        client.post(f"/v1/jobs/{first.json()['id']}/cancel")
