"""Webhook signing secrets and the delivery log of jobs and batches (with replay).

GET  /v1/webhooks/secret                      the tenant's signing secrets (created on first use)
POST /v1/webhooks/secret/rotate               a new secret; the old ones keep signing for the grace period
GET  /v1/jobs/{id}/deliveries                 every webhook message of the job with its attempts
POST /v1/jobs/{id}/deliveries/{n}/replay      deliver message n (1-based) again, same webhook-id
GET  /v1/batches/{id}/deliveries, POST .../deliveries/{n}/replay   the same for batches
"""

from __future__ import annotations

from fastapi import APIRouter, status
from pydantic import BaseModel, Field

from lipdub.service.batches import BatchStore
from lipdub.service.status import JobStore
from lipdub.service.webhooks import Deliveries, WebhookSecrets, replay
from lipdub_api.deps import StoreDep, TenantDep
from lipdub_api.errors import not_found
from lipdub_api.schemas import ErrorResponse

router = APIRouter(tags=["webhooks"], responses={401: {"model": ErrorResponse}, 404: {"model": ErrorResponse}})


class SecretPublic(BaseModel):
    id: str
    secret: str = Field(description="whsec_<base64>: the Standard Webhooks HMAC key")
    created_at: float
    expires_at: float | None = Field(description="When a rotated-out secret stops signing; null: current")


class SecretList(BaseModel):
    data: list[SecretPublic] = Field(description="Newest first; every one of them signs each delivery")


class AttemptPublic(BaseModel):
    run: int = Field(description="1 for the original delivery, +1 per replay")
    attempt: int
    at: float
    delivered: bool
    status_code: int | None
    error: str | None
    duration_ms: int


class DeliveryPublic(BaseModel):
    n: int
    id: str = Field(description="The webhook-id header: the same on every retry and replay")
    type: str
    url: str
    status: str = Field(description="pending | delivered | failed")
    created_at: str
    next_attempt_at: str | None
    delivered_at: str | None
    attempts: list[AttemptPublic]


class DeliveryList(BaseModel):
    data: list[DeliveryPublic]


def _secrets(store: JobStore, tenant: str) -> SecretList:
    found = WebhookSecrets(store.r, store.settings).active(tenant)
    return SecretList(data=[SecretPublic(**s.public()) for s in found])


@router.get("/v1/webhooks/secret")
def get_secrets(tenant: TenantDep, store: StoreDep) -> SecretList:
    """The secrets that sign this account's webhooks (verify with any Standard Webhooks library)."""
    return _secrets(store, tenant)


@router.post("/v1/webhooks/secret/rotate")
def rotate_secret(tenant: TenantDep, store: StoreDep) -> SecretList:
    """Make a new current secret. Deliveries carry one signature per active secret, so receivers can
    switch to the new one while the old one still verifies (`webhook_secret_grace_seconds`)."""
    WebhookSecrets(store.r, store.settings).rotate(tenant)
    return _secrets(store, tenant)


def _list(store: JobStore, subject: str) -> DeliveryList:
    deliveries = Deliveries(store.r, store.settings)
    return DeliveryList(data=[DeliveryPublic.model_validate(deliveries.public(m, i))
                              for i, m in enumerate(deliveries.for_subject(subject), start=1)])


def _replay(store: JobStore, subject: str, n: int) -> DeliveryPublic:
    deliveries = Deliveries(store.r, store.settings)
    messages = deliveries.for_subject(subject)
    if not 1 <= n <= len(messages):
        raise not_found("delivery")
    message = replay(store, messages[n - 1].id)
    return DeliveryPublic.model_validate(deliveries.public(message, n))


def _own_job(store: JobStore, tenant: str, job_id: str) -> None:
    if store.get_for_tenant(tenant, job_id) is None:
        raise not_found("job")


def _own_batch(store: JobStore, tenant: str, batch_id: str) -> None:
    if BatchStore(store).get_for_tenant(tenant, batch_id) is None:
        raise not_found("batch")


@router.get("/v1/jobs/{job_id}/deliveries", tags=["jobs"])
def job_deliveries(job_id: str, tenant: TenantDep, store: StoreDep) -> DeliveryList:
    """The job's webhook messages, oldest first, each with every delivery attempt."""
    _own_job(store, tenant, job_id)
    return _list(store, job_id)


@router.post("/v1/jobs/{job_id}/deliveries/{n}/replay", status_code=status.HTTP_202_ACCEPTED, tags=["jobs"])
def replay_job_delivery(job_id: str, n: int, tenant: TenantDep, store: StoreDep) -> DeliveryPublic:
    """Send message `n` again now (same webhook-id and body, a fresh signature and timestamp)."""
    _own_job(store, tenant, job_id)
    return _replay(store, job_id, n)


@router.get("/v1/batches/{batch_id}/deliveries", tags=["batches"])
def batch_deliveries(batch_id: str, tenant: TenantDep, store: StoreDep) -> DeliveryList:
    _own_batch(store, tenant, batch_id)
    return _list(store, batch_id)


@router.post("/v1/batches/{batch_id}/deliveries/{n}/replay", status_code=status.HTTP_202_ACCEPTED,
             tags=["batches"])
def replay_batch_delivery(batch_id: str, n: int, tenant: TenantDep, store: StoreDep) -> DeliveryPublic:
    _own_batch(store, tenant, batch_id)
    return _replay(store, batch_id, n)
