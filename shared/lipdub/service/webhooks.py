"""Webhooks per Standard Webhooks 1.0: signed events, delivered at least once by the `webhooks` queue.

Every event is a message with a stable id (`webhook-id`, the same on every retry and replay, so receivers
dedupe on it). A delivery attempt POSTs the exact stored body with

  webhook-id: msg_…            webhook-timestamp: <unix seconds of this attempt>
  webhook-signature: v1,<base64 HMAC-SHA256(secret, "{id}.{timestamp}.{body}")> [v1,<…> …]

signed with each of the tenant's active secrets (`whsec_<base64>`): after a rotation the old secret keeps
signing for `webhook_secret_grace_seconds`, so receivers that still hold it keep verifying.

A 2xx answer within `webhook_timeout` seconds is a delivery; anything else (3xx included: redirects are
not followed) is retried after each delay of `webhook_retry_schedule`. 410 Gone stops the retries.
Retry-After (429/503) is honoured when it asks for a longer wait.

Redis state (lipdub.service.redis_keys): per tenant the JSON list of signing secrets [{id, secret,
created_at, expires_at}]; per message a hash (tenant, subject, type, url, body, created_at, status, run,
attempts, next_at) and its delivery log (JSON attempt records); per job or batch its message ids, oldest
first (deliveries 1..n); and a short-lived claim per attempt, so a redelivered task message never sends an
attempt twice.

Long waits (6 h, 12 h) are not one Celery countdown: Redis redelivers unacked ETA tasks after the
visibility timeout, which would duplicate them. The task sleeps in hops shorter than that timeout and
re-queues itself until the attempt is due.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import logging
import secrets
import time
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import httpx
import redis

from lipdub import __version__
from lipdub.config import Settings, get_settings
from lipdub.service import redis_keys
from lipdub.service.celery_app import app
from lipdub.service.indexes import now
from lipdub.service.status import JobStore, get_store
from lipdub.service.urls import UrlRejected, check_url, client, pinned_request

log = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"


class EventType(StrEnum):
    job_succeeded = "job.succeeded"
    job_failed = "job.failed"
    job_canceled = "job.canceled"
    batch_completed = "batch.completed"
    batch_failed = "batch.failed"
    batch_canceled = "batch.canceled"


class DeliveryStatus(StrEnum):
    pending = "pending"  # an attempt is due or scheduled
    delivered = "delivered"
    failed = "failed"  # every retry failed (or the endpoint answered 410)


# --- signing ------------------------------------------------------------------------------------------
def new_secret() -> str:
    """A signing secret: 32 random bytes (the spec asks for 24-64), serialised as whsec_<base64>."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def sign(secret_list: list[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The webhook-signature header: one `v1,<sig>` per secret, space-separated."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return " ".join("v1," + base64.b64encode(hmac.new(_key(s), signed, hashlib.sha256).digest()).decode()
                    for s in secret_list)


@dataclass(frozen=True)
class Secret:
    id: str
    secret: str
    created_at: float
    expires_at: float | None  # None: the current secret

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "secret": self.secret, "created_at": self.created_at,
                "expires_at": self.expires_at}


class WebhookSecrets:
    """Per-tenant signing secrets, newest first. Stored in clear: HMAC signing needs the secret itself."""

    def __init__(self, r: redis.Redis, settings: Settings) -> None:
        self.r = r
        self.settings = settings

    def _load(self, tenant: str) -> list[Secret]:
        raw = self.r.get(redis_keys.webhook_secrets(tenant))
        return [Secret(**s) for s in json.loads(raw)] if raw else []

    def active(self, tenant: str) -> list[Secret]:
        """Secrets that sign now: the current one, plus rotated-out ones still within their grace period.
        The first use creates the tenant's first secret."""
        found = [s for s in self._load(tenant) if s.expires_at is None or s.expires_at > time.time()]
        return found or [self._create_first(tenant)]

    def _create_first(self, tenant: str) -> Secret:
        first = Secret("whs_" + uuid.uuid4().hex[:16], new_secret(), now(), None)
        # NX: two concurrent first uses agree on one secret.
        if not self.r.set(redis_keys.webhook_secrets(tenant), json.dumps([first.public()]), nx=True):
            return self.active(tenant)[0]
        return first

    def current(self, tenant: str) -> Secret:
        return self.active(tenant)[0]

    def rotate(self, tenant: str) -> Secret:
        """A new current secret; the previous ones keep signing for the grace period, then drop out."""
        name = redis_keys.webhook_secrets(tenant)
        fresh = Secret("whs_" + uuid.uuid4().hex[:16], new_secret(), now(), None)
        with self.r.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(name)
                    raw = pipe.get(name)
                    old = [Secret(**s) for s in json.loads(raw)] if raw else []
                    grace_end = now() + self.settings.webhook_secret_grace_seconds
                    kept = [Secret(s.id, s.secret, s.created_at, min(s.expires_at or grace_end, grace_end))
                            for s in old if s.expires_at is None or s.expires_at > time.time()]
                    pipe.multi()
                    pipe.set(name, json.dumps([fresh.public()] + [s.public() for s in kept]))
                    pipe.execute()
                    return fresh
                except redis.WatchError:
                    continue


# --- messages and the delivery log -------------------------------------------------------------------
@dataclass(frozen=True)
class Message:
    id: str
    tenant: str
    subject: str  # the job or batch id the event is about
    type: str
    url: str
    body: str
    created_at: float
    status: DeliveryStatus
    run: int  # 1 + number of replays
    attempts: int
    next_at: float | None
    delivered_at: float | None

    @classmethod
    def from_hash(cls, raw: dict[str, str]) -> Message:
        return cls(id=raw["id"], tenant=raw["tenant"], subject=raw["subject"], type=raw["type"], url=raw["url"],
                   body=raw["body"], created_at=float(raw["created_at"]), status=DeliveryStatus(raw["status"]),
                   run=int(raw.get("run", 1)), attempts=int(raw.get("attempts", 0)),
                   next_at=float(raw["next_at"]) if raw.get("next_at") else None,
                   delivered_at=float(raw["delivered_at"]) if raw.get("delivered_at") else None)


# A field update of a message that still exists: a deleted message must not come back as a partial hash
# (without its TTL) because an attempt in flight recorded its outcome.
_UPDATE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
return redis.call(ARGV[1], KEYS[1], unpack(ARGV, 2))
"""


class Deliveries:
    """Webhook messages and their attempt logs, per job or batch."""

    def __init__(self, r: redis.Redis, settings: Settings) -> None:
        self.r = r
        self.settings = settings
        self._update = r.register_script(_UPDATE)

    def create(self, tenant: str, subject: str, event: EventType | str, url: str, data: dict[str, Any],
               msg_id: str | None = None) -> tuple[Message, bool]:
        """Store a new event for `subject`. With `msg_id` (derived from the event, e.g. job id + type),
        emitting the same event twice stores it once; returns (message, created)."""
        msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
        created = now()
        body = json.dumps({"type": str(event), "timestamp": _iso(created), "data": data},
                          separators=(",", ":"), default=str)
        key = redis_keys.webhook_message(msg_id)
        ttl = self.settings.job_ttl_seconds
        if not self.r.hsetnx(key, "id", msg_id):
            existing = self.get(msg_id)
            assert existing is not None
            return existing, False
        pipe = self.r.pipeline()
        pipe.hset(key, mapping={"tenant": tenant, "subject": subject, "type": str(event), "url": url,
                                "body": body, "created_at": created, "status": DeliveryStatus.pending,
                                "run": 1, "attempts": 0, "next_at": created})
        pipe.expire(key, ttl)
        pipe.rpush(redis_keys.webhook_subject(subject), msg_id)
        pipe.expire(redis_keys.webhook_subject(subject), ttl)
        pipe.execute()
        message = self.get(msg_id)
        assert message is not None
        return message, True

    def get(self, msg_id: str) -> Message | None:
        raw = self.r.hgetall(redis_keys.webhook_message(msg_id))
        return Message.from_hash(raw) if raw.get("tenant") else None

    def for_subject(self, subject: str) -> list[Message]:
        ids = self.r.lrange(redis_keys.webhook_subject(subject), 0, -1)
        return [m for m in (self.get(i) for i in ids) if m is not None]

    def attempts(self, msg_id: str) -> list[dict[str, Any]]:
        return [json.loads(a) for a in self.r.lrange(redis_keys.webhook_attempts(msg_id), 0, -1)]

    def log_attempt(self, msg_id: str, record: dict[str, Any]) -> int:
        attempts = self._update(keys=[redis_keys.webhook_message(msg_id)], args=["HINCRBY", "attempts", 1])
        if attempts is None:  # deleted meanwhile
            return 0
        pipe = self.r.pipeline()
        pipe.rpush(redis_keys.webhook_attempts(msg_id), json.dumps(record))
        pipe.expire(redis_keys.webhook_attempts(msg_id), self.settings.job_ttl_seconds)
        pipe.execute()
        return int(attempts)

    def set_state(self, msg_id: str, **fields: Any) -> None:
        pairs = [x for k, v in fields.items() for x in (k, "" if v is None else v)]
        self._update(keys=[redis_keys.webhook_message(msg_id)], args=["HSET", *pairs])

    def start_run(self, msg_id: str) -> int:
        """A replay: a new run of attempts with the same id and body; earlier runs' pending retries stop."""
        run = int(self._update(keys=[redis_keys.webhook_message(msg_id)], args=["HINCRBY", "run", 1]) or 0)
        self.set_state(msg_id, status=DeliveryStatus.pending, next_at=now())
        return run

    def forget(self, subject: str) -> None:
        """The messages of a job or batch that is deleted (their bodies carry its data). An attempt running
        meanwhile updates nothing: updates only touch a message that still exists (_UPDATE)."""
        ids = self.r.lrange(redis_keys.webhook_subject(subject), 0, -1)
        self.r.delete(redis_keys.webhook_subject(subject),
                      *(key for i in ids for key in (redis_keys.webhook_message(i), redis_keys.webhook_attempts(i))))

    def claim(self, msg_id: str, run: int, n: int) -> bool:
        """True once per (run, attempt): a task message Redis redelivered finds the attempt claimed. The
        claim expires, so an attempt whose worker died mid-request is sent again by the redelivery."""
        ttl = int(self.settings.webhook_timeout) + 60
        return bool(self.r.set(redis_keys.webhook_claim(msg_id, run, n), 1, nx=True, ex=ttl))

    def release(self, msg_id: str, run: int, n: int) -> None:
        self.r.delete(redis_keys.webhook_claim(msg_id, run, n))

    def public(self, message: Message, index: int) -> dict[str, Any]:
        return {"n": index, "id": message.id, "type": message.type, "url": message.url,
                "status": message.status, "created_at": _iso(message.created_at),
                "next_attempt_at": _iso(message.next_at) if message.status == DeliveryStatus.pending
                and message.next_at else None,
                "delivered_at": _iso(message.delivered_at) if message.delivered_at else None,
                "attempts": self.attempts(message.id)}


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


# --- emitting and delivering -------------------------------------------------------------------------
def emit(store: JobStore, tenant: str, subject: str, event: EventType | str, url: str, data: dict[str, Any],
         msg_id: str | None = None) -> Message:
    """Store the event and queue its first delivery attempt now (at most once per `msg_id`)."""
    message, created = Deliveries(store.r, store.settings).create(tenant, subject, event, url, data, msg_id)
    if created:
        schedule(message.id, message.run, 1, now())
    return message


def replay(store: JobStore, msg_id: str) -> Message:
    """Deliver a message again now (a new run with the full retry schedule), whatever its status."""
    deliveries = Deliveries(store.r, store.settings)
    run = deliveries.start_run(msg_id)
    schedule(msg_id, run, 1, now())
    message = deliveries.get(msg_id)
    assert message is not None
    return message


def schedule(msg_id: str, run: int, n: int, due: float) -> None:
    """Queue attempt `n` of `run` for time `due` (in hops shorter than the broker's visibility timeout)."""
    hop = max(1.0, get_settings().visibility_timeout / 2)
    countdown = min(max(0.0, due - time.time()), hop)
    deliver_task.apply_async(args=(msg_id, run, n, due), countdown=countdown or None)


# Redis errors are retried (the attempt log lives there); the receiver's faults never raise (see attempt).
@app.task(name="webhooks.deliver", acks_late=True, reject_on_worker_lost=True, ignore_result=True,
          autoretry_for=(redis.RedisError,), retry_backoff=2, retry_backoff_max=300, max_retries=10)
def deliver_task(msg_id: str, run: int, n: int, due: float) -> str:
    """One delivery attempt (or one hop of the wait before it)."""
    if time.time() < due - 0.5:  # not yet due: wait another hop
        schedule(msg_id, run, n, due)
        return "waiting"
    store = get_store()
    settings = store.settings
    deliveries = Deliveries(store.r, settings)
    message = deliveries.get(msg_id)
    if message is None or message.run != run or message.status != DeliveryStatus.pending:
        return "stale"  # replayed (a newer run owns the message), already delivered, or expired
    if not deliveries.claim(msg_id, run, n):
        return "duplicate"
    try:
        return _attempt_and_follow_up(deliveries, message, settings, run, n)
    except redis.RedisError:
        # This task is retried; its retry must find the attempt unclaimed, or it would return "duplicate"
        # and leave the message pending with nothing scheduled. The receiver may get the event twice:
        # delivery is at least once, and the webhook-id lets it drop the repeat.
        with contextlib.suppress(redis.RedisError):
            deliveries.release(msg_id, run, n)
        raise


def _attempt_and_follow_up(deliveries: Deliveries, message: Message, settings: Settings, run: int,
                           n: int) -> str:
    """Send attempt `n`, log it, and mark the message delivered or failed, or schedule attempt n + 1."""
    msg_id = message.id
    outcome = attempt(message, settings, WebhookSecrets(deliveries.r, settings).active(message.tenant))
    outcome.update(run=run, attempt=n)
    deliveries.log_attempt(msg_id, outcome)
    if outcome["delivered"]:
        deliveries.set_state(msg_id, status=DeliveryStatus.delivered, delivered_at=outcome["at"], next_at=None)
        return "delivered"
    schedule_s = settings.webhook_retry_schedule
    if outcome.get("status_code") == 410 or n > len(schedule_s):
        deliveries.set_state(msg_id, status=DeliveryStatus.failed, next_at=None)
        log.warning("webhook %s to %s failed for good after %d attempts", msg_id, message.url, n)
        return "failed"
    delay = float(schedule_s[n - 1])
    retry_after = outcome.get("retry_after")
    if retry_after is not None:
        delay = min(max(delay, retry_after), float(max(schedule_s)))
    due_next = time.time() + delay
    deliveries.set_state(msg_id, next_at=round(due_next, 3))
    schedule(msg_id, run, n + 1, due_next)
    return "retrying"


def attempt(message: Message, settings: Settings, secret_list: list[Secret]) -> dict[str, Any]:
    """POST the message once; returns the attempt record. Never raises for the target's faults."""
    started = time.monotonic()
    record: dict[str, Any] = {"at": now(), "delivered": False, "status_code": None, "error": None}
    try:
        target = check_url(message.url, settings)  # re-checked on every attempt: DNS may have changed
        timestamp = int(time.time())
        body = message.body.encode()
        headers = {"content-type": "application/json", "user-agent": f"lipdub-webhooks/{__version__}",
                   "webhook-id": message.id, "webhook-timestamp": str(timestamp),
                   "webhook-signature": sign([s.secret for s in secret_list], message.id, timestamp, body)}
        with client(settings, settings.webhook_timeout) as http:
            # Only the status line matters: the receiver's body is never read (nor trusted).
            response = http.send(pinned_request(http, "POST", target, headers=headers, content=body),
                                 stream=True)
            response.close()
        elapsed = time.monotonic() - started
        record["status_code"] = response.status_code
        if 200 <= response.status_code < 300 and elapsed <= settings.webhook_timeout:
            record["delivered"] = True
        elif 200 <= response.status_code < 300:
            record["error"] = f"answered after {elapsed:.1f} s (limit {settings.webhook_timeout:g} s)"
        else:
            record["error"] = f"HTTP {response.status_code}"
            retry_after = response.headers.get("retry-after", "")
            if retry_after.isdigit():
                record["retry_after"] = int(retry_after)
    except UrlRejected as exc:
        record["error"] = f"{exc.code}: {exc.message}"
    except httpx.HTTPError as exc:
        record["error"] = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    record["duration_ms"] = round((time.monotonic() - started) * 1000)
    return record
