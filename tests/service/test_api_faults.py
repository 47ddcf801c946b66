"""The API in-process (FastAPI's TestClient) over a real redis-server and local storage: malformed requests,
and the queue's outage injected where a real one strikes (`chains.start_job`, `events.expand_batch`) to
see what a client that follows our error answers gets on its retry."""

from __future__ import annotations

import hashlib
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from kombu.exceptions import OperationalError

from lipdub.config import get_settings
from lipdub.jobs import InputRef, JobOptions, JobSpec
from lipdub.service.auth import ApiKeys
from lipdub.service.status import JobStore, get_store
from lipdub.service.storage import get_storage

from .test_limits import redis_url  # noqa: F401 - the redis-server fixture


@pytest.fixture
def api(redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:  # noqa: F811
    monkeypatch.setenv("LIPDUB_REDIS_URL", redis_url)
    monkeypatch.setenv("LIPDUB_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("LIPDUB_STORAGE", "local")
    get_settings.cache_clear()
    get_storage.cache_clear()  # the local storage under this test's tmp_path
    get_store().r.flushdb()
    from lipdub_api.main import app

    with TestClient(app, raise_server_exceptions=False) as client:
        client.headers["Authorization"] = f"Bearer {ApiKeys(get_store().r).create('acme')}"
        yield client
    get_settings.cache_clear()
    get_storage.cache_clear()


def job_body(store: JobStore) -> dict[str, Any]:
    """A job on two assets already stored (their probe results as the upload would record them)."""
    def asset(media: dict[str, Any]) -> dict[str, str]:
        stored = store.assets.put("acme", hashlib.sha256(uuid.uuid4().bytes).hexdigest(), 1000, media)
        return {"asset_id": stored.id}

    return {"video": asset({"kind": "video", "duration": 3.0, "video": {}, "audio": {}}),
            "audio": asset({"kind": "audio", "duration": 3.0, "audio": {}})}


def test_a_job_refused_while_the_queue_is_down_is_made_anew_on_retry(api: TestClient,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from lipdub.service import chains

    def queue_down(job_id: str, priority: int) -> None:
        raise OperationalError("Error 111 connecting to the broker. Connection refused.")

    queued: list[str] = []
    body, headers = job_body(get_store()), {"Idempotency-Key": "order-42"}
    monkeypatch.setattr(chains, "start_job", queue_down)
    refused = api.post("/v1/jobs", json=body, headers=headers)
    assert refused.status_code == 503 and refused.headers["retry-after"] == "5"
    assert refused.json()["error"] == {"code": "service_unavailable", "retryable": True,
                                       "message": "the job queue is unavailable; retry later"}
    monkeypatch.setattr(chains, "start_job", lambda job_id, priority: queued.append(job_id))
    retried = api.post("/v1/jobs", json=body, headers=headers)
    assert retried.status_code == 202 and retried.json()["status"] == "queued", retried.text
    assert queued == [retried.json()["id"]]
    again = api.post("/v1/jobs", json=body, headers=headers)  # from now on the key names the queued job
    assert again.status_code == 202 and again.json()["id"] == retried.json()["id"] and queued == queued[:1]


def test_a_refused_batch_leaves_its_idempotency_key_free(api: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from lipdub.service import events

    headers = {"Idempotency-Key": "catalog-7"}
    for _ in range(2):  # the same mistake twice: the same answer, never "still being processed"
        missing = api.post("/v1/batches", json={"manifest_id": "bman_missing"}, headers=headers)
        assert missing.status_code == 422 and missing.json()["error"]["code"] == "manifest_not_found"
    items = {"items": [{"custom_id": "de", **job_body(get_store())}]}

    def queue_down(batch_id: str) -> None:
        raise OperationalError("Error 111 connecting to the broker. Connection refused.")

    monkeypatch.setattr(events, "expand_batch", queue_down)
    refused = api.post("/v1/batches", json=items, headers=headers)
    assert refused.status_code == 503 and refused.json()["error"]["retryable"] is True
    expanded: list[str] = []
    monkeypatch.setattr(events, "expand_batch", expanded.append)
    accepted = api.post("/v1/batches", json=items, headers=headers)
    assert accepted.status_code == 202 and accepted.json()["status"] == "validating", accepted.text
    assert expanded == [accepted.json()["id"]]


@pytest.mark.parametrize("content_type, body", [
    ("multipart/form-data", b"abc"),  # no boundary
    ("multipart/form-data; boundary=XYZ", b"this is not multipart at all\r\n"),
])
def test_a_malformed_upload_is_a_400(api: TestClient, content_type: str, body: bytes) -> None:
    answer = api.post("/v1/assets", content=body, headers={"content-type": content_type})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "invalid_request" and "multipart" in answer.json()["error"]["message"]


@pytest.mark.parametrize("path, cursor", [("/v1/jobs", "nan:job_x"), ("/v1/jobs", "inf:job_x"),
                                          ("/v1/jobs", "12.5"), ("/v1/batches", "nan:batch_x"),
                                          ("/v1/batches", "1_000")])
def test_a_malformed_list_cursor_is_a_422(api: TestClient, path: str, cursor: str) -> None:
    answer = api.get(path, params={"cursor": cursor})
    assert answer.status_code == 422 and answer.json()["error"]["code"] == "invalid_request", answer.text


def test_deleting_a_job_removes_its_record_and_files(api: TestClient, monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    from lipdub.service import chains
    from lipdub.service.storage import keys

    monkeypatch.setattr(chains, "start_job", lambda job_id, priority: None)
    store = get_store()
    body, headers = job_body(store), {"Idempotency-Key": "spot-17"}
    created = api.post("/v1/jobs", json=body, headers=headers)
    assert created.status_code == 202, created.text
    job_id = created.json()["id"]
    refused = api.delete(f"/v1/jobs/{job_id}")  # still queued
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "job_not_deletable"
    assert store.succeed(job_id, {"video": keys.result(job_id)}, {})
    files = tmp_path / "storage" / "jobs" / job_id
    for name in ("result.mp4", "audio/mouth.npz", "render/part-0000.mp4"):
        (files / name).parent.mkdir(parents=True, exist_ok=True)
        (files / name).write_bytes(b"x")
    assert api.delete(f"/v1/jobs/{job_id}").status_code == 204
    assert not files.exists()
    assert api.get(f"/v1/jobs/{job_id}").status_code == 404
    assert api.get(f"/v1/jobs/{job_id}/result").status_code == 404
    assert api.delete(f"/v1/jobs/{job_id}").status_code == 404
    assert job_id not in [j["id"] for j in api.get("/v1/jobs").json()["data"]]
    assert store.metrics.status_counts()["succeeded"] == 0
    again = api.post("/v1/jobs", json=body, headers=headers)  # its key is free again: a new job
    assert again.status_code == 202 and again.json()["id"] != job_id


def test_a_batch_job_is_deleted_only_once_its_batch_ended(api: TestClient) -> None:
    from lipdub.service.batches import BatchStatus, BatchStore

    store = get_store()
    batches = BatchStore(store)
    batch = batches.create("acme", "manifest.jsonl", None, {}, {})
    assert batches.move(batch.id, BatchStatus.in_progress)
    job = store.create("acme", JobSpec(video=InputRef(asset_id="ast_v"), audio=InputRef(asset_id="ast_a"),
                                       options=JobOptions()), batch=batch.id)
    store.cancel(job.id)
    refused = api.delete(f"/v1/jobs/{job.id}")
    assert refused.status_code == 409 and batch.id in refused.json()["error"]["message"]
    assert batches.move(batch.id, BatchStatus.cancelling) and batches.move(batch.id, BatchStatus.cancelled)
    assert api.delete(f"/v1/jobs/{job.id}").status_code == 204


def tone(path: Path, hz: int) -> Path:
    """A 1-s WAV made by ffmpeg: a real file for the upload's probe; `hz` sets which bytes it is."""
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"sine=frequency={hz}:duration=1",
                    str(path)], check=True)
    return path


def upload(api: TestClient, path: Path, key: str | None = None) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    answer = api.post("/v1/assets", files={"file": (path.name, path.read_bytes())}, headers=headers)
    assert answer.status_code == 201, answer.text
    return answer.json()


def test_deleting_an_asset_removes_its_bytes_and_what_prep_made_of_them(api: TestClient, tmp_path: Path) -> None:
    from lipdub.service.storage import keys

    store = get_store()
    asset = upload(api, tone(tmp_path / "a.wav", 440))
    kept = upload(api, tone(tmp_path / "b.wav", 880))
    storage = tmp_path / "storage"
    for sha, source in ((asset["sha256"], asset["sha256"]), (asset["sha256"], f"{asset['sha256']}-0123456789ab"),
                        (kept["sha256"], kept["sha256"])):
        track = storage / keys.prep(source, "3x", "track.json")
        track.parent.mkdir(parents=True, exist_ok=True)
        track.write_text("{}")
        store.assets.set_prep_pointer(source, {"files": ["track.json"], "summary": {}})
    assert api.delete(f"/v1/assets/{asset['id']}").status_code == 204
    assert api.get(f"/v1/assets/{asset['id']}").status_code == 404
    assert not (storage / keys.asset(asset["sha256"])).exists()
    assert not list((storage / "prep").glob(f"{asset['sha256']}*"))
    assert not list(store.r.scan_iter(f"prep:{asset['sha256']}*"))
    assert (storage / keys.asset(kept["sha256"])).exists() and store.assets.prep_pointer(kept["sha256"]) is not None
    assert len(list((storage / "prep").glob(f"{kept['sha256']}*"))) == 1
    assert api.delete(f"/v1/assets/{asset['id']}").status_code == 404
    again = upload(api, tmp_path / "a.wav")  # the same bytes can be uploaded again: stored anew
    assert again["id"] == asset["id"] and (storage / keys.asset(asset["sha256"])).exists()


def test_bytes_two_tenants_uploaded_stay_until_both_deleted_them(api: TestClient, tmp_path: Path) -> None:
    from lipdub.service.storage import keys

    path, stored = tone(tmp_path / "a.wav", 440), tmp_path / "storage"
    mine = upload(api, path)
    theirs = upload(api, path, key=ApiKeys(get_store().r).create("globex"))
    assert mine["id"] != theirs["id"] and mine["sha256"] == theirs["sha256"]
    assert api.delete(f"/v1/assets/{theirs['id']}").status_code == 404  # another tenant's asset
    assert api.delete(f"/v1/assets/{mine['id']}").status_code == 204
    assert (stored / keys.asset(mine["sha256"])).exists()  # globex still holds them
    assert get_store().assets.get("globex", theirs["id"]) is not None
    assert api.delete(f"/v1/assets/{theirs['id']}",
                      headers={"Authorization": f"Bearer {ApiKeys(get_store().r).create('globex')}"}
                      ).status_code == 204
    assert not (stored / keys.asset(mine["sha256"])).exists()


def test_an_asset_a_queued_job_uses_is_not_deleted(api: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from lipdub.service import chains

    monkeypatch.setattr(chains, "start_job", lambda job_id, priority: None)
    body = job_body(get_store())
    job_id = api.post("/v1/jobs", json=body).json()["id"]
    refused = api.delete(f"/v1/assets/{body['audio']['asset_id']}")
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "asset_in_use" and job_id in refused.json()["error"]["message"]
    assert api.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
    assert api.delete(f"/v1/assets/{body['audio']['asset_id']}").status_code == 204


def test_assets_are_listed_newest_first_per_tenant_and_deleted_ones_leave(api: TestClient, tmp_path: Path) -> None:
    uploaded = [upload(api, tone(tmp_path / f"{hz}.wav", hz)) for hz in (300, 400, 500)]
    upload(api, tmp_path / "300.wav", key=ApiKeys(get_store().r).create("globex"))  # not acme's
    first = api.get("/v1/assets", params={"limit": 2}).json()
    assert [a["id"] for a in first["data"]] == [uploaded[2]["id"], uploaded[1]["id"]]
    rest = api.get("/v1/assets", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert [a["id"] for a in rest["data"]] == [uploaded[0]["id"]] and rest["next_cursor"] is None
    assert api.delete(f"/v1/assets/{uploaded[1]['id']}").status_code == 204
    listed = api.get("/v1/assets").json()["data"]
    assert [a["id"] for a in listed] == [uploaded[2]["id"], uploaded[0]["id"]]
    assert listed[0]["media"]["kind"] == "audio" and listed[0]["size"] == (tmp_path / "500.wav").stat().st_size
    assert api.get("/v1/assets", params={"cursor": "nan:ast_x"}).status_code == 422


def test_dub_ranges_are_checked_when_the_job_is_made(api: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from lipdub.service import chains

    monkeypatch.setattr(chains, "start_job", lambda job_id, priority: None)
    body = job_body(get_store())
    overlapping = api.post("/v1/jobs", json={**body, "options": {"ranges": [[0, 5], [4, 6]]}})
    assert overlapping.status_code == 422 and overlapping.json()["error"]["code"] == "invalid_request"
    assert "range 2 (4-6 s) starts before range 1 ends" in overlapping.text
    assert api.post("/v1/jobs", json={**body, "options": {"ranges": [[3, 1]]}}).status_code == 422
    made = api.post("/v1/jobs", json={**body, "options": {"ranges": [[0.5, 2], [4, 6.25]]}})
    assert made.status_code == 202, made.text
    stored = get_store().get(made.json()["id"])
    assert stored is not None and stored.spec.options.ranges == ((0.5, 2.0), (4.0, 6.25))
