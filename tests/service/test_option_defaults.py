"""A job created without options gets the API's settings as its defaults (LIPDUB_SYNC_MODE,
LIPDUB_FRAME_RATE), and the workers dub it so: a stack of its own, started with those settings."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from lipdub.service.stack import StackConfig, start, stop
from tests.service.conftest import create_job, free_port, upload, wait_for


@pytest.fixture(scope="module")
def cut_off_at_25(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    cfg = StackConfig(root=tmp_path_factory.mktemp("stack-defaults"), api_port=free_port(), redis_port=free_port(),
                      s3_port=free_port(), bucket="lipdub-defaults",
                      extra_env={"LIPDUB_SYNC_MODE": "cut_off", "LIPDUB_FRAME_RATE": "25",
                                 # The defaults are under test, not the models: the fast ones, no sync estimate.
                                 "LIPDUB_AUDIO_MODEL": "energy", "LIPDUB_RENDERER": "warp",
                                 "LIPDUB_SYNC_ESTIMATE": "false"})
    try:
        key = start(cfg)
    except RuntimeError:
        stop(cfg.root)
        raise
    with httpx.Client(base_url=cfg.api_url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
        yield client
    stop(cfg.root)


def test_a_job_without_options_takes_the_settings_defaults(cut_off_at_25: httpx.Client,
                                                           service_media: dict[str, Path], tmp_path: Path) -> None:
    """A 2-s, 30-fps source with ~9 s of speech: under the code's defaults (bounce, the source's rate) the
    result would be ~9 s at 30 fps; under these settings it is the source's 2 s at 25 fps."""
    from lipdub.demo import moving_face_video

    api = cut_off_at_25
    source = tmp_path / "thirty.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(moving_face_video(tmp_path / "src.mp4", 2.0)),
                    "-vf", "fps=30", "-c:v", "libx264", "-crf", "18", str(source)], check=True)
    job = create_job(api, upload(api, source), upload(api, service_media["long_speech"]))
    assert (job["options"]["sync_mode"], job["options"]["frame_rate"]) == ("cut_off", "25"), job["options"]
    job = wait_for(api, job["id"])
    assert job["status"] == "succeeded", job["error"]
    report = api.get(f"/v1/jobs/{job['id']}/report").json()
    assert (report["frames"], report["frame_rate"], report["output_seconds"]) == (50, "25", 2.0)
    # Given options still win over the settings.
    given = wait_for(api, create_job(api, upload(api, source), upload(api, service_media["speech"]),
                                     options={"sync_mode": "cut_off", "frame_rate": "source"})["id"])
    assert given["status"] == "succeeded", given["error"]
    assert api.get(f"/v1/jobs/{given['id']}/report").json()["frame_rate"] == "30"
