"""Whole `lipdub dub` against the ffmpeg floor (issue 31, goals 2 and 3): wall / audio, cold and with the prep
cached, the start-up, and the peak memory of the process tree.

A real talking clip (the corpus's 1280x720, 30-fps Wav2Lip test clip, as bench_timeline), its first
`--seconds` (looped when longer than the clip) at each of `--heights`, dubbed with `--dub-seconds` of
espeak-ng speech by the real CLI (`lipdub dub`, default settings, a fresh data directory for the cold run):

- *floor*: ffmpeg alone decoding the source (looped) and encoding the dub's length of H.264 with the output's
  own settings (CRF, preset, tune), in the same run: what any dubbing tool pays at least;
- *cold*: nothing cached (prep, audio, render, mux); *cached*: the same command again (the prep cache hit);
- the stage times `lipdub dub` prints, and what lies outside them (interpreter, imports, probing, glue);
- peak RSS: of the lipdub process and of its whole tree (ffmpeg children included), sampled every 0.2 s;
- *start-up* (separately, a fresh interpreter): importing the pipeline and torch, loading the audio model, the
  DINet generator and the MediaPipe graphs: what a worker pays once, and `lipdub dub` partly beside prep.

Run: `python -m bench.bench_dub [--heights 720,1080] [--fps 25] [--seconds 14] [--dub-seconds 60]
[--runs cold,cached]`;
prints JSON. Needs ../shared/corpus (or LIPDUB_CORPUS); exits 0 with a note when absent.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.bench_timeline import CLIP, CORPUS, speech
from lipdub.config import Settings
from lipdub.errors import ErrorCode
from lipdub.media.ffmpeg import run_ffmpeg

STARTUP = """
import json, time
t0 = time.perf_counter()
import lipdub.pipeline
t1 = time.perf_counter()
import torch
t2 = time.perf_counter()
from lipdub.audio.models import load_model
from lipdub.config import Settings
from lipdub.face.mesh import FaceMesh
from lipdub.render import generic_weights
from lipdub.render.dinet_renderer import cached_model
s = Settings()
load_model(s.audio_model, s.audio_encoder, s.audio_threads)
t3 = time.perf_counter()
cached_model(generic_weights(s))
t4 = time.perf_counter()
with FaceMesh(max_faces=1), FaceMesh(max_faces=4):
    pass
t5 = time.perf_counter()
print(json.dumps({"import_pipeline_s": t1 - t0, "import_torch_s": t2 - t1, "audio_model_s": t3 - t2,
                  "dinet_s": t4 - t3, "mediapipe_s": t5 - t4}))
"""


def tree_rss_kb(root: int) -> tuple[int, int]:
    """(RSS of `root`, RSS of root and all its descendants), in kB, from /proc."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            status = (entry / "status").read_text()
        except OSError:  # ended meanwhile
            continue
        pid = int(entry.name)
        parents[pid] = int(stat.rsplit(")", 1)[1].split()[1])
        found = re.search(r"VmRSS:\s+(\d+)", status)
        rss[pid] = int(found.group(1)) if found else 0
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        kids = [p for p, pp in parents.items() if pp == parent and p not in tree]
        tree.update(kids)
        frontier += kids
    return rss.get(root, 0), sum(rss.get(p, 0) for p in tree)


def timed_dub(source: Path, audio: Path, out: Path, data_dir: Path) -> dict[str, object]:
    """`lipdub dub` as a user runs it: wall, the stage times it prints, peak RSS (process, tree)."""
    cli = Path(sys.executable).with_name("lipdub")
    env = {**os.environ, "LIPDUB_DATA_DIR": str(data_dir)}
    peak = [0, 0]
    start = time.perf_counter()
    proc = subprocess.Popen([str(cli), "dub", str(source), str(audio), "-o", str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def sample() -> None:
        while proc.poll() is None:
            own, tree = tree_rss_kb(proc.pid)
            peak[0], peak[1] = max(peak[0], own), max(peak[1], tree)
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = proc.communicate()
    wall = time.perf_counter() - start
    sampler.join()
    if proc.returncode:
        raise RuntimeError(f"lipdub dub failed ({proc.returncode}): {err[-2000:]}")
    stages = {m[1]: float(m[2]) for m in re.finditer(r"^(\w+): \d+ done in ([\d.]+)s", err, re.M)}
    # audio runs beside prep: the critical path is the longer of the two, then render and mux.
    on_path = max(stages.get("prep", 0.0), stages.get("audio", 0.0)) + stages.get("render", 0.0) + \
        stages.get("mux", 0.0)
    return {"wall_s": round(wall, 2), "stages_s": stages, "outside_stages_s": round(wall - on_path, 2),
            "peak_rss_mb": round(peak[0] / 1024), "peak_tree_rss_mb": round(peak[1] / 1024)}


def floor(source: Path, seconds: float, out: Path, settings: Settings) -> float:
    """ffmpeg decoding the (looped) source and encoding `seconds` of it as the output is encoded."""
    tune = ["-tune", settings.video_tune] if settings.video_tune != "none" else []
    start = time.perf_counter()
    run_ffmpeg(["-y", "-stream_loop", "-1", "-i", str(source), "-t", f"{seconds:.3f}", "-an", "-c:v", "libx264",
                "-preset", settings.video_preset, "-crf", str(settings.video_crf), *tune, "-pix_fmt", "yuv420p",
                str(out)], code=ErrorCode.internal, what="the ffmpeg floor failed")
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=14.0, help="source length (the clip looped if longer)")
    p.add_argument("--dub-seconds", type=float, default=60.0)
    p.add_argument("--heights", default="720,1080", help="source heights (720: the clip as it is)")
    p.add_argument("--fps", type=float, default=None, help="re-time the source to this rate (default: its 30)")
    p.add_argument("--runs", default="cold,cached", help="cold, cached, or both")
    p.add_argument("--no-startup", action="store_true", help="skip the start-up measurement")
    args = p.parse_args()
    clip = CORPUS / CLIP
    if not clip.is_file():
        print(f"no corpus clip at {clip}: nothing to measure", file=sys.stderr)
        return
    settings = Settings()
    results: dict[str, object] = {"clip": CLIP, "source_s": args.seconds, "dub_s": args.dub_seconds,
                                  "fps": args.fps or "source (30)",
                                  "load_average": os.getloadavg()[0]}
    if not args.no_startup:
        done = subprocess.run([sys.executable, "-c", STARTUP], capture_output=True, text=True, check=True)
        startup = json.loads(done.stdout.strip().splitlines()[-1])
        results["startup_s"] = {k: round(v, 2) for k, v in startup.items()} | {
            "total": round(sum(startup.values()), 2)}
        print("startup", results["startup_s"], file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="lipdub-bench-") as tmp:
        d = Path(tmp)
        audio = speech(d / "dub.wav", args.dub_seconds)
        for height in (int(h) for h in args.heights.split(",")):
            source = d / f"source{height}.mp4"
            filters = [f"fps={args.fps:g}"] if args.fps else []
            filters += [f"scale=-2:{height}:flags=lanczos"] if height != 720 else []
            scale = ["-vf", ",".join(filters)] if filters else []
            run_ffmpeg(["-y", "-stream_loop", "-1", "-i", str(clip), "-t", f"{args.seconds:.3f}", *scale,
                        "-c:v", "libx264", "-crf", "16", "-an", str(source)],
                       code=ErrorCode.internal, what="could not cut the source")
            row: dict[str, object] = {"floor_s": round(floor(source, args.dub_seconds, d / "floor.mp4",
                                                             settings), 2)}
            data_dir = d / f"var{height}"
            for run in args.runs.split(","):
                timed = timed_dub(source, audio, d / f"out{height}.mp4", data_dir)
                wall = float(timed["wall_s"])  # type: ignore[arg-type]
                timed |= {"wall_per_audio": round(wall / args.dub_seconds, 3),
                          "vs_floor": round(wall / float(row["floor_s"]), 2)}  # type: ignore[arg-type]
                row[run] = timed
                print(height, run, timed, file=sys.stderr, flush=True)
            results[f"{height}p"] = row
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
