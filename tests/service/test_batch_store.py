"""BatchStore and BatchRunner on a real redis-server, without Celery: counting final items, releasing them as
jobs, finishing batches (lipdub.service.batches, lipdub.service.batch_runner)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis

from lipdub.config import Settings
from lipdub.jobs import InputRef, JobOptions, JobSpec
from lipdub.service import chains, redis_keys
from lipdub.service.batch_runner import BatchRunner
from lipdub.service.batches import BatchStatus, BatchStore
from lipdub.service.manifest import Item
from lipdub.service.status import JobStatus, JobStore
from lipdub.service.storage import LocalStorage, keys

from .test_limits import redis_url  # noqa: F401 - the redis-server fixture


@pytest.fixture
def batches(redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> BatchStore:  # noqa: F811
    monkeypatch.setattr("lipdub.service.events.job_finished", lambda job_id: True)  # no broker here
    store = JobStore.from_settings(Settings(data_dir=tmp_path, redis_url=redis_url))
    store.r.flushdb()
    return BatchStore(store)


VIDEO, AUDIO = InputRef(asset_id="ast_v", sha256="a" * 64), InputRef(asset_id="ast_a", sha256="b" * 64)
OPTIONS = JobOptions.model_validate({})  # the settings' defaults


def running_batch(batches: BatchStore, items: int) -> tuple[str, list[str]]:
    """A batch in progress whose `items` items each run as a job; returns its id and the job ids."""
    state = batches.create("acme", "manifest.jsonl", None, {}, {})
    batches.r.hset(redis_keys.batch(state.id), mapping={"total": items, "expanded": 1})
    assert batches.move(state.id, BatchStatus.in_progress)
    jobs = []
    for line in range(1, items + 1):
        job = batches.jobs.create("acme", JobSpec(video=VIDEO, audio=AUDIO, options=OPTIONS), batch=state.id)
        batches.bind_job(state.id, "acme", Item(line, f"item-{line}", VIDEO, AUDIO, OPTIONS, {}), job.id)
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

    runner = BatchRunner(batches.jobs, LocalStorage(tmp_path / "storage"))
    put_file = LocalStorage.put_file
    failures = [TransientError(ErrorCode.storage_unavailable, "S3 upload: SlowDown")]

    def fails_once(self: LocalStorage, *args: Any, **kwargs: Any) -> None:
        if failures:
            raise failures.pop()
        put_file(self, *args, **kwargs)

    notified: list[str] = []
    monkeypatch.setattr(LocalStorage, "put_file", fails_once)
    monkeypatch.setattr(runner, "notify", notified.append)
    batch_id, (job_id,) = running_batch(batches, 1)
    assert batches.job_item_finished(job_id, batch_id, JobStatus.succeeded, None, "https://x/result.mp4")
    if cancel:
        assert batches.move(batch_id, BatchStatus.cancelling)
    with pytest.raises(TransientError):
        runner.settle(batch_id)
    runner.settle(batch_id)  # Celery's retry
    runner.settle(batch_id)  # a later settle (another item's event) changes nothing
    state = batches.get(batch_id)
    assert state is not None and state.status == (BatchStatus.cancelled if cancel else BatchStatus.completed)
    assert notified == [batch_id]
    assert (tmp_path / "storage" / keys.batch(batch_id, "output.jsonl")).is_file()


def test_an_error_while_releasing_an_item_loses_nothing(batches: BatchStore, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """pump takes the next ready item, creates its job and binds it: a Redis error (or a lost worker) in
    between must leave the item to the next pump, not drop it (the batch would never end)."""
    runner = BatchRunner(batches.jobs, LocalStorage(tmp_path / "storage"))
    started: list[str] = []
    monkeypatch.setattr(chains, "start_job", lambda job_id, priority: started.append(job_id))
    state = batches.create("acme", "manifest.jsonl", None, {}, {})
    items = [Item(line, f"item-{line}", VIDEO, AUDIO, OPTIONS, {}) for line in (1, 2, 3)]
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
        runner.pump("acme")
    assert runner.pump("acme") == 2  # Celery's retry: the item taken when the error struck, then the last one
    bound = batches.r.hgetall(redis_keys.batch_jobs(state.id))
    assert sorted(bound) == ["1", "2", "3"] and sorted(started) == sorted(bound.values())
    assert not batches.releasing("acme")


def test_an_item_left_releasing_by_a_canceled_batch_is_counted_canceled(batches: BatchStore, tmp_path: Path) -> None:
    runner = BatchRunner(batches.jobs, LocalStorage(tmp_path / "storage"))
    state = batches.create("acme", "manifest.jsonl", None, {}, {})
    item = Item(1, "item-1", VIDEO, AUDIO, OPTIONS, {})
    batches.accept_items(state.id, "acme", [item], prepared=lambda source: True)
    assert batches.next_ready("acme") is not None  # taken by a pump that then died
    assert batches.move(state.id, BatchStatus.cancelling)
    assert runner.pump("acme") == 0
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
    assert batches.manifest_tenant("bman_1") is None and not batches.r.exists(redis_keys.manifest_batches("bman_1"))


def test_a_batch_runs_from_its_manifest_to_its_output_files(batches: BatchStore, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole life of a batch through BatchRunner: one prep per unprepared source, items released no faster
    than the tenant's cap, every job's end counted, the output file written and the batch completed."""
    store = JobStore(batches.r, batches.settings.model_copy(update={"batch_running_per_tenant": 1}))
    runner = BatchRunner(store, LocalStorage(tmp_path / "storage"))
    started: list[str] = []
    monkeypatch.setattr(chains, "start_job", lambda job_id, priority: started.append(job_id))
    new, cached, audio = (store.assets.put("acme", c * 64, 10, {"video": {}, "audio": {}, "duration": 2.0})
                          for c in "abc")
    store.assets.set_prep_pointer(cached.sha256, {"files": ["track.json"], "summary": {}})
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps({"custom_id": f"item-{n}", "video": {"asset_id": video.id},
                                            "audio": {"asset_id": audio.id}}) + "\n"
                                for n, video in enumerate((new, cached, new), start=1)))
    runner.storage.put_file(keys.manifest("bman_1"), manifest)
    batch = batches.create("acme", keys.manifest("bman_1"), None, {}, {})
    preps: list[tuple[str, int]] = []

    runner.expand(batch.id, queue_prep=lambda b, source, item: preps.append((source, item.line)))
    assert preps == [(new.sha256, 1)]  # one prep for the two items of the unprepared source
    assert len(started) == 1  # the prepared source's item, alone under the cap of 1
    runner.source_ready(batch.id, new.sha256, {"verdict": "pass"})
    assert len(started) == 1  # its items wait for a free slot
    while len(started) < 3 or not store.is_final(started[-1]):
        job = store.get(started[-1])
        assert job is not None and job.batch == batch.id
        store.succeed(job.id, {"video": keys.result(job.id)}, {})
        ended = store.get(job.id)
        assert ended is not None
        runner.job_ended(ended)
        runner.job_ended(ended)  # a redelivered event counts nothing twice
    state = batches.get(batch.id)
    assert state is not None and state.status == BatchStatus.completed and state.counts["succeeded"] == 3
    rows = [json.loads(line) for line in (tmp_path / "storage" / keys.batch(batch.id, "output.jsonl")).read_text()
            .splitlines()]
    assert sorted(row["custom_id"] for row in rows) == ["item-1", "item-2", "item-3"]
    assert state.output_key == keys.batch(batch.id, "output.jsonl") and state.error_key is None
