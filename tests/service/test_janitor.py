"""The janitor redoes hand-offs a dying process cut off and aborts expired presigned uploads
(lipdub.service.janitor), against a real redis-server and moto's S3 server. The end-to-end path, the
scheduler embedded in a real webhooks worker running a sweep, is in test_service.py."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from lipdub.config import Settings
from lipdub.jobs import InputRef, JobOptions, JobSpec, JobStatus, Stage
from lipdub.service import chains, events, janitor
from lipdub.service.indexes import now
from lipdub.service.redis_keys import OUTBOX
from lipdub.service.status import JobStore
from lipdub.service.storage import LocalStorage, S3Storage, Storage, keys

from .test_limits import redis_url  # noqa: F401 - the redis-server fixture
from .test_storage import s3_endpoint  # noqa: F401 - moto's S3 server

GRACE = 60
SPEC = JobSpec(video=InputRef(asset_id="ast_v"), audio=InputRef(asset_id="ast_a"), options=JobOptions(),
               priority="low")


@pytest.fixture
def store(redis_url: str, tmp_path: Path) -> JobStore:  # noqa: F811
    jobs = JobStore.from_settings(Settings(data_dir=tmp_path, redis_url=redis_url, handoff_grace_seconds=GRACE))
    jobs.r.flushdb()
    return jobs


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[object]]:
    """What reached the broker: pipelines queued, end events queued. `down` refuses both."""
    sent: dict[str, list[object]] = {"started": [], "finished": [], "down": []}

    def start_job(job_id: str, priority: int | None = None) -> None:
        if sent["down"]:
            raise ConnectionError("broker down")
        sent["started"].append((job_id, priority))

    def job_finished(job_id: str) -> bool:
        if sent["down"]:
            return False
        sent["finished"].append(job_id)
        return True

    monkeypatch.setattr(chains, "start_job", start_job)
    monkeypatch.setattr(events, "job_finished", job_finished)
    return sent


def overdue(store: JobStore) -> None:
    """Age every owed hand-off past the grace period (instead of sleeping through it)."""
    for member in store.r.zrange(OUTBOX, 0, -1):
        store.r.zadd(OUTBOX, {member: now() - GRACE - 1})


def sweep(store: JobStore) -> janitor.SweepReport:
    report = janitor.sweep(store, LocalStorage(store.settings.data_dir / "storage"))
    assert report is not None
    return report


def test_a_job_whose_creator_died_before_queueing_it_is_queued(store: JobStore, broker: dict) -> None:
    lost = store.create("acme", SPEC)  # the API (or a batch pump) died right after this
    queued = store.create("acme", SPEC)
    store.start(queued.id, 6)
    assert broker["started"] == [(queued.id, 6)] and store.r.zrange(OUTBOX, 0, -1) == [f"start:{lost.id}"]
    assert sweep(store) == janitor.SweepReport()  # within the grace period: its creator may still queue it
    overdue(store)
    assert sweep(store) == janitor.SweepReport(started=1)
    assert broker["started"] == [(queued.id, 6), (lost.id, 6)]  # at the job's own priority
    assert store.r.zcard(OUTBOX) == 0 and sweep(store) == janitor.SweepReport()
    assert store.metrics.janitor_stats() == {"started": 1} and store.handoffs_owed() == (0, None)


def test_a_job_that_started_or_ended_meanwhile_is_not_queued_again(store: JobStore, broker: dict) -> None:
    running, canceled = store.create("acme", SPEC), store.create("acme", SPEC)
    store.stage_started(running.id, Stage.probe)  # its chain was published; only the settling was lost
    store.cancel(canceled.id)  # ending a job settles its start and owes its end event, in one step
    assert set(store.r.zrange(OUTBOX, 0, -1)) == {f"start:{running.id}"}
    assert broker["finished"] == [canceled.id]
    overdue(store)
    assert sweep(store) == janitor.SweepReport(settled=1)
    assert broker["started"] == [] and store.r.zcard(OUTBOX) == 0


def test_an_end_event_the_broker_refused_is_sent_later(store: JobStore, broker: dict) -> None:
    job = store.create("acme", SPEC)
    store.start(job.id)
    broker["down"].append(True)
    assert store.fail(job.id, "no_face", "no face")  # stored, but its event could not be queued
    assert store.r.zrange(OUTBOX, 0, -1) == [f"finished:{job.id}"]
    owed, since = store.handoffs_owed()
    assert owed == 1 and since is not None and now() - since < 5
    overdue(store)
    assert sweep(store) == janitor.SweepReport()  # the broker is still down: still owed
    assert store.r.zrange(OUTBOX, 0, -1) == [f"finished:{job.id}"]
    broker["down"].clear()
    assert sweep(store) == janitor.SweepReport(announced=1)
    assert broker["finished"] == [job.id] and store.r.zcard(OUTBOX) == 0
    state = store.get(job.id)
    assert state is not None and state.status is JobStatus.failed


def test_hand_offs_of_expired_jobs_are_dropped(store: JobStore, broker: dict) -> None:
    job = store.create("acme", SPEC)
    store.r.delete(f"job:{job.id}")  # past job_ttl_seconds
    overdue(store)
    assert sweep(store) == janitor.SweepReport(settled=1) and broker["started"] == []


def test_one_sweep_at_a_time(store: JobStore, broker: dict) -> None:
    store.create("acme", SPEC)
    overdue(store)
    lock = store.r.lock("janitor", timeout=30)
    assert lock.acquire()
    assert janitor.sweep(store, LocalStorage(store.settings.data_dir / "storage")) is None
    lock.release()
    assert sweep(store).started == 1


def test_expired_presigned_uploads_are_aborted(store: JobStore, s3_endpoint: str,  # noqa: F811
                                               tmp_path: Path) -> None:
    settings = Settings(storage="s3", s3_endpoint_url=s3_endpoint, s3_bucket="janitor",
                        s3_access_key_id="test", s3_secret_access_key="test")
    s3 = S3Storage(settings)
    s3.ensure_bucket()
    s3_ids = {}
    for upload_id in ("upl_abandoned", "upl_open", "upl_done"):
        s3_ids[upload_id], urls = s3.create_multipart(keys.upload(upload_id), 1000)
        assert httpx.put(urls[0], content=b"x" * 1000).status_code == 200
    store.assets.put_upload("upl_abandoned", "acme", s3_ids["upl_abandoned"], 1000, ttl=3600)
    store.assets.put_upload("upl_open", "acme", s3_ids["upl_open"], 1000, ttl=3600)
    store.assets.put_upload("upl_done", "acme", s3_ids["upl_done"], 1000, ttl=3600)
    store.assets.delete_upload("upl_done")  # completed (or given up) through the API: nothing left to abort
    store.r.zadd("uploads:open", {f"upl_abandoned:{s3_ids['upl_abandoned']}": now() - 1})

    def open_uploads() -> set[str]:
        listed = s3.client.list_multipart_uploads(Bucket="janitor").get("Uploads", [])
        return {u["UploadId"] for u in listed}

    assert open_uploads() == set(s3_ids.values())
    report = janitor.sweep(store, s3)
    assert report is not None and report.uploads_aborted == 1
    assert open_uploads() == {s3_ids["upl_open"], s3_ids["upl_done"]}  # upl_done: moto, never completed here
    assert store.r.zrange("uploads:open", 0, -1) == [f"upl_open:{s3_ids['upl_open']}"]
    s3.abort_multipart(keys.upload("upl_abandoned"), s3_ids["upl_abandoned"])  # aborting twice is harmless


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_an_expired_job_loses_its_files_and_index_entries(backend: str, store: JobStore, broker: dict,
                                                          request: pytest.FixtureRequest, tmp_path: Path) -> None:
    if backend == "s3":
        storage: Storage = S3Storage(Settings(storage="s3", s3_endpoint_url=request.getfixturevalue("s3_endpoint"),
                                              s3_bucket="retention", s3_access_key_id="test",
                                              s3_secret_access_key="test"))
    else:
        storage = LocalStorage(tmp_path / "storage")
    storage.ensure_bucket()
    old, young = store.create("acme", SPEC), store.create("acme", SPEC)
    for job in (old, young):
        store.start(job.id)
        assert store.succeed(job.id, {"video": keys.result(job.id)}, {})
    files = tmp_path / "file.bin"
    files.write_bytes(b"x" * 100)
    for name in (keys.result(old.id), keys.mouth(old.id), keys.part(old.id, 0), keys.result(young.id)):
        storage.put_file(name, files)
    store.r.zadd("jobs:expiring", {f"{old.id}:acme": now() - 1})  # instead of waiting job_ttl_seconds
    report = janitor.sweep(store, storage)
    assert report is not None and (report.jobs_purged, report.files_deleted) == (1, 3)
    assert not storage.exists(keys.result(old.id)) and not storage.exists(keys.part(old.id, 0))
    assert storage.exists(keys.result(young.id))
    assert store.get(old.id) is None and store.get(young.id) is not None
    assert store.metrics.status_counts()["succeeded"] == 1  # /metrics counts only jobs that still exist
    assert [j.id for j in store.page("acme")[0]] == [young.id]
    assert store.r.zrange("jobs:expiring", 0, -1) == [f"{young.id}:acme"]


def test_a_broker_outage_does_not_stall_retention(store: JobStore, broker: dict, tmp_path: Path) -> None:
    owed = store.create("acme", SPEC)  # its start can't be queued while the broker is down
    old = store.create("acme", SPEC)
    store.start(old.id)
    store.r.zadd("jobs:expiring", {f"{old.id}:acme": now() - 1})
    overdue(store)
    broker["down"].append(True)
    report = sweep(store)
    assert report.jobs_purged == 1 and store.get(old.id) is None
    assert store.r.zscore(OUTBOX, f"start:{owed.id}") is not None  # still owed, for the next sweep


def test_assets_no_job_used_for_the_ttl_are_deleted_with_their_prep(store: JobStore, broker: dict,
                                                                   tmp_path: Path) -> None:
    from lipdub.service.redis_keys import ASSETS_USED

    storage = LocalStorage(tmp_path / "storage")
    src = tmp_path / "bytes"
    src.write_bytes(b"media")
    shas = {name: name[0] * 64 for name in ("old", "fresh", "busy")}
    assets = {name: store.assets.put("acme", sha, 5, {"kind": "video"}) for name, sha in shas.items()}
    for sha in shas.values():
        storage.put_file(keys.asset(sha), src)
        storage.put_file(keys.prep(sha, "3x", "track.json"), src)
    busy = store.create("acme", SPEC.model_copy(update={"video": InputRef(asset_id=assets["busy"].id,
                                                                          sha256=shas["busy"])}))
    for name in ("old", "busy"):  # last used (uploaded, named by a job) longer ago than the TTL
        store.r.zadd(ASSETS_USED, {assets[name].id: now() - 2000})
    assert sweep(store).assets_deleted == 0  # the default keeps assets until they are deleted
    kept = JobStore.from_settings(store.settings.model_copy(update={"asset_ttl_seconds": 1000}))
    assert janitor.sweep(kept, storage) == janitor.SweepReport(assets_deleted=1)
    assert store.assets.get("acme", assets["old"].id) is None
    assert not storage.exists(keys.asset(shas["old"])) and not storage.exists(keys.prep(shas["old"], "3x", "track.json"))
    assert all(storage.exists(keys.asset(shas[n])) for n in ("fresh", "busy"))  # recent; in use by a queued job
    store.cancel(busy.id)
    assert janitor.sweep(kept, storage) == janitor.SweepReport(assets_deleted=1)
    assert not storage.exists(keys.asset(shas["busy"])) and storage.exists(keys.asset(shas["fresh"]))
    assert store.metrics.janitor_stats() == {"assets_deleted": 2}
    store.r.zadd(ASSETS_USED, {assets["fresh"].id: now() - 2000})
    ended = store.create("acme", SPEC.model_copy(update={"video": InputRef(asset_id=assets["fresh"].id)}))  # uses it
    store.cancel(ended.id)
    assert janitor.sweep(kept, storage) == janitor.SweepReport()
    assert storage.exists(keys.asset(shas["fresh"]))


def test_a_batchs_files_and_an_uploaded_manifest_go_when_their_records_expire(store: JobStore, tmp_path: Path) -> None:
    from lipdub.service.batches import BatchStore
    from lipdub.service.redis_keys import BATCHES_EXPIRING, MANIFESTS_EXPIRING

    storage = LocalStorage(tmp_path / "storage")
    src = tmp_path / "rows.jsonl"
    src.write_text('{"custom_id": "de"}\n')
    batches = BatchStore(store)
    old, recent = (batches.create("acme", keys.batch(f"batch_{n}", "input.jsonl"), None, {}, {},
                                  batch_id=f"batch_{n}") for n in ("old", "recent"))
    batches.put_manifest("bman_old", "acme", 1, 20)
    batches.put_manifest("bman_recent", "acme", 1, 20)
    for key in (keys.batch(old.id, "input.jsonl"), keys.batch(old.id, "output.jsonl"),
                keys.batch(recent.id, "output.jsonl"), keys.manifest("bman_old"), keys.manifest("bman_recent")):
        storage.put_file(key, src)
    # The records of "old" reached their TTL: Redis dropped them, and their retention entries are due.
    store.r.delete(f"batch:{old.id}", "bman:bman_old")
    store.r.zadd(BATCHES_EXPIRING, {f"{old.id}:acme": now() - 1})
    store.r.zadd(MANIFESTS_EXPIRING, {"bman_old:acme": now() - 1})
    report = janitor.sweep(store, storage)
    assert report == janitor.SweepReport(batches_purged=1, manifests_deleted=1, files_deleted=2)
    assert not storage.exists(keys.batch(old.id, "output.jsonl")) and not storage.exists(keys.manifest("bman_old"))
    assert storage.exists(keys.batch(recent.id, "output.jsonl")) and storage.exists(keys.manifest("bman_recent"))
    assert [b.id for b in batches.page("acme")[0]] == [recent.id]
    assert store.r.zrange("tenant:acme:batches", 0, -1) == [recent.id]
    assert janitor.sweep(store, storage) == janitor.SweepReport()


def test_a_prep_still_running_when_its_video_is_deleted_keeps_nothing(store: JobStore, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch's or a preflight's prep is no job, so DELETE /v1/assets does not wait for it: what it makes
    after the deletion must not outlive the video (face tracks are personal data)."""
    from types import SimpleNamespace

    from lipdub.errors import ErrorCode, InputError
    from lipdub.service import prepcache
    from lipdub.service.inputs import delete_asset

    storage = LocalStorage(tmp_path / "storage")
    sha = "d" * 64
    (tmp_path / "video").write_bytes(b"video")
    storage.put_file(keys.asset(sha), tmp_path / "video")
    asset = store.assets.put("acme", sha, 5, {"kind": "video"})

    def prepare_on_host(video: Path, *_: object, **__: object) -> SimpleNamespace:
        delete_asset(asset, store, storage)  # the tenant deletes the video while its prep runs
        track = tmp_path / "track"
        track.mkdir()
        (track / "track.json").write_text("{}")
        return SimpleNamespace(dir=track, summary=None)

    monkeypatch.setattr(prepcache, "prepare_on_host", prepare_on_host)
    with pytest.raises(InputError) as refused:
        prepcache.prepare_cached(sha, store, storage, store.settings, tmp_path / "scratch")
    assert refused.value.code == ErrorCode.asset_deleted
    assert not list((tmp_path / "storage" / "prep").glob(f"{sha}*")) and store.assets.prep_pointer(sha) is None
    assert not storage.exists(keys.asset(sha))


def test_a_deleted_batch_goes_with_its_jobs_files_and_messages(store: JobStore, broker: dict, tmp_path: Path) -> None:
    from lipdub.service.batches import BatchStatus, BatchStore
    from lipdub.service.manifest import Item
    from lipdub.service.webhooks import Deliveries

    storage = LocalStorage(tmp_path / "storage")
    src = tmp_path / "bytes"
    src.write_bytes(b"x" * 10)
    batches, messages = BatchStore(store), Deliveries(store.r, store.settings)
    store.idempotency.claim("acme", "batch:catalog-1", "body", "batch_del")
    doomed = batches.create("acme", keys.batch("batch_del", "input.jsonl"), None, {}, {}, batch_id="batch_del",
                            idempotency_key="batch:catalog-1")
    kept = batches.create("acme", keys.batch("batch_kept", "input.jsonl"), None, {}, {}, batch_id="batch_kept")
    jobs = {}
    for batch in (doomed, kept):
        for line in (1, 2, 3):
            job = store.create("acme", SPEC, batch=batch.id)
            batches.bind_job(batch.id, "acme", Item(line, f"c{line}", SPEC.video, SPEC.audio, SPEC.options, {}),
                             job.id)
            store.start(job.id)
            storage.put_file(keys.result(job.id), src)
            messages.create("acme", job.id, "job.succeeded", "https://hooks.example.com", {"id": job.id})
            jobs[(batch.id, line)] = job.id
        storage.put_file(keys.batch(batch.id, "output.jsonl"), src)
        messages.create("acme", batch.id, "batch.completed", "https://hooks.example.com", {"id": batch.id})
    for (batch_id, line), job_id in jobs.items():
        if (batch_id, line) != (doomed.id, 3):  # one job of the doomed batch is still running (a lost event)
            assert store.succeed(job_id, {"video": keys.result(job_id)}, {})
    for batch in (doomed, kept):
        assert batches.move(batch.id, BatchStatus.in_progress) and batches.move(batch.id, BatchStatus.finalizing)
        assert batches.move(batch.id, BatchStatus.completed)

    batches.request_deletion(batches.get(doomed.id))
    assert batches.get(doomed.id) is None and [b.id for b in batches.page("acme")[0]] == [kept.id]
    # The Idempotency-Key that made it is free at once: repeating the request makes a new batch.
    assert store.idempotency.claim("acme", "batch:catalog-1", "body", "batch_new") == ("batch_new", True)

    first = sweep_with(store, storage)
    running = jobs[(doomed.id, 3)]
    assert (first.jobs_purged, first.batches_deleted) == (2, 0)  # the running job is canceled, not deleted
    assert store.get(running) is not None and store.get(running).status == JobStatus.canceled
    second = sweep_with(store, storage)
    assert (second.jobs_purged, second.batches_deleted, second.files_deleted) == (1, 1, 2)
    for (batch_id, _), job_id in jobs.items():
        gone = batch_id == doomed.id
        assert (store.get(job_id) is None) == gone and storage.exists(keys.result(job_id)) != gone
        assert (messages.for_subject(job_id) == []) == gone
    assert not storage.exists(keys.batch(doomed.id, "output.jsonl")) and messages.for_subject(doomed.id) == []
    assert storage.exists(keys.batch(kept.id, "output.jsonl")) and len(messages.for_subject(kept.id)) == 1
    assert store.r.keys(f"*{doomed.id}*") == []  # no record, list, index entry or message left
    assert store.r.keys("wh:msg:*") and all(messages.get(k.split(":")[2]) for k in store.r.keys("wh:msg:*")
                                             if not k.endswith(":attempts"))
    assert sweep_with(store, storage) == janitor.SweepReport()


def test_a_big_batch_is_deleted_over_several_sweeps(store: JobStore, broker: dict, tmp_path: Path) -> None:
    from lipdub.service.batches import BatchStatus, BatchStore
    from lipdub.service.manifest import Item

    storage = LocalStorage(tmp_path / "storage")
    batches = BatchStore(store)
    batch = batches.create("acme", keys.batch("batch_big", "input.jsonl"), None, {}, {}, batch_id="batch_big")
    for line in range(1, 1001):
        job = store.create("acme", SPEC, batch=batch.id)
        batches.bind_job(batch.id, "acme", Item(line, f"c{line}", SPEC.video, SPEC.audio, SPEC.options, {}), job.id)
        store.cancel(job.id)
    assert batches.move(batch.id, BatchStatus.cancelling) and batches.move(batch.id, BatchStatus.cancelled)
    batches.request_deletion(batches.get(batch.id))
    # A sweep spends at most half the sweep interval on deletions: here none, so one page per sweep.
    hasty = JobStore.from_settings(store.settings.model_copy(update={"janitor_seconds": 1e-9}))
    purged = [sweep_with(hasty, storage).jobs_purged for _ in range(3)]
    assert purged[0] > 0 and sum(purged) < 1000 and batches.deletions() == [(batch.id, "acme")]
    assert sweep_with(store, storage).batches_deleted == 1
    assert store.r.keys("job:*") == [] and batches.deletions() == []


def sweep_with(store: JobStore, storage: Storage) -> janitor.SweepReport:
    report = janitor.sweep(store, storage)
    assert report is not None
    return report


def test_a_delivery_in_flight_does_not_bring_a_deleted_message_back(store: JobStore) -> None:
    from lipdub.service.webhooks import Deliveries

    messages = Deliveries(store.r, store.settings)
    message, _ = messages.create("acme", "job_1", "job.succeeded", "https://hooks.example.com", {"id": "job_1"})
    assert messages.log_attempt(message.id, {"delivered": False}) == 1
    messages.forget("job_1")  # the job is deleted while its next attempt runs
    assert messages.log_attempt(message.id, {"delivered": True}) == 0
    messages.set_state(message.id, status="delivered")
    assert messages.start_run(message.id) == 0
    assert store.r.keys("wh:*") == []


def test_workers_delete_their_local_prep_of_deleted_videos(store: JobStore, tmp_path: Path) -> None:
    from lipdub.prep.cache import cache_root
    from lipdub.service.prepcache import purge_deleted

    kept, deleted = "a" * 64, "b" * 64
    store.assets.put("acme", kept, 5, {"kind": "video"})
    root = cache_root(store.settings)
    names = [f"{kept}-v4.x", f"{kept}-0123456789ab-v4.x", f"{deleted}-v4.x", f"{deleted}-v3.y",
             f".tmp-{deleted}-v4.x-1234"]  # the last is still being written: not the sweep's to touch
    for name in names:
        (root / name).mkdir(parents=True)
        (root / name / "track.json").write_text("{}")
    gone = purge_deleted(store, store.settings)
    assert sorted(e.name for e in gone) == sorted(names[2:4])
    assert sorted(e.name for e in root.iterdir()) == sorted([*names[:2], names[4]])
    assert purge_deleted(store, store.settings) == []


def test_a_task_ending_after_its_job_was_deleted_leaves_nothing(store: JobStore, broker: dict,
                                                                tmp_path: Path) -> None:
    job = store.create("acme", SPEC)
    assert store.stage_started(job.id, Stage.render, "render:0") == 1
    store.cancel(job.id)  # canceled while its render chunk runs; then deleted at once
    janitor.delete_job(job.id, "acme", store, LocalStorage(tmp_path / "storage"))
    store.stage_stopped(job.id, Stage.render)  # the chunk's task ends afterwards
    store.stage_left(job.id, "render:0")
    store.set_delivery(job.id, {"status": "delivered"})
    assert store.r.keys(f"*{job.id}*") == []
