"""The render stage on a GPU (issue 31, goal 5): frames/s at 1080p per generator batch size, peak GPU memory,
and how far its frames are from the CPU path's.

A GPU machine may lack MediaPipe (and the corpus), so the work is split in two:

- `python -m bench.bench_gpu --pack DIR` (here: MediaPipe, ../shared/corpus): prepares the corpus's 720p
  Wav2Lip clip scaled to 1080p (`--seconds`, 25 fps) and a `--dub-seconds` espeak-ng dub's mouth track, and
  writes them to DIR (the track directory with its video re-encoded at CRF 16 to stay small, mouth.npz);
- `python -m bench.bench_gpu --from DIR` (on the GPU): the whole render stage (`render_video`: decode,
  warp, DINet fp16, paste-back, x264) of the bounced dub on CUDA for each of `--batches`, then the generator
  alone, then the first `--compare` frames on the CPU: the largest mean and 99th-percentile difference
  between the two outputs. Prints JSON.

Without CUDA `--from` says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from lipdub.audio.mouth import MouthTrack
from lipdub.config import Device, Settings
from lipdub.errors import ErrorCode
from lipdub.jobs import JobOptions
from lipdub.media.ffmpeg import run_ffmpeg
from lipdub.media.video import FrameReader
from lipdub.plan import plan
from lipdub.prep.track import SourceTrack
from lipdub.render.video import render_video


def pack(out: Path, seconds: float, dub_seconds: float) -> None:
    # lazy: MediaPipe (prep) and the audio model, which the GPU side never needs
    from bench.bench_timeline import CLIP, CORPUS, speech
    from lipdub.audio.analyze import analyze_audio
    from lipdub.prep.cache import prepare_cached

    clip = CORPUS / CLIP
    if not clip.is_file():
        sys.exit(f"no corpus clip at {clip}: nothing to pack")
    with tempfile.TemporaryDirectory(prefix="lipdub-bench-") as tmp:
        d = Path(tmp)
        source = d / "source.mp4"
        run_ffmpeg(["-y", "-i", str(clip), "-t", f"{seconds:.3f}", "-vf", "fps=25,scale=-2:1080:flags=lanczos",
                    "-c:v", "libx264", "-crf", "16", "-an", str(source)], code=ErrorCode.internal,
                   what="could not cut the source")
        settings = Settings(data_dir=d / "var")
        track = prepare_cached(source, settings)
        mouth = analyze_audio(speech(d / "dub.wav", dub_seconds), d / "audio", settings)
        out.mkdir(parents=True, exist_ok=True)
        for name in ("track.json", "track.npz"):
            shutil.copy(track.dir / name, out / name)
        video = track.video.name
        # CRF 16 with a keyframe a second, as prep's own copy has (the reader's blocks), at a fraction of its size.
        run_ffmpeg(["-y", "-i", str(track.video), "-c:v", "libx264", "-preset", "veryfast", "-crf", "16",
                    "-g", "25", "-pix_fmt", "yuv420p", str(out / video)], code=ErrorCode.internal,
                   what="could not re-encode the packed video")
        mouth.save(out / "mouth.npz")
    size = sum(p.stat().st_size for p in out.iterdir()) / 1e6
    print(f"packed {out} ({size:.1f} MB): run `python -m bench.bench_gpu --from {out}` on the GPU", file=sys.stderr)


def measure(packed: Path, batches: list[int], compare: int, device: Device = "cuda",
            frames: int | None = None) -> dict[str, object]:
    """`device` cpu runs the same steps without a GPU (a check of this script, not a measurement)."""
    import torch

    from lipdub.render import generic_weights
    from lipdub.render.dinet import SOURCE_CHANNELS
    from lipdub.render.dinet_renderer import DinetRenderer

    track = SourceTrack.load(packed)
    mouth = MouthTrack.load(packed / "mouth.npz")
    settings = Settings(data_dir=packed / "var", device=device)
    cuda = device == "cuda"
    job = plan(JobOptions.under(settings, sync_mode="bounce"), track.summary, len(mouth), settings.chunk_seconds)
    timeline = job.timeline
    view = track.for_shot(0)
    weights = generic_weights(settings)
    todo = range(min(frames or timeline.n_out, timeline.n_out))
    results: dict[str, object] = {"gpu": torch.cuda.get_device_name() if cuda else None,
                                  "width": track.summary.width,
                                  "height": track.summary.height, "frames": len(todo)}
    with tempfile.TemporaryDirectory(prefix="lipdub-bench-") as tmp:
        d = Path(tmp)
        stage = {}
        for batch in batches:
            renderer = DinetRenderer.for_track(view, weights, device, batch=batch)
            render_video(track, mouth, timeline, d / "warm.mp4", settings, frames=range(2 * batch),
                         renderer=renderer)
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            render_video(track, mouth, timeline, d / f"stage{batch}.mp4", settings, frames=todo, renderer=renderer)
            seconds = time.perf_counter() - start
            stage[batch] = {"fps": round(len(todo) / seconds, 1),
                            "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20) if cuda else None}
            print("render stage, batch", batch, stage[batch], file=sys.stderr, flush=True)
        results["render_stage"] = stage
        # The generator alone: what the GPU could do if the CPU halves kept up.
        renderer = DinetRenderer.for_track(view, weights, device, batch=max(batches))
        sync = torch.cuda.synchronize if cuda else (lambda: None)
        generator = {}
        for batch in batches:
            src = torch.rand(batch, SOURCE_CHANNELS, renderer.size, renderer.size, device=device)
            with torch.no_grad(), torch.autocast(device, dtype=torch.float16, enabled=cuda):
                for _ in range(3):
                    renderer.model.generate(src, ref_feat=renderer.ref_feat)
                sync()
                start = time.perf_counter()
                for _ in range(20):
                    renderer.model.generate(src, ref_feat=renderer.ref_feat)
                sync()
            generator[batch] = round(20 * batch / (time.perf_counter() - start), 1)
        results["generator_fps"] = generator
        cpu = Settings(data_dir=packed / "var", device="cpu")
        compare = min(compare, len(todo))
        render_video(track, mouth, timeline, d / "cpu.mp4", cpu, frames=range(compare))  # fresh renderer, CPU
        s = track.summary
        worst_mean, worst_p99 = 0.0, 0.0
        with FrameReader(d / "cpu.mp4", s.width, s.height, compare) as a, \
                FrameReader(d / f"stage{batches[0]}.mp4", s.width, s.height, len(todo)) as b:
            for t in range(compare):
                diff = np.abs(a[t].astype(np.int16) - b[t].astype(np.int16))
                worst_mean = max(worst_mean, float(diff.mean()))
                worst_p99 = max(worst_p99, float(np.percentile(diff, 99)))
        results["cpu_vs_cuda"] = {"frames": compare, "worst_mean_abs": round(worst_mean, 3),
                                  "worst_p99_abs": worst_p99}
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--pack", type=Path, help="prepare the inputs into this directory (needs MediaPipe)")
    where.add_argument("--from", dest="packed", type=Path, help="measure on CUDA from a packed directory")
    p.add_argument("--seconds", type=float, default=10.0, help="source length to pack")
    p.add_argument("--dub-seconds", type=float, default=60.0, help="dub length to pack")
    p.add_argument("--batches", default="4,8,16,32", help="generator batch sizes to time")
    p.add_argument("--compare", type=int, default=50, help="frames rendered on the CPU too, to compare")
    p.add_argument("--frames", type=int, default=None, help="render only the first N output frames")
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                   help="cpu: run the steps without a GPU, to check the script")
    args = p.parse_args()
    if args.pack:
        pack(args.pack, args.seconds, args.dub_seconds)
        return
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: nothing to measure", file=sys.stderr)
        return
    print(json.dumps(measure(args.packed, [int(b) for b in args.batches.split(",")], args.compare, args.device,
                             args.frames), indent=1))


if __name__ == "__main__":
    main()
