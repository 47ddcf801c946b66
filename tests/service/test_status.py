"""JobStore on a real redis-server: transitions, start counting, listing, idempotency, prep pointers."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from lipdub.config import Settings
from lipdub.jobs import InputRef, JobOptions, JobSpec, JobStatus, Stage
from lipdub.service import processes
from lipdub.service.stack import wait_ready
from lipdub.service.status import JobStore
from tests.service.conftest import free_port


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JobStore]:
    """A JobStore over its own redis-server, started with the command the stack uses."""
    port, folder = free_port(), tmp_path_factory.mktemp("redis")
    proc = processes.redis_server(port, str(folder))
    server = subprocess.Popen(proc.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    settings = Settings(redis_url=f"redis://127.0.0.1:{port}/0", data_dir=Path(folder))
    store = JobStore.from_settings(settings)
    wait_ready("redis-server", lambda: bool(store.r.ping()), 10, server)
    yield store
    server.terminate()
    server.wait(10)


SPEC = JobSpec(video=InputRef(asset_id="ast_v", sha256="a" * 64), audio=InputRef(asset_id="ast_a", sha256="b" * 64),
               options=JobOptions(sync_mode="bounce"))


@pytest.fixture(autouse=True)
def finished_events(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The seam to the webhooks worker (a Celery message on the configured broker), recorded instead."""
    sent: list[str] = []
    monkeypatch.setattr("lipdub.service.events.job_finished", sent.append)
    return sent


def test_transitions_and_final_states(store: JobStore, finished_events: list[str]) -> None:
    job = store.create("t1", SPEC)
    assert job.status == JobStatus.queued and job.progress == 0.0
    assert store.stage_started(job.id, Stage.prep) == 1
    store.stage_progress(job.id, Stage.prep, 0.5)
    running = store.get(job.id)
    assert running is not None and running.status == JobStatus.running and running.stage == Stage.prep
    assert running.progress == pytest.approx(0.35 * 0.5, abs=1e-3)
    assert store.cancel(job.id)
    # Final states never change: later writes from workers still running are refused.
    assert store.stage_started(job.id, Stage.render) is None
    assert not store.fail(job.id, "internal", "late failure")
    assert not store.succeed(job.id, {}, {})
    final = store.get(job.id)
    assert final is not None and final.status == JobStatus.canceled and final.error is None
    assert finished_events == [job.id]  # one event for the one transition that was applied
    assert store.metrics.status_counts()["canceled"] >= 1


def test_starts_are_counted_per_task(store: JobStore) -> None:
    """Redis keeps no redelivery count; the store does, so a task that kills its worker can be stopped."""
    job = store.create("t1", SPEC)
    counts = [store.stage_started(job.id, Stage.render, "render:3") for _ in range(3)]
    assert counts == [1, 2, 3]
    assert store.stage_started(job.id, Stage.render, "render:4") == 1
    store.stage_left(job.id, "render:4")  # returned or raised (e.g. to be retried): not a lost worker
    assert store.stage_started(job.id, Stage.render, "render:4") == 1
    state = store.get(job.id)
    assert state is not None and state.attempts == {"render:3": 3, "render:4": 1}


def test_chunks_count_once(store: JobStore) -> None:
    job = store.create("t1", SPEC)
    store.set_plan(job.id, n_frames=100, chunks=4, chunk_frames=25, rate="25")
    store.chunk_rendered(job.id, 0, passed_through=2)
    assert store.mark_chunk(job.id, 0) == 1
    # Redelivered after its part was stored: it renders nothing, counts once and keeps the recorded frames.
    assert store.mark_chunk(job.id, 0) == 1
    store.chunk_rendered(job.id, 3, passed_through=0)
    assert store.mark_chunk(job.id, 3) == 2
    state = store.get(job.id)
    assert state is not None and state.chunks_done == 2 and state.passed_through == 2


def test_list_is_per_tenant_newest_first_with_cursor(store: JobStore) -> None:
    ids = [store.create("lister", SPEC).id for _ in range(5)]
    store.create("someone-else", SPEC)
    page1, cursor = store.page("lister", limit=2)
    page2, cursor2 = store.page("lister", limit=2, cursor=cursor)
    page3, cursor3 = store.page("lister", limit=2, cursor=cursor2)
    seen = [j.id for j in page1 + page2 + page3]
    assert sorted(seen) == sorted(ids) and len(set(seen)) == 5
    assert cursor3 is None
    created = [j.created_at for j in page1 + page2 + page3]
    assert created == sorted(created, reverse=True)


def test_idempotency_claims(store: JobStore) -> None:
    assert store.idempotency.claim("t1", "k1", "body-a", "job_1") == ("job_1", True)
    assert store.idempotency.claim("t1", "k1", "body-a", "job_2") == ("job_1", False)
    with pytest.raises(ValueError):
        store.idempotency.claim("t1", "k1", "body-b", "job_3")
    assert store.idempotency.claim("t2", "k1", "body-b", "job_4") == ("job_4", True)  # keys are per tenant


def test_assets_and_prep_pointers(store: JobStore) -> None:
    asset = store.assets.put("t1", "c" * 64, 10, {"kind": "video"})
    assert store.assets.put("t1", "c" * 64, 10, {"kind": "video"}).id == asset.id  # content-addressed
    assert store.assets.get("t2", asset.id) is None  # another tenant's asset does not exist for you
    assert store.assets.prep_pointer("c" * 64) is None
    store.assets.set_prep_pointer("c" * 64, {"files": ["track.json"], "summary": {"n_frames": 3}})
    assert store.assets.prep_pointer("c" * 64) == {"files": ["track.json"], "summary": {"n_frames": 3}}
    # Other prep settings (like a new PREP_VERSION) ignore the artifacts: they would decide differently.
    other = JobStore(store.r, store.settings.model_copy(update={"min_face_coverage": 0.3}))
    assert other.assets.prep_pointer("c" * 64) is None


def test_a_stage_failing_on_a_redis_outage_is_retried_then_failed_as_retryable(
        store: JobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Redis holds the job state every stage writes: an outage is transient, like storage's (Celery retries the
    task), and when the retries run out the job says so instead of 'internal, not retryable'."""
    import redis

    from lipdub.service.worker import StageTask

    assert {redis.ConnectionError, redis.TimeoutError} <= set(StageTask.autoretry_for)
    monkeypatch.setattr("lipdub.service.worker.get_store", lambda: store)
    job = store.create("outage", SPEC)
    StageTask().on_failure(redis.ConnectionError("Error 111 connecting to redis:6379. Connection refused."),
                           "task-1", (job.id,), {}, None)
    failed = store.get(job.id)
    assert failed is not None and failed.status == JobStatus.failed and failed.error is not None
    assert (failed.error["code"], failed.error["retryable"]) == ("storage_unavailable", True)
    assert "Connection refused" in failed.error["message"]
