"""Signing, secret rotation, the delivery log and single delivery attempts (lipdub.service.webhooks),
against a real redis-server and HTTP receivers on 127.0.0.1; verified with the `standardwebhooks`
reference library. Retries and replay through the queue are in test_webhooks_and_batches.py."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from lipdub.config import Settings
from lipdub.service.status import JobStore
from lipdub.service.webhooks import Deliveries, DeliveryStatus, EventType, WebhookSecrets, attempt, sign

from .test_limits import redis_url  # noqa: F401 - the redis-server fixture


@pytest.fixture
def store(redis_url: str, tmp_path: Path) -> JobStore:  # noqa: F811
    settings = Settings(data_dir=tmp_path, redis_url=redis_url, webhook_timeout=1.0,
                        webhook_secret_grace_seconds=1, outbound_allow_networks=["127.0.0.0/8"])
    store = JobStore.from_settings(settings)
    store.r.flushdb()
    return store


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[str, list[dict[str, str]]]]:
    """Answers by path: /ok 204, /error 500, /redirect 302, /busy 429 + Retry-After, /slow 200 after 2 s."""
    seen: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_: object) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["content-length"]))
            seen.append({"path": self.path, **{k.lower(): v for k, v in self.headers.items()}})
            if self.path == "/slow":
                time.sleep(2)
            code = {"/ok": 204, "/error": 500, "/redirect": 302, "/busy": 429, "/slow": 200}[self.path]
            self.send_response(code)
            if code == 302:
                self.send_header("Location", "/ok")
            if code == 429:
                self.send_header("Retry-After", "7")
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


def test_signatures_verify_with_the_reference_library() -> None:
    secrets = ["whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_" + "dGhpcyBpcyBhIDMyLWJ5dGUgc2VjcmV0ISEhISEhISE="]
    body = json.dumps({"type": "job.succeeded", "timestamp": "2026-01-01T00:00:00Z", "data": {"id": "job_1"}})
    ts = int(time.time())
    header = sign(secrets, "msg_1", ts, body.encode())
    assert len(header.split(" ")) == 2 and all(s.startswith("v1,") for s in header.split(" "))
    for secret in secrets:
        headers = {"webhook-id": "msg_1", "webhook-timestamp": str(ts), "webhook-signature": header}
        assert Webhook(secret).verify(body, headers)["data"]["id"] == "job_1"
    for bad in ({"webhook-id": "msg_2"}, {"webhook-timestamp": str(ts - 3600)}):
        with pytest.raises(WebhookVerificationError):
            Webhook(secrets[0]).verify(body, {"webhook-id": "msg_1", "webhook-timestamp": str(ts),
                                             "webhook-signature": header, **bad})


def test_rotation_signs_with_both_secrets_for_the_grace_period(store: JobStore) -> None:
    secrets = WebhookSecrets(store.r, store.settings)
    first = secrets.current("acme")
    assert secrets.current("acme") == first and secrets.current("globex") != first  # one per tenant
    new = secrets.rotate("acme")
    assert [s.id for s in secrets.active("acme")] == [new.id, first.id]
    time.sleep(1.1)  # webhook_secret_grace_seconds=1
    assert [s.id for s in secrets.active("acme")] == [new.id]


def test_an_event_is_stored_once_and_each_attempt_claimed_once(store: JobStore) -> None:
    deliveries = Deliveries(store.r, store.settings)
    message, created = deliveries.create("acme", "job_1", EventType.job_failed, "http://127.0.0.1/x",
                                         {"id": "job_1"}, msg_id="msg_job_1_failed")
    again, created_again = deliveries.create("acme", "job_1", EventType.job_failed, "http://127.0.0.1/x",
                                             {"id": "job_1"}, msg_id="msg_job_1_failed")
    assert created and not created_again and again.body == message.body
    assert [m.id for m in deliveries.for_subject("job_1")] == ["msg_job_1_failed"]
    assert json.loads(message.body) == {"type": "job.failed", "timestamp": json.loads(message.body)["timestamp"],
                                        "data": {"id": "job_1"}}
    assert deliveries.claim(message.id, 1, 1) and not deliveries.claim(message.id, 1, 1)
    assert deliveries.claim(message.id, 1, 2) and deliveries.claim(message.id, 2, 1)
    assert deliveries.start_run(message.id) == 2
    assert deliveries.get(message.id).status == DeliveryStatus.pending


@pytest.mark.parametrize("path, delivered, code, error", [
    ("/ok", True, 204, None),
    ("/error", False, 500, "HTTP 500"),
    ("/redirect", False, 302, "HTTP 302"),  # redirects are not followed
    ("/busy", False, 429, "HTTP 429"),
    ("/slow", False, None, "ReadTimeout"),  # no answer within webhook_timeout (1 s here)
])
def test_one_attempt(store: JobStore, receiver: tuple[str, list[dict[str, str]]], path: str, delivered: bool,
                     code: int | None, error: str | None) -> None:
    base, seen = receiver
    message, _ = Deliveries(store.r, store.settings).create("acme", "job_1", EventType.job_succeeded,
                                                            base + path, {"id": "job_1"})
    secret = WebhookSecrets(store.r, store.settings).active("acme")
    record = attempt(message, store.settings, secret)
    assert (record["delivered"], record["status_code"]) == (delivered, code)
    if error is None:
        assert record["error"] is None
    else:
        assert error in record["error"]
    if path == "/busy":
        assert record["retry_after"] == 7
    headers = next(h for h in reversed(seen) if h["path"] == path)
    assert headers["webhook-id"] == message.id and headers["content-type"] == "application/json"
    assert headers["host"] == base.removeprefix("http://")
    Webhook(secret[0].secret).verify(message.body, headers)
    if path == "/redirect":
        assert not any(h["path"] == "/ok" and h["webhook-id"] == message.id for h in seen)


def test_attempt_to_a_blocked_target_sends_nothing(store: JobStore) -> None:
    message, _ = Deliveries(store.r, store.settings).create("acme", "job_1", EventType.job_succeeded,
                                                            "http://169.254.169.254/latest/", {"id": "job_1"})
    record = attempt(message, store.settings, WebhookSecrets(store.r, store.settings).active("acme"))
    assert not record["delivered"] and record["status_code"] is None
    assert record["error"].startswith("url_not_allowed")


def test_a_redis_error_after_the_claim_lets_the_retry_send_the_attempt(
        store: JobStore, receiver: tuple[str, list[dict[str, str]]], monkeypatch: pytest.MonkeyPatch) -> None:
    """Celery retries deliver_task on a Redis error; the retry must not find its own attempt claimed (it would
    return "duplicate" and strand the message as pending, with nothing scheduled)."""
    import redis

    from lipdub.service import webhooks

    base, seen = receiver
    scheduled: list[tuple[object, ...]] = []
    monkeypatch.setattr(webhooks, "get_store", lambda: store)
    monkeypatch.setattr(webhooks, "schedule", lambda *args: scheduled.append(args))
    message, _ = Deliveries(store.r, store.settings).create("acme", "job_1", EventType.job_failed,
                                                            base + "/error", {"id": "job_1"})
    log_attempt = Deliveries.log_attempt

    def fails_once(self: Deliveries, *args: object) -> None:
        monkeypatch.setattr(Deliveries, "log_attempt", log_attempt)
        raise redis.ConnectionError("Connection reset by peer")

    monkeypatch.setattr(Deliveries, "log_attempt", fails_once)
    with pytest.raises(redis.ConnectionError):
        webhooks.deliver_task.run(message.id, 1, 1, 0.0)
    assert webhooks.deliver_task.run(message.id, 1, 1, 0.0) == "retrying"  # Celery's retry of the same task
    assert sum(h["webhook-id"] == message.id for h in seen) == 2  # at least once: the receiver dedupes by id
    stored = Deliveries(store.r, store.settings).get(message.id)
    assert stored is not None and stored.status == DeliveryStatus.pending and stored.attempts == 1
    assert [args[:3] for args in scheduled] == [(message.id, 1, 2)]
