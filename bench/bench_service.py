"""Service end to end: a 10-s clip from upload to downloaded result through the API, on the local stack.

`python -m bench.bench_service [--seconds 10]`. Starts a private stack (lipdub.service.stack on free ports:
redis-server, moto S3, uvicorn, one Celery worker per queue, default settings), generates a face clip and
espeak-ng speech of about the same length, then times two jobs on the same source: the first prepares
the source, the second reuses the prep cache. Each covers upload (both files) → job → long-poll until
succeeded → download of the result. Prints Markdown rows for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import redis

from lipdub.demo import moving_face_video, speak
from lipdub.errors import ErrorCode
from lipdub.media.ffmpeg import run_ffprobe
from lipdub.service.auth import ApiKeys
from lipdub.service.stack import StackConfig, start, stop

SPEECH = ("Welcome to the ten second test of the lip dub service. The mouth in this video now follows a new "
          "voice, rendered in chunks by separate workers and joined at the end.")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def one_job(client: httpx.Client, video: Path, audio: Path, out: Path) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    ids = []
    for path in (video, audio):
        with path.open("rb") as f:
            response = client.post("/v1/assets", files={"file": (path.name, f)})
        response.raise_for_status()
        ids.append(response.json()["id"])
    job = client.post("/v1/jobs", json={"video": {"asset_id": ids[0]}, "audio": {"asset_id": ids[1]}})
    job.raise_for_status()
    while (state := client.get(f"/v1/jobs/{job.json()['id']}", params={"wait": 20}).json())["status"] not in (
            "succeeded", "failed", "canceled"):
        pass
    if state["status"] != "succeeded":
        raise RuntimeError(f"job {state['id']} ended {state['status']}: {state['error']}")
    result = client.get(f"/v1/jobs/{state['id']}/result", follow_redirects=True)
    result.raise_for_status()
    out.write_bytes(result.content)
    return time.perf_counter() - started, state


def duration(path: Path) -> float:
    return float(run_ffprobe(["-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
                             code=ErrorCode.internal, what=f"ffprobe could not read {path.name}"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0, help="Length of the generated source clip")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-service-") as tmp:
        root = Path(tmp)
        video = moving_face_video(root / "face.mp4", args.seconds)
        audio = speak(SPEECH, root / "speech.wav")
        cfg = StackConfig(root=root / "stack", api_port=free_port(), redis_port=free_port(), s3_port=free_port())
        try:
            start(cfg)
            key = ApiKeys(redis.Redis.from_url(cfg.settings().redis_url, decode_responses=True)).create("bench")
            with httpx.Client(base_url=cfg.api_url, headers={"Authorization": f"Bearer {key}"},
                              timeout=120) as client:
                print(f"source {duration(video):.1f} s, speech {duration(audio):.1f} s, "
                      f"chunks of {cfg.settings().chunk_seconds:.0f} s")
                print("| run | upload → result | output | probe | prep | audio | render (chunks) | mux |")
                print("|---|---|---|---|---|---|---|---|")
                for label in ("new source", "same source again (prep cache)"):
                    wall, job = one_job(client, video, audio, root / "out.mp4")
                    t = job["timings"]
                    print(f"| {label} | **{wall:.1f} s** | {duration(root / 'out.mp4'):.2f} s | {t['probe']:.1f} s "
                          f"| {t['prep']:.1f} s | {t['audio']:.1f} s | {t['render']:.1f} s "
                          f"({job['chunks']['total']}) | {t['mux']:.1f} s |")
        finally:
            stop(cfg.root)


if __name__ == "__main__":
    main()
