"""lipdub.service.job_end on a real redis-server, without Celery: what follows a job's final state happens
once, however often the event comes (a redelivered `events.job_finished`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lipdub.config import Settings
from lipdub.jobs import InputRef, JobOptions, JobSpec
from lipdub.service import webhooks
from lipdub.service.job_end import job_ended
from lipdub.service.status import JobStore
from lipdub.service.storage import LocalStorage
from lipdub.service.webhooks import Deliveries

from .test_limits import redis_url  # noqa: F401 - the redis-server fixture

VIDEO, AUDIO = InputRef(asset_id="ast_v", sha256="a" * 64), InputRef(asset_id="ast_a", sha256="b" * 64)


@pytest.fixture
def store(redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> JobStore:  # noqa: F811
    monkeypatch.setattr("lipdub.service.events.job_finished", lambda job_id: True)  # no broker here
    store = JobStore.from_settings(Settings(data_dir=tmp_path, redis_url=redis_url, api_url="https://dub.example"))
    store.r.flushdb()
    return store


def test_a_final_job_gets_one_webhook_carrying_the_public_job(store: JobStore, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    scheduled: list[str] = []
    monkeypatch.setattr(webhooks, "schedule", lambda msg_id, run, n, due: scheduled.append(msg_id))
    spec = JobSpec(video=VIDEO, audio=AUDIO, options=JobOptions.model_validate({}),
                   webhook_url="https://hooks.example/lipdub", metadata={"episode": "7"})
    job = store.create("acme", spec)
    storage = LocalStorage(tmp_path / "objects")

    job_ended(job.id, store, storage)  # not final yet: nothing happens
    assert scheduled == []
    assert store.fail(job.id, "no_face", "no face in the video")
    job_ended(job.id, store, storage)
    job_ended(job.id, store, storage)  # redelivered

    (message,) = Deliveries(store.r, store.settings).for_subject(job.id)
    assert scheduled == [message.id] and message.type == "job.failed"
    assert message.url == "https://hooks.example/lipdub"
    body = json.loads(message.body)
    assert body["data"]["id"] == job.id and body["data"]["status"] == "failed"
    assert body["data"]["error"]["code"] == "no_face" and body["data"]["metadata"] == {"episode": "7"}


def test_a_job_without_a_webhook_or_batch_needs_nothing(store: JobStore, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(webhooks, "schedule", lambda *args: pytest.fail("nothing to deliver"))
    job = store.create("acme", JobSpec(video=VIDEO, audio=AUDIO, options=JobOptions.model_validate({})))
    assert store.cancel(job.id)
    job_ended(job.id, store, LocalStorage(tmp_path / "objects"))
    assert Deliveries(store.r, store.settings).for_subject(job.id) == []
