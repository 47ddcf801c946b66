"""Service end to end: a clip from upload to downloaded result through the API, on the local stack.

`python -m bench.bench_service [--seconds 10]`. Starts a private stack (lipdub.service.stack on free ports:
redis-server, moto S3, uvicorn, one Celery worker per queue, default settings), generates a face clip and
espeak-ng speech of about the same length, then times two jobs on the same source: the first prepares
the source, the second reuses the prep cache. Each covers upload (both files) → job → long-poll until
succeeded → download of the result. Prints Markdown rows for BENCHMARKS.md.

`--corpus --seconds 14 --speech-seconds 60 --render-workers 2 --embedded` (issue 31, goal 4): the corpus's
real 720p clip (bench_timeline's) and 60 s of speech instead, two render workers sharing the chunks, and the
same dub through `lipdub dub` (cold, its own data directory) in the same run for the ratio. Each render
worker's log says which chunks it ran and how long each took: chunk seconds summed over the render stage's
wall shows how much they overlapped.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import redis

from bench.bench_timeline import CLIP, CORPUS, speech
from lipdub.demo import moving_face_video, speak
from lipdub.errors import ErrorCode
from lipdub.media.ffmpeg import run_ffmpeg, run_ffprobe
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


def embedded(video: Path, audio: Path, out: Path, data_dir: Path) -> float:
    """Wall seconds of `lipdub dub` on the same inputs, cold (a data directory of its own)."""
    start = time.perf_counter()
    subprocess.run([str(Path(sys.executable).with_name("lipdub")), "dub", "-q", str(video), str(audio), "-o",
                    str(out)], env={**os.environ, "LIPDUB_DATA_DIR": str(data_dir)}, check=True,
                   capture_output=True)
    return time.perf_counter() - start


def chunks_by_worker(root: Path) -> dict[str, list[float]]:
    """Seconds of each render chunk (`dub.render` task) per render worker, from the workers' logs."""
    return {log.stem: [float(m) for m in re.findall(r"dub\.render\[[^]]+\] succeeded in ([\d.]+)s",
                                                    log.read_text(errors="replace"))]
            for log in sorted(root.glob("render_worker*.log"))}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0, help="Length of the source clip")
    parser.add_argument("--corpus", action="store_true", help="the corpus's 720p clip instead of a generated one")
    parser.add_argument("--speech-seconds", type=float, default=None,
                        help="espeak-ng speech of this length (default: the generated sentence)")
    parser.add_argument("--render-workers", type=int, default=1)
    parser.add_argument("--embedded", action="store_true", help="also time `lipdub dub` on the same inputs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-service-") as tmp:
        root = Path(tmp)
        if args.corpus:
            if not (CORPUS / CLIP).is_file():
                print(f"no corpus clip at {CORPUS / CLIP}: nothing to measure", file=sys.stderr)
                return
            video = root / "source.mp4"
            run_ffmpeg(["-y", "-i", str(CORPUS / CLIP), "-t", f"{args.seconds:.3f}", "-c:v", "libx264", "-crf",
                        "16", "-an", str(video)], code=ErrorCode.internal, what="could not cut the source")
        else:
            video = moving_face_video(root / "face.mp4", args.seconds)
        audio = speech(root / "speech.wav", args.speech_seconds) if args.speech_seconds else \
            speak(SPEECH, root / "speech.wav")
        cfg = StackConfig(root=root / "stack", api_port=free_port(), redis_port=free_port(), s3_port=free_port(),
                          render_workers=args.render_workers)
        try:
            start(cfg)
            key = ApiKeys(redis.Redis.from_url(cfg.settings().redis_url, decode_responses=True)).create("bench")
            with httpx.Client(base_url=cfg.api_url, headers={"Authorization": f"Bearer {key}"},
                              timeout=120) as client:
                print(f"source {duration(video):.1f} s, speech {duration(audio):.1f} s, "
                      f"chunks of {cfg.settings().chunk_seconds:.0f} s, {args.render_workers} render worker(s)")
                print("| run | upload → result | output | probe | prep | audio | render (chunks) | mux |")
                print("|---|---|---|---|---|---|---|---|")
                walls = []
                for label in ("new source", "same source again (prep cache)"):
                    wall, job = one_job(client, video, audio, root / "out.mp4")
                    walls.append(wall)
                    t = job["timings"]
                    print(f"| {label} | **{wall:.1f} s** | {duration(root / 'out.mp4'):.2f} s | {t['probe']:.1f} s "
                          f"| {t['prep']:.1f} s | {t['audio']:.1f} s | {t['render']:.1f} s "
                          f"({job['chunks']['total']}) | {t['mux']:.1f} s |", flush=True)
                for worker, seconds in chunks_by_worker(cfg.root).items():
                    print(f"{worker}: {len(seconds)} chunks, {sum(seconds):.1f} s "
                          f"({', '.join(f'{x:.1f}' for x in seconds)})")
        finally:
            stop(cfg.root)
        if args.embedded:
            alone = embedded(video, audio, root / "embedded.mp4", root / "embedded-var")
            print(f"embedded `lipdub dub` (cold): {alone:.1f} s; service / embedded: {walls[0] / alone:.2f} "
                  f"(new source), {walls[1] / alone:.2f} (prep cache)")


if __name__ == "__main__":
    main()
