"""Render-stage speed whatever the timeline does (issue 31, goal 1): forward only, `bounce`, `loop`, ranges.

A real 720p talking clip (the corpus's 1280x720, 30-fps Wav2Lip test clip), its first `--seconds` prepared
as `lipdub dub` prepares it (kept at its own 30 fps), and a `--dub-seconds` espeak-ng speech track through
the default audio model. Per sync mode, the plan `lipdub dub` would make (lipdub.plan) and then:

- the source frames that plan reads, through the render stage's own reader (decode only): frames/s and
  the ffmpeg processes it started;
- the whole render stage (`render_video`: decode, DINet, x264 encode): frames/s.

Forward only is the dub as long as the source (`cut_off`); `bounce` and `loop` are the long dub over the
short source, which reads source frames backwards (bounce) or again from the start (loop); `ranges` is the
bounce dubbed only inside RANGES (the frames between are written as decoded).

Run: `python -m bench.bench_timeline [--seconds 14] [--dub-seconds 60] [--renderer exemplar] [--shots 2]`; prints JSON. Needs ../shared/corpus
(or LIPDUB_CORPUS); exits 0 with a note when absent.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lipdub.audio.analyze import analyze_audio
from lipdub.config import Settings
from lipdub.errors import ErrorCode
from lipdub.jobs import JobOptions
from lipdub.media.ffmpeg import run_ffmpeg
from lipdub.plan import plan
from lipdub.prep.cache import prepare_cached
from lipdub.render.video import render_video

CORPUS = Path(os.environ.get("LIPDUB_CORPUS", Path(__file__).resolve().parents[2] / "shared" / "corpus"))
CLIP = "talking/Rudrabha_Wav2Lip__test.mov"
TEXT = ("The quick brown fox jumps over the lazy dog while the studio records another take of the scene. "
        "Every language needs its own voice, and every voice its own mouth. ")


RANGES = ((5.0, 20.0), (30.0, 50.0))  # the `ranges` mode dubs these seconds of the output, bouncing
# `--shots 2`: the source's second half is another person (scaled and padded into the same frame), so prep
# finds a cut and the render stage switches between two shots' renderers as the bounce crosses it.
SECOND_SHOT = "talking/OpenTalker_SadTalker__WDA_AlexandriaOcasioCortez_000.mp4"


def speech(path: Path, seconds: float) -> Path:
    """`seconds` of espeak-ng speech (the text repeated, then cut)."""
    raw = path.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-v", "en", "-w", str(raw), TEXT * max(1, round(seconds / 8))], check=True)
    run_ffmpeg(["-y", "-i", str(raw), "-t", f"{seconds:.3f}", "-ar", "16000", "-ac", "1", str(path)],
               code=ErrorCode.internal, what="could not cut the dub audio")
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=14.0, help="source length")
    p.add_argument("--dub-seconds", type=float, default=60.0, help="dub length of bounce and loop")
    p.add_argument("--modes", default="forward,bounce,loop,ranges")
    p.add_argument("--height", type=int, default=None, help="scale the source to this height (e.g. 1080)")
    p.add_argument("--renderer", default=None, help="LIPDUB_RENDERER for this run (default: the settings')")
    p.add_argument("--shots", type=int, choices=(1, 2), default=1, help="2: the second half is another shot")
    args = p.parse_args()
    clip = CORPUS / CLIP
    if not clip.is_file():
        print(f"no corpus clip at {clip}: nothing to measure", file=sys.stderr)
        return
    with tempfile.TemporaryDirectory(prefix="lipdub-bench-") as tmp:
        d = Path(tmp)
        settings = Settings(data_dir=d / "var")
        if args.renderer:
            settings = settings.model_copy(update={"renderer": args.renderer})
        source = d / "source.mp4"
        scale = ["-vf", f"scale=-2:{args.height}:flags=lanczos"] if args.height else []
        if args.shots == 1:
            run_ffmpeg(["-y", "-i", str(clip), "-t", f"{args.seconds:.3f}", *scale, "-c:v", "libx264", "-crf",
                        "16", "-an", str(source)], code=ErrorCode.internal, what="could not cut the source")
        else:
            half, h = args.seconds / 2, args.height or 720
            w = h * 16 // 9
            fit = f"scale=-2:{h}:flags=lanczos,pad={w}:{h}:(ow-iw)/2:0,setsar=1,fps=30"
            graph = (f"[0:v]trim=duration={half:.3f},{fit},setpts=PTS-STARTPTS[a];"
                     f"[1:v]trim=duration={half:.3f},{fit},setpts=PTS-STARTPTS[b];[a][b]concat=n=2:v=1[v]")
            run_ffmpeg(["-y", "-i", str(clip), "-stream_loop", "-1", "-i", str(CORPUS / SECOND_SHOT),
                        "-filter_complex", graph, "-map", "[v]", "-c:v", "libx264", "-crf", "16", str(source)],
                       code=ErrorCode.internal, what="could not join the two shots")
        track = prepare_cached(source, settings)
        long_mouth = analyze_audio(speech(d / "long.wav", args.dub_seconds), d / "long", settings)
        short_mouth = analyze_audio(speech(d / "short.wav", args.seconds), d / "short", settings)
        results: dict[str, dict[str, float | int | None]] = {}
        warm = plan(JobOptions.under(settings, sync_mode="cut_off"), track.summary, len(short_mouth),
                    settings.chunk_seconds)
        render_video(track, short_mouth, warm.timeline, d / "warm.mp4", settings, frames=range(25))  # models
        for mode in args.modes.split(","):
            mouth = short_mouth if mode == "forward" else long_mouth
            sync = {"forward": "cut_off", "ranges": "bounce"}.get(mode, mode)
            job = plan(JobOptions.under(settings, sync_mode=sync, ranges=RANGES if mode == "ranges" else None),
                       track.summary, len(mouth), settings.chunk_seconds)
            timeline = job.timeline
            with track.reader_at(timeline.rate) as reader:
                start = time.perf_counter()
                for t in range(timeline.n_out):
                    reader[timeline.source_index(t)]
                decode_s = time.perf_counter() - start
                frame_reader = getattr(reader, "reader", reader)
                decoders = getattr(frame_reader, "decoders", None)  # older FrameReaders do not count
            start = time.perf_counter()
            render_video(track, mouth, timeline, d / f"{mode}.mp4", settings)
            render_s = time.perf_counter() - start
            results[mode] = {"frames": timeline.n_out, "rate": float(timeline.fps),
                             "decode_fps": round(timeline.n_out / decode_s, 1), "decoders": decoders,
                             "render_fps": round(timeline.n_out / render_s, 1)}
            print(mode, results[mode], file=sys.stderr, flush=True)
        forward = results.get("forward", {}).get("render_fps")
        if forward:
            for mode, row in results.items():
                row["render_vs_forward"] = round(float(row["render_fps"] or 0) / float(forward), 2)
        print(json.dumps({"clip": CLIP, "source_s": args.seconds, "shots": track.n_shots,
                          "width": track.summary.width,
                          "height": track.summary.height, "modes": results}, indent=1))


if __name__ == "__main__":
    main()
