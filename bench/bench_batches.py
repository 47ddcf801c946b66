"""Batch acceptance benchmark: how long the API takes to accept a large manifest, whether it stays responsive
while the webhooks worker validates and expands it, and how long validation/expansion and a cancel take.

`python -m bench.bench_batches [--lines 10000 50000]`. Starts a private stack (lipdub.service.stack on free
ports), uploads a generated face clip and a speech clip, then per size: uploads a JSONL manifest of that
many items (all on the one source, so nothing is rendered: the batch is canceled while its source's
preflight runs), creates the batch, and polls `GET /healthz` and `GET /v1/batches/{id}` meanwhile.
Prints Markdown rows for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
import redis

from lipdub.demo import moving_face_video, speak
from lipdub.service.auth import ApiKeys
from lipdub.service.stack import StackConfig, start, stop


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def probe_latency(url: str, stop_event: threading.Event, out: list[float]) -> None:
    """GET url every 50 ms until told to stop; records each round trip in ms."""
    with httpx.Client(timeout=30) as client:
        while not stop_event.is_set():
            started = time.perf_counter()
            client.get(url)
            out.append((time.perf_counter() - started) * 1000)
            time.sleep(0.05)


def run(client: httpx.Client, api_url: str, video: str, audio: str, lines: int) -> str:
    body = "".join(json.dumps({"custom_id": f"item-{i}", "video": {"asset_id": video},
                               "audio": {"asset_id": audio}}) + "\n" for i in range(lines))
    latencies: list[float] = []
    halt = threading.Event()
    prober = threading.Thread(target=probe_latency, args=(f"{api_url}/healthz", halt, latencies))
    prober.start()
    t0 = time.perf_counter()
    manifest = client.post("/v1/batches/manifests", content=body, headers={"Content-Type": "application/jsonl"})
    t_upload = time.perf_counter() - t0
    manifest.raise_for_status()
    t1 = time.perf_counter()
    created = client.post("/v1/batches", json={"manifest_id": manifest.json()["id"]})
    t_create = time.perf_counter() - t1
    created.raise_for_status()
    batch_id = created.json()["id"]
    while (batch := client.get(f"/v1/batches/{batch_id}").json())["status"] == "validating":
        time.sleep(0.05)
    t_expand = time.perf_counter() - t1
    assert batch["status"] == "in_progress" and batch["request_counts"]["total"] == lines, batch
    t2 = time.perf_counter()
    client.post(f"/v1/batches/{batch_id}/cancel").raise_for_status()
    while (batch := client.get(f"/v1/batches/{batch_id}").json())["status"] != "cancelled":
        time.sleep(0.05)
    t_cancel = time.perf_counter() - t2
    halt.set()
    prober.join()
    size_mb = len(body) / 1e6
    return (f"| {lines:,} lines ({size_mb:.1f} MB) | upload {t_upload:.2f} s + create {t_create * 1000:.0f} ms "
            f"= **{t_upload + t_create:.2f} s** to 202 | {t_expand:.2f} s to in_progress | cancel → cancelled "
            f"{t_cancel:.2f} s ({batch['request_counts']['canceled']:,} canceled) | /healthz during it: median "
            f"{statistics.median(latencies):.0f} ms, max {max(latencies):.0f} ms ({len(latencies)} probes) |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, nargs="+", default=[10_000, 50_000])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-batches-") as tmp:
        root = Path(tmp)
        cfg = StackConfig(root=root / "stack", api_port=free_port(), redis_port=free_port(), s3_port=free_port(),
                          extra_env={"LIPDUB_BATCH_RUNNING_PER_TENANT": "1", "LIPDUB_AUDIO_MODEL": "energy",
                                     "LIPDUB_RATE_LIMIT_PER_MINUTE": "100000", "LIPDUB_RATE_LIMIT_BURST": "1000"})
        try:
            start(cfg)
            key = ApiKeys(redis.Redis.from_url(cfg.settings().redis_url, decode_responses=True)).create("bench")
            with httpx.Client(base_url=cfg.api_url, headers={"Authorization": f"Bearer {key}"},
                              timeout=300) as client:
                video_path = moving_face_video(root / "face.mp4", 2.0)
                audio_path = speak("Batch benchmark", root / "speech.wav")
                video = client.post("/v1/assets", files={"file": video_path.open("rb")}).json()["id"]
                audio = client.post("/v1/assets", files={"file": audio_path.open("rb")}).json()["id"]
                print("| manifest | accepted (API answers 202) | validated + expanded | cancel | API latency |")
                print("|---|---|---|---|---|")
                for lines in args.lines:
                    print(run(client, cfg.api_url, video, audio, lines), flush=True)
        finally:
            stop(cfg.root)


if __name__ == "__main__":
    main()
