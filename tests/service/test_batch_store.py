"""BatchStore on a real redis-server: counting final items (lipdub.service.batches)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis

from lipdub import pipeline
from lipdub.config import Settings
from lipdub.service.batches import BatchStatus, BatchStore, Item
from lipdub.service.status import JobStatus, JobStore
from lipdub.service.storage import keys

from .test_limits import redis_url  # noqa: F401 - the redis-server fixture


@pytest.fixture
def batches(redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> BatchStore:  # noqa: F811
    monkeypatch.setattr("lipdub.service.events.job_finished", lambda job_id: True)  # no broker here
    store = JobStore.from_settings(Settings(data_dir=tmp_path, redis_url=redis_url))
    store.r.flushdb()
    return BatchStore(store)


def running_batch(batches: BatchStore, items: int) -> tuple[str, list[str]]:
    """A batch in progress whose `items` items each run as a job; returns its id and the job ids."""
    state = batches.create("acme", "manifest.jsonl", None, {}, {})
    batches.r.hset(f"batch:{state.id}", mapping={"total": items, "expanded": 1})
    assert batches.move(state.id, BatchStatus.in_progress)
    jobs = []
    for line in range(1, items + 1):
        job = batches.jobs.create("acme", {"options": {}}, batch=state.id)
        batches.bind_job(state.id, "acme", Item(line, f"item-{line}", {}, {}, {}, {}), job.id)
        jobs.append(job.id)
    return state.id, jobs


def test_a_job_item_counts_once_however_often_its_event_comes(batches: BatchStore) -> None:
    batch_id, (job_id,) = running_batch(batches, 1)
    assert batches.job_item_finished(job_id, batch_id, JobStatus.succeeded, None, "https://x/result.mp4")
    assert not batches.job_item_finished(job_id, batch_id, JobStatus.succeeded, None, "https://x/result.mp4")
    state = batches.get(batch_id)
    assert state is not None and state.done == 1
    assert [json.loads(row)["custom_id"] for row in batches.rows(batch_id, "out")] == ["item-1"]
    # An item that never had a job (its input failed to download) counts once by its line: the expansion that
    # failed it may be retried and fail it again.
    assert batches.item_finished(batch_id, 2, "item-2", None, "failed", {"code": "download_failed"}) == 2
    assert batches.item_finished(batch_id, 2, "item-2", None, "failed", {"code": "download_failed"}) is None
    assert len(list(batches.rows(batch_id, "err"))) == 1


def test_a_redis_error_while_recording_an_item_leaves_it_to_the_retry(batches: BatchStore,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker's task is retried on a Redis error; the retry must count the item, or the batch would wait
    for it forever."""
    batch_id, (job_id,) = running_batch(batches, 1)
    item_finished = BatchStore.item_finished

    def fails_once(self: BatchStore, *args: object, **kwargs: object) -> int | None:
        monkeypatch.setattr(BatchStore, "item_finished", item_finished)
        raise redis.ConnectionError("Connection reset by peer")

    monkeypatch.setattr(BatchStore, "item_finished", fails_once)
    with pytest.raises(redis.ConnectionError):
        batches.job_item_finished(job_id, batch_id, JobStatus.failed, {"code": "no_face"}, None)
    assert batches.job_item_finished(job_id, batch_id, JobStatus.failed, {"code": "no_face"}, None)
    state = batches.get(batch_id)
    assert state is not None and state.done == state.total == 1


def test_pages_list_every_batch_once_even_when_created_in_the_same_millisecond(
        batches: BatchStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("lipdub.service.batches.now", lambda: 1_800_000_000.123)
    made = {batches.create("acme", "manifest.jsonl", None, {}, {}).id for _ in range(5)}
    listed: list[str] = []
    cursor = None
    for _ in range(6):
        page, cursor = batches.page("acme", cursor, limit=2)
        listed += [b.id for b in page]
        if cursor is None:
            break
    assert sorted(listed) == sorted(made)


@pytest.mark.parametrize("cancel", [False, True])
def test_a_storage_error_while_finishing_a_batch_leaves_it_to_the_retry(
        batches: BatchStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cancel: bool) -> None:
    """Celery retries settle on a storage error; the retry must write the output files and end the batch (it
    stayed `finalizing` or `cancelling` forever), and the batch webhook goes out once."""
    from lipdub.errors import ErrorCode, TransientError
    from lipdub.service.storage import LocalStorage
    from lipdub_webhooks_worker import tasks

    storage = LocalStorage(tmp_path / "storage")
    put_file = LocalStorage.put_file
    failures = [TransientError(ErrorCode.storage_unavailable, "S3 upload: SlowDown")]

    def fails_once(self: LocalStorage, *args: Any, **kwargs: Any) -> None:
        if failures:
            raise failures.pop()
        put_file(self, *args, **kwargs)

    notified: list[str] = []
    monkeypatch.setattr(LocalStorage, "put_file", fails_once)
    monkeypatch.setattr(tasks, "get_store", lambda: batches.jobs)
    monkeypatch.setattr(tasks, "get_storage", lambda: storage)
    monkeypatch.setattr(tasks, "notify_batch", notified.append)
    batch_id, (job_id,) = running_batch(batches, 1)
    assert batches.job_item_finished(job_id, batch_id, JobStatus.succeeded, None, "https://x/result.mp4")
    if cancel:
        assert batches.move(batch_id, BatchStatus.cancelling)
    with pytest.raises(TransientError):
        tasks.settle(batch_id)
    tasks.settle(batch_id)  # Celery's retry
    tasks.settle(batch_id)  # a later settle (another item's event) changes nothing
    state = batches.get(batch_id)
    assert state is not None and state.status == (BatchStatus.cancelled if cancel else BatchStatus.completed)
    assert notified == [batch_id]
    assert (tmp_path / "storage" / keys.batch(batch_id, "output.jsonl")).is_file()


def test_an_error_while_releasing_an_item_loses_nothing(batches: BatchStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """pump takes the next ready item, creates its job and binds it: a Redis error (or a lost worker) in
    between must leave the item to the next pump, not drop it (the batch would never end)."""
    from lipdub_webhooks_worker import tasks

    started: list[str] = []
    monkeypatch.setattr(tasks, "get_store", lambda: batches.jobs)
    monkeypatch.setattr(pipeline, "start_job", lambda job_id, priority: started.append(job_id))
    state = batches.create("acme", "manifest.jsonl", None, {}, {})
    items = [Item(line, f"item-{line}", {"asset_id": "ast_v", "sha256": "a" * 64},
                  {"asset_id": "ast_a", "sha256": "b" * 64}, {}, {}) for line in (1, 2, 3)]
    batches.accept_items(state.id, "acme", items, prepared=lambda source: True)
    create = JobStore.create
    calls = {"n": 0}

    def fails_on_the_second(self: JobStore, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise redis.ConnectionError("Connection reset by peer")
        return create(self, *args, **kwargs)

    monkeypatch.setattr(JobStore, "create", fails_on_the_second)
    with pytest.raises(redis.ConnectionError):
        tasks.pump("acme")
    assert tasks.pump("acme") == 2  # Celery's retry: the item taken when the error struck, then the last one
    bound = batches.r.hgetall(f"batch:{state.id}:jobs")
    assert sorted(bound) == ["1", "2", "3"] and sorted(started) == sorted(bound.values())
    assert not batches.releasing("acme")


def test_an_item_left_releasing_by_a_canceled_batch_is_counted_canceled(
        batches: BatchStore, monkeypatch: pytest.MonkeyPatch) -> None:
    from lipdub_webhooks_worker import tasks

    monkeypatch.setattr(tasks, "get_store", lambda: batches.jobs)
    monkeypatch.setattr(tasks, "notify_batch", lambda batch_id: None)
    state = batches.create("acme", "manifest.jsonl", None, {}, {})
    item = Item(1, "item-1", {"asset_id": "ast_v", "sha256": "a" * 64}, {"asset_id": "ast_a", "sha256": "b" * 64},
                {}, {})
    batches.accept_items(state.id, "acme", [item], prepared=lambda source: True)
    assert batches.next_ready("acme") is not None  # taken by a pump that then died
    assert batches.move(state.id, BatchStatus.cancelling)
    assert tasks.pump("acme") == 0
    ended = batches.get(state.id)
    assert ended is not None and ended.done == 1 and ended.status == BatchStatus.cancelled
    assert [json.loads(row)["status"] for row in batches.rows(state.id, "err")] == ["canceled"]


def test_a_manifest_is_in_use_until_its_batches_have_read_it(batches: BatchStore) -> None:
    batches.put_manifest("bman_1", "acme", 2, 100)
    validating = batches.create("acme", keys.manifest("bman_1"), None, {}, {})
    batches.use_manifest("bman_1", validating.id)
    cancelled = batches.create("acme", keys.manifest("bman_1"), None, {}, {})
    batches.use_manifest("bman_1", cancelled.id)
    assert batches.move(cancelled.id, BatchStatus.cancelling) and batches.move(cancelled.id, BatchStatus.cancelled)
    assert batches.manifest_readers("bman_1") == [validating.id]
    batches.mark_expanded(validating.id)  # validated: its items are in Redis, the manifest is not read again
    assert batches.manifest_readers("bman_1") == []
    batches.forget_manifest("bman_1", "acme")
    assert batches.manifest_tenant("bman_1") is None and not batches.r.exists("bman:bman_1:batches")
