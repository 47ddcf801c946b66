"""The distributed service end to end: HTTP API → Celery chains on Redis → workers → S3 → result."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from lipdub.service.redis_keys import OUTBOX
from lipdub.service.stack import StackConfig
from lipdub.service.status import JobStore
from tests.service.conftest import JOB_TIMEOUT, MAX_UPLOAD, create_job, upload, wait_for


@pytest.fixture(scope="module")
def assets(api: httpx.Client, service_media: dict[str, Path]) -> dict[str, dict[str, Any]]:
    return {name: upload(api, service_media[name])
            for name in ("face", "face2", "speech", "long_speech", "noface")}


@pytest.fixture(scope="module")
def finished_job(api: httpx.Client, assets: dict[str, dict[str, Any]]) -> dict[str, Any]:
    job = create_job(api, assets["face"], assets["speech"], metadata={"title": "e2e"})
    assert job["status"] == "queued"
    return wait_for(api, job["id"])


def test_assets_are_content_addressed(api: httpx.Client, assets: dict[str, dict[str, Any]],
                                      service_media: dict[str, Path]) -> None:
    face = assets["face"]
    assert face["sha256"] == hashlib.sha256(service_media["face"].read_bytes()).hexdigest()
    assert face["size"] == service_media["face"].stat().st_size
    assert face["media"]["kind"] == "video" and face["media"]["video"]["width"] == 512
    assert assets["speech"]["media"]["kind"] == "audio"
    again = upload(api, service_media["face"])
    assert again["id"] == face["id"]
    assert api.get(f"/v1/assets/{face['id']}").json()["sha256"] == face["sha256"]


def test_job_from_upload_to_downloaded_result(api: httpx.Client, finished_job: dict[str, Any],
                                              tmp_path: Path) -> None:
    job = finished_job
    assert job["status"] == "succeeded", job["error"]
    assert job["progress"] == 1.0 and job["error"] is None
    assert job["metadata"] == {"title": "e2e"}
    assert job["chunks"]["total"] >= 2 and job["chunks"]["done"] == job["chunks"]["total"]
    for stage in ("probe", "prep", "audio", "render", "mux", "finalize", "queued"):
        assert job["timings"][stage] >= 0, stage
    assert job["started_at"] <= job["finished_at"]

    response = api.get(f"/v1/jobs/{job['id']}/result")
    assert response.status_code == 307  # S3: a presigned URL, the bytes never pass through the API
    video = httpx.get(response.headers["location"], timeout=60)
    assert video.status_code == 200
    out = tmp_path / "result.mp4"
    out.write_bytes(video.content)
    streams = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_name",
                              "-show_entries", "format=duration", "-of", "csv=p=0", str(out)],
                             capture_output=True, text=True, check=True).stdout.split()
    assert "h264" in streams and "aac" in streams

    report = api.get(f"/v1/jobs/{job['id']}/report").json()
    assert report["chunks"] == job["chunks"]["total"] and report["frames"] > 25
    assert abs(float(streams[-1]) - report["frames"] / 25) < 0.1
    assert report["face_coverage"] > 0.9
    assert report["frames_passed_through"] == report["frames_outside_ranges"] == 0
    assert report["source_cuts_s"] == []  # one shot
    assert (report["face_choice"], report["source_faces"]) == ("auto", 1)
    assert report["source_shots"] == [{"start_s": 0.0, "end_s": 3.0, "output_s": [[0.0, round(report["output_seconds"], 2)]],
                                       "person_distance": 0.0, "other_person": False}]
    assert report["other_speaker"] == []  # one face
    assert set(report["durations"]) >= {"prep", "render", "mux"}
    # The eval harness's sync estimate of the result (settings.sync_estimate, on by default): the rendered
    # mouth follows the dub's loudness, so the correlation peaks strongly within a few frames of 0.
    sync = report["sync"]
    assert abs(sync["offset_frames"]) <= 4 and sync["offset_ms"] == round(sync["offset_frames"] * 40), sync
    assert sync["peak_correlation"] > 0.3 and sync["confidence"] > 0, sync
    assert 25 < sync["frames"] <= report["frames"]


def test_same_source_reuses_prep(api: httpx.Client, assets: dict[str, dict[str, Any]],
                                 redis_client: redis.Redis) -> None:
    first = wait_for(api, create_job(api, assets["face2"], assets["speech"])["id"])
    second = wait_for(api, create_job(api, assets["face2"], assets["speech"],
                                      options={"sync_mode": "loop"})["id"])
    assert first["status"] == second["status"] == "succeeded"
    assert first["cache"] == {"prep_hit": False}
    assert second["cache"] == {"prep_hit": True}
    assert second["timings"]["prep"] < first["timings"]["prep"]
    assert redis_client.keys(f"prep:{assets['face2']['sha256']}:v*")


def test_two_render_workers_share_one_jobs_chunks(api: httpx.Client, assets: dict[str, dict[str, Any]],
                                                  stack: StackConfig) -> None:
    """Nine 1-s chunks, two render workers: both render some of them, and the result is whole."""
    logs = sorted(stack.root.glob("render_worker*.log"))
    assert len(logs) == 2
    before = {log: log.stat().st_size for log in logs}
    job = wait_for(api, create_job(api, assets["face"], assets["long_speech"])["id"])
    assert job["status"] == "succeeded", job["error"]
    assert job["chunks"]["total"] >= 6 and job["chunks"]["done"] == job["chunks"]["total"]
    rendered = {log.stem: sum(b"dub.render[" in line and b"succeeded" in line
                              for line in log.read_bytes()[before[log]:].splitlines()) for log in logs}
    assert all(n > 0 for n in rendered.values()), rendered
    assert sum(rendered.values()) >= job["chunks"]["total"]


def test_ranges_option_reanimates_only_those_stretches(api: httpx.Client,
                                                      assets: dict[str, dict[str, Any]]) -> None:
    """Across render chunks (1 s each here): output frames 10..39 are re-drawn, every other one is the
    source's."""
    job = wait_for(api, create_job(api, assets["face"], assets["speech"],
                                   options={"ranges": [[0.4, 1.6]]})["id"])
    assert job["status"] == "succeeded", job
    report = api.get(f"/v1/jobs/{job['id']}/report").json()
    assert report["frames"] > 40 and job["chunks"]["total"] >= 2
    assert report["frames_passed_through"] == report["frames_outside_ranges"] == report["frames"] - 30


def test_the_output_keeps_the_sources_frame_rate(api: httpx.Client, assets: dict[str, dict[str, Any]],
                                                 tmp_path: Path) -> None:
    """A 30-fps source comes out at 30 fps, in 30-fps render chunks; `frame_rate: "25"` re-times it."""
    from lipdub.demo import moving_face_video

    source = tmp_path / "thirty.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(moving_face_video(tmp_path / "src.mp4", 2.0)),
                    "-vf", "fps=30", "-c:v", "libx264", "-crf", "18", str(source)], check=True)
    video = upload(api, source)
    for frame_rate, fps in (("source", 30), ("25", 25)):
        job = wait_for(api, create_job(api, video, assets["speech"], options={"frame_rate": frame_rate})["id"])
        assert job["status"] == "succeeded", job["error"]
        report = api.get(f"/v1/jobs/{job['id']}/report").json()
        assert report["fps"] == fps and report["frame_rate"] == str(fps)
        assert report["source_frames"] == (60 if fps == 30 else 50)  # the 2-s source at the output's rate
        out = tmp_path / f"result-{fps}.mp4"
        out.write_bytes(api.get(f"/v1/jobs/{job['id']}/result", follow_redirects=True).content)
        stream = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_packets", "-show_entries",
                                 "stream=r_frame_rate,nb_read_packets", "-of", "csv=p=0", str(out)],
                                capture_output=True, text=True, check=True).stdout.strip().split(",")
        assert stream == [f"{fps}/1", str(report["frames"])], stream
        assert report["output_seconds"] == pytest.approx(report["frames"] / fps, abs=1e-3)
        assert job["chunks"]["total"] == -(-report["frames"] // fps)  # 1-s chunks at the output's rate
        assert report["sync"]["frames"] > 0  # measured on a 25-fps copy


def test_enroll_option_stores_a_fine_tuned_renderer_with_the_source(
        api: httpx.Client, assets: dict[str, dict[str, Any]], stack: StackConfig, redis_client: redis.Redis) -> None:
    from lipdub.prep.track import prep_version
    from lipdub.render import ENROLLED
    from lipdub.service.storage import keys, make_storage

    sha, version = assets["face"]["sha256"], prep_version(stack.settings())
    job = wait_for(api, create_job(api, assets["face"], assets["speech"], options={"enroll": True})["id"])
    assert job["status"] == "succeeded", job["error"]
    assert job["options"]["enroll"] is True
    pointer = json.loads(redis_client.get(f"prep:{sha}:v{version}"))
    assert ENROLLED in pointer["files"]  # every render worker's copy of the entry now carries it
    stored = make_storage(stack.settings())
    assert stored.exists(keys.prep(sha, version, ENROLLED))
    again = wait_for(api, create_job(api, assets["face"], assets["speech"], options={"enroll": True})["id"])
    assert again["status"] == "succeeded", again["error"]
    assert json.loads(redis_client.get(f"prep:{sha}:v{version}"))["files"] == pointer["files"]


def test_target_face_picks_one_of_two_equal_faces(api: httpx.Client, assets: dict[str, dict[str, Any]],
                                                  service_media: dict[str, Path], redis_client: redis.Redis) -> None:
    two = upload(api, service_media["two_faces"])
    auto = wait_for(api, create_job(api, two, assets["speech"])["id"])
    assert auto["status"] == "failed" and auto["error"]["code"] == "multiple_faces", auto
    right = {"time": 1.0, "point": [360, 128]}
    job = wait_for(api, create_job(api, two, assets["speech"], options={"target_face": right})["id"])
    assert job["status"] == "succeeded", job["error"]
    assert job["options"]["target_face"] == {"time": 1.0, "point": [360.0, 128.0], "box": None}
    chosen = api.get(f"/v1/jobs/{job['id']}/report").json()
    assert chosen["face_coverage"] > 0.9 and (chosen["face_choice"], chosen["source_faces"]) == ("user", 2)
    # The chosen face is its own prep entry next to the automatic choice's cached rejection.
    assert len(redis_client.keys(f"prep:{two['sha256']}*:v*")) == 2
    pre = api.post("/v1/preflight", json={"video": {"asset_id": two["id"]}, "target_face": right}).json()
    assert pre["verdict"] == "pass" and pre["cached"] is True
    both = api.post("/v1/jobs", json={"video": {"asset_id": two["id"]}, "audio": {"asset_id": assets["speech"]["id"]},
                                      "options": {"target_face": {"point": [1, 2], "box": [0, 0, 5, 5]}}})
    assert (both.status_code, both.json()["error"]["code"]) == (422, "invalid_request")


def test_failing_stage_fails_the_job_with_its_code(api: httpx.Client, assets: dict[str, dict[str, Any]]) -> None:
    job = wait_for(api, create_job(api, assets["noface"], assets["speech"])["id"])
    assert job["status"] == "failed"
    assert job["error"]["code"] == "no_face"
    assert job["error"]["retryable"] is False
    assert job["stage"] == "prep" or job["stage"] == "audio"  # prep and audio run in parallel
    assert api.get(f"/v1/jobs/{job['id']}/result").json()["error"]["code"] == "result_not_ready"
    # The rejection is cached with the source's prep: a resubmission fails fast with the same code.
    again = wait_for(api, create_job(api, assets["noface"], assets["speech"])["id"])
    assert again["status"] == "failed" and again["error"]["code"] == "no_face"
    assert again["timings"]["prep"] < job["timings"]["prep"]


def test_cancel(api: httpx.Client, assets: dict[str, dict[str, Any]]) -> None:
    job = create_job(api, assets["face"], assets["speech"])
    canceled = api.post(f"/v1/jobs/{job['id']}/cancel")
    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
    again = api.post(f"/v1/jobs/{job['id']}/cancel")
    assert again.status_code == 409 and again.json()["error"]["code"] == "job_not_cancelable"
    # Queues are FIFO: once a later job has gone through every queue, the canceled job's tasks ran too.
    later = wait_for(api, create_job(api, assets["face"], assets["speech"])["id"])
    assert later["status"] == "succeeded"
    final = api.get(f"/v1/jobs/{job['id']}").json()
    assert final["status"] == "canceled"
    assert final["chunks"]["done"] == 0
    assert api.get(f"/v1/jobs/{job['id']}/result").status_code == 409


def test_cancel_running_job_stops_at_next_chunk(api: httpx.Client, assets: dict[str, dict[str, Any]]) -> None:
    job = create_job(api, assets["face"], assets["long_speech"])
    deadline = time.monotonic() + JOB_TIMEOUT
    while (state := api.get(f"/v1/jobs/{job['id']}", params={"wait": 2}).json())["chunks"]["done"] < 1:
        assert state["status"] == "running" or state["status"] == "queued", state
        assert time.monotonic() < deadline, state
    total = state["chunks"]["total"]
    assert total >= 6
    assert api.post(f"/v1/jobs/{job['id']}/cancel").json()["status"] == "canceled"
    later = wait_for(api, create_job(api, assets["face"], assets["speech"])["id"])  # drains the queues
    assert later["status"] == "succeeded"
    final = api.get(f"/v1/jobs/{job['id']}").json()
    assert final["status"] == "canceled"
    # The chunk running at cancel time finishes; every later chunk, the mux and the finalize are skipped.
    assert final["chunks"]["done"] <= state["chunks"]["done"] + 2 < total
    assert "mux" not in final["timings"]


def test_idempotency(api: httpx.Client, assets: dict[str, dict[str, Any]]) -> None:
    body = {"video": {"asset_id": assets["face"]["id"]}, "audio": {"asset_id": assets["speech"]["id"]}}
    headers = {"Idempotency-Key": "order-42.v1"}
    first = api.post("/v1/jobs", json=body, headers=headers)
    second = api.post("/v1/jobs", json=body, headers=headers)
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] == second.json()["id"]
    other = api.post("/v1/jobs", json={**body, "options": {"sync_mode": "cut_off"}}, headers=headers)
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_conflict"
    bad = api.post("/v1/jobs", json=body, headers={"Idempotency-Key": "no spaces allowed"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_idempotency_key"
    api.post(f"/v1/jobs/{first.json()['id']}/cancel")  # the work itself is not under test here


def test_tenant_isolation(api: httpx.Client, other_tenant: httpx.Client, finished_job: dict[str, Any],
                          assets: dict[str, dict[str, Any]]) -> None:
    job_id = finished_job["id"]
    for method, path in (("GET", f"/v1/jobs/{job_id}"), ("GET", f"/v1/jobs/{job_id}/result"),
                         ("GET", f"/v1/jobs/{job_id}/report"), ("POST", f"/v1/jobs/{job_id}/cancel"),
                         ("GET", f"/v1/assets/{assets['face']['id']}")):
        response = other_tenant.request(method, path)
        assert response.status_code == 404, (method, path)
        assert response.json()["error"]["code"] == "not_found"
    assert job_id not in [j["id"] for j in other_tenant.get("/v1/jobs").json()["data"]]
    stolen = other_tenant.post("/v1/jobs", json={"video": {"asset_id": assets["face"]["id"]},
                                                 "audio": {"asset_id": assets["speech"]["id"]}})
    assert stolen.status_code == 422 and stolen.json()["error"]["code"] == "asset_not_found"
    assert api.get(f"/v1/jobs/{job_id}").status_code == 200


def test_list_jobs_with_filters_and_cursor(api: httpx.Client, assets: dict[str, dict[str, Any]],
                                          finished_job: dict[str, Any]) -> None:
    # A second job, canceled at once, so that the test pages through two jobs when it runs alone too.
    extra = create_job(api, assets["face"], assets["speech"])
    assert api.post(f"/v1/jobs/{extra['id']}/cancel").status_code == 200
    page = api.get("/v1/jobs", params={"limit": 1}).json()
    assert len(page["data"]) == 1 and page["next_cursor"]
    following = api.get("/v1/jobs", params={"limit": 1, "cursor": page["next_cursor"]}).json()
    assert following["data"][0]["id"] != page["data"][0]["id"]
    succeeded = api.get("/v1/jobs", params={"status": "succeeded", "limit": 100}).json()["data"]
    assert finished_job["id"] in [j["id"] for j in succeeded]
    assert all(j["status"] == "succeeded" for j in succeeded)
    later = api.get("/v1/jobs", params={"created_after": finished_job["finished_at"]}).json()["data"]
    assert finished_job["id"] not in [j["id"] for j in later]


def test_a_job_stored_but_never_queued_is_run_by_the_janitor(api: httpx.Client, anonymous: httpx.Client,
                                                             stack: StackConfig,
                                                             finished_job: dict[str, Any]) -> None:
    """The API (or a batch pump) died between storing a job and queueing its pipeline: the scheduler the
    webhooks worker embeds sends the janitor's sweep, which queues the job once its hand-off is overdue."""
    store = JobStore.from_settings(stack.settings())
    done = store.get(finished_job["id"])
    assert done is not None
    orphan = store.create("acme", done.spec)  # what the API stores before it queues the pipeline
    assert store.r.zscore(OUTBOX, f"start:{orphan.id}") is not None
    job = wait_for(api, orphan.id)
    assert job["status"] == "succeeded", job
    assert store.r.zscore(OUTBOX, f"start:{orphan.id}") is None
    assert store.r.zscore(OUTBOX, f"finished:{orphan.id}") is None  # its end event was queued at once
    started = [line for line in anonymous.get("/metrics").text.splitlines()
               if line.startswith('lipdub_janitor_actions_total{action="started"}')]
    assert started and float(started[0].split()[-1]) >= 1, started


def test_a_deleted_asset_takes_its_prep_along_and_jobs_not_yet_run_on_it_fail(
        api: httpx.Client, assets: dict[str, dict[str, Any]], finished_job: dict[str, Any], stack: StackConfig,
        tmp_path: Path) -> None:
    """Deleting an asset deletes its bytes and what prep derived from them in S3, and the workers delete their
    local copies; a job that names it but had not started (a batch item released later) fails with
    `asset_deleted` instead of losing its input."""
    from lipdub.demo import moving_face_video
    from lipdub.service.storage import S3Storage, keys

    video = upload(api, moving_face_video(tmp_path / "two_seconds.mp4", 2.0))
    done = wait_for(api, create_job(api, video, assets["speech"])["id"])
    assert done["status"] == "succeeded", done
    s3 = S3Storage(stack.settings())
    store = JobStore.from_settings(stack.settings())
    assert s3.exists(keys.asset(video["sha256"]))
    assert store.assets.prep_pointer(video["sha256"]) is not None
    local = stack.settings().data_dir / "prep"  # the prep and render workers' host cache (one host here)
    assert list(local.glob(f"{video['sha256']}-*"))
    assert api.delete(f"/v1/assets/{video['id']}").status_code == 204
    assert not s3.exists(keys.asset(video["sha256"]))
    listed = s3.client.list_objects_v2(Bucket=s3.bucket, Prefix=keys.prep_of(video["sha256"]))
    assert listed["KeyCount"] == 0 and store.assets.prep_pointer(video["sha256"]) is None
    deadline = time.monotonic() + 20  # the workers sweep their caches every LIPDUB_JANITOR_SECONDS (1 s here)
    while list(local.glob(f"{video['sha256']}-*")):
        assert time.monotonic() < deadline, "a worker kept its local copy of the deleted video's prep"
        time.sleep(0.2)
    assert list(local.glob(f"{assets['face']['sha256']}-*"))  # the finished job's source stays
    assert api.get(f"/v1/jobs/{done['id']}/result").status_code == 307  # ended jobs keep their results
    stored = store.get(done["id"])
    assert stored is not None
    pending = store.create("acme", stored.spec)  # queued by the janitor, as a late batch item would be
    failed = wait_for(api, pending.id)
    assert failed["status"] == "failed" and failed["stage"] == "probe", failed
    assert failed["error"]["code"] == "asset_deleted" and video["id"] in failed["error"]["message"]


@pytest.mark.parametrize("case", ["no_key", "bad_key", "bad_json", "bad_option", "url_input", "unknown_asset",
                                  "audio_as_video", "unknown_job", "not_media", "too_large"])
def test_bad_requests_get_4xx_with_codes(case: str, api: httpx.Client, anonymous: httpx.Client,
                                         assets: dict[str, dict[str, Any]], service_media: dict[str, Path],
                                         tmp_path: Path) -> None:
    video, audio = {"asset_id": assets["face"]["id"]}, {"asset_id": assets["speech"]["id"]}
    if case == "no_key":
        response, expected = anonymous.get("/v1/jobs"), (401, "unauthorized")
    elif case == "bad_key":
        response = anonymous.get("/v1/jobs", headers={"Authorization": "Bearer ldk_not-a-key"})
        expected = (401, "unauthorized")
    elif case == "bad_json":
        response = api.post("/v1/jobs", content=b"{not json", headers={"Content-Type": "application/json"})
        expected = (422, "invalid_request")
    elif case == "bad_option":
        response = api.post("/v1/jobs", json={"video": video, "audio": audio, "options": {"sync_mode": "warp"}})
        expected = (422, "invalid_request")
    elif case == "url_input":
        # Inputs by URL are accepted (test_webhooks_and_batches), but a private address is refused up front.
        response = api.post("/v1/jobs", json={"video": {"url": "http://10.0.0.1/a.mp4"}, "audio": audio})
        expected = (422, "url_not_allowed")
    elif case == "unknown_asset":
        response = api.post("/v1/jobs", json={"video": {"asset_id": "ast_nope"}, "audio": audio})
        expected = (422, "asset_not_found")
    elif case == "audio_as_video":
        response = api.post("/v1/jobs", json={"video": audio, "audio": audio})
        expected = (422, "no_video_stream")
    elif case == "unknown_job":
        response, expected = api.get("/v1/jobs/job_0000"), (404, "not_found")
    elif case == "not_media":
        with service_media["text"].open("rb") as f:
            response = api.post("/v1/assets", files={"file": ("notes.mp4", f)})
        expected = (422, "input_unreadable")
    else:
        big = tmp_path / "big.bin"
        big.write_bytes(b"\0" * (MAX_UPLOAD + 100_000))
        with big.open("rb") as f:
            response = api.post("/v1/assets", files={"file": ("big.mp4", f)})
        expected = (413, "payload_too_large")
    assert (response.status_code, response.json()["error"]["code"]) == expected, response.text


def test_presigned_multipart_upload(api: httpx.Client, service_media: dict[str, Path]) -> None:
    data = service_media["face2"].read_bytes()
    upload_ = api.post("/v1/assets/uploads", json={"size": len(data), "filename": "face2.mp4"}).json()
    etags = []
    for part in upload_["parts"]:
        start = (part["part_number"] - 1) * upload_["part_size"]
        put = httpx.put(part["url"], content=data[start:start + upload_["part_size"]], timeout=60)
        assert put.status_code == 200, put.text
        etags.append(put.headers["etag"])
    wrong = api.post(f"/v1/assets/uploads/{upload_['id']}/complete", json={"etags": ['"0123abcd"'] * len(etags)})
    assert wrong.status_code == 422 and wrong.json()["error"]["code"] == "invalid_request", wrong.text
    assert "InvalidPart" in wrong.json()["error"]["message"] and not wrong.json()["error"]["retryable"]
    asset = api.post(f"/v1/assets/uploads/{upload_['id']}/complete", json={"etags": etags})
    assert asset.status_code == 201, asset.text
    assert asset.json()["sha256"] == hashlib.sha256(data).hexdigest()
    assert asset.json()["media"]["kind"] == "video"


def test_preflight(api: httpx.Client, assets: dict[str, dict[str, Any]], finished_job: dict[str, Any]) -> None:
    cached = api.post("/v1/preflight", json={"video": {"asset_id": assets["face"]["id"]}}).json()
    assert cached["verdict"] == "pass" and cached["cached"] is True
    assert cached["summary"]["n_frames"] == 75 and cached["eta_seconds"] > 0
    faceless = api.post("/v1/preflight", json={"video": {"asset_id": assets["noface"]["id"]}}).json()
    assert faceless["verdict"] == "fail" and faceless["error"]["code"] == "no_face"
    assert faceless["eta_seconds"] is None  # cached or not: the job tests may have met this source first


def test_preflight_of_a_new_source_samples_it_then_prepares_it(api: httpx.Client, finished_job: dict[str, Any],
                                                               tmp_path: Path) -> None:
    from lipdub.demo import moving_face_video

    video = upload(api, moving_face_video(tmp_path / "six_seconds.mp4", 6.0))
    fast = api.post("/v1/preflight", json={"video": {"asset_id": video["id"]}}).json()
    assert fast["verdict"] == "pass" and fast["cached"] is False and fast["error"] is None, fast
    assert fast["sampled_seconds"] == 3.0 and fast["summary"]["n_frames"] == 75  # LIPDUB_PREFLIGHT_SECONDS
    assert fast["summary"]["face_coverage"] > 0.9 and fast["eta_seconds"] > 0
    # A passing preflight queues the full prep: the next preflight (and job) find the whole source cached.
    deadline = time.monotonic() + JOB_TIMEOUT
    while not (full := api.post("/v1/preflight", json={"video": {"asset_id": video["id"]}}).json())["cached"]:
        assert time.monotonic() < deadline, full
        time.sleep(0.5)
    assert full["summary"]["n_frames"] == 150 and full["sampled_seconds"] is None
    assert full["eta_seconds"] < fast["eta_seconds"]  # the prep is done
    wall = tmp_path / "wall.mp4"  # new bytes: never prepared, so the fast path judges it
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:d=4",
                    "-pix_fmt", "yuv420p", str(wall)], check=True)
    faceless = api.post("/v1/preflight", json={"video": {"asset_id": upload(api, wall)["id"]}}).json()
    assert faceless["verdict"] == "fail" and faceless["cached"] is False, faceless
    assert faceless["error"]["code"] == "no_face" and faceless["error"]["retryable"] is False
    assert faceless["sampled_seconds"] == 3.0 and faceless["eta_seconds"] is None


def test_health_readiness_and_metrics(anonymous: httpx.Client, finished_job: dict[str, Any],
                                      stack: StackConfig) -> None:
    assert anonymous.get("/healthz").json() == {"status": "ok"}
    ready = anonymous.get("/readyz").json()
    assert ready["checks"] == {"redis": "ok", "storage": "ok"}
    metrics = anonymous.get("/metrics").text
    succeeded = [line for line in metrics.splitlines() if line.startswith('lipdub_jobs{status="succeeded"}')]
    assert succeeded and float(succeeded[0].split()[-1]) >= 1
    assert 'lipdub_queue_depth{queue="render"}' in metrics
    assert 'lipdub_stage_seconds_total{stage="render"}' in metrics
    assert anonymous.get("/openapi.json").json()["info"]["title"] == "lipdub"
