"""What the output's x264 encode leaves of the skin (issue 32, goal 2): a renderer can't be sharper than it.

Each held-out evaluation clip (lipdub/eval/eval_clips.json) is cut as `lipdub eval` cuts it (10 s, 25 fps,
near-lossless CRF 12, the source every protocol renders from) and re-encoded, untouched, with each x264
setting below, as the render stage's writer encodes. Per setting: the lower-face skin texture of the
re-encode against the cut (`lipdub.eval.picture.skin_texture`, on the face mesh of every 5th frame: 1 = all
fine detail kept), file size against the default's, and encode frames/s (one run each, this machine).

Run: `python -m bench.bench_output_encoding [--seconds 10] [--only ID ...]`; prints a markdown table. Needs
../shared/corpus (or LIPDUB_CORPUS); exits 0 with a note when absent.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from lipdub.errors import ErrorCode
from lipdub.eval.picture import skin_texture
from lipdub.eval.protocols import load_eval_clips
from lipdub.eval.tracks import prepare_clip
from lipdub.face.mesh import FaceMesh
from lipdub.media.ffmpeg import run_ffmpeg
from lipdub.media.probe import probe
from lipdub.media.video import FrameReader, count_frames

CORPUS = Path(os.environ.get("LIPDUB_CORPUS", Path(__file__).resolve().parents[2] / "shared" / "corpus"))
# (name, x264 options): CRF 18 was the output's default before; CRF 16 + film is now (lipdub.config).
VARIANTS = [("crf 18", ["-crf", "18"]), ("crf 18, film", ["-crf", "18", "-tune", "film"]),
            ("crf 16", ["-crf", "16"]), ("**crf 16, film**", ["-crf", "16", "-tune", "film"]),
            ("crf 14", ["-crf", "14"])]
EVERY = 5  # frames between texture measurements


def frames_of(path: Path) -> FrameReader:
    video = probe(path).video
    assert video is not None
    return FrameReader(path, video.width, video.height, count_frames(path))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--only", nargs="*", default=None, help="clip ids (default: all)")
    args = parser.parse_args(argv)
    if not (CORPUS / "manifest.csv").is_file():
        print(f"output_encoding: no corpus at {CORPUS}; skipped (set LIPDUB_CORPUS)")
        return 0
    clips, _ = load_eval_clips(CORPUS)
    clips = [c for c in clips if not args.only or c.id in set(args.only)]
    texture: dict[str, list[float]] = {name: [] for name, _ in VARIANTS}
    size: dict[str, list[float]] = {name: [] for name, _ in VARIANTS}
    speed: dict[str, list[float]] = {name: [] for name, _ in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="lipdub-enc-") as tmp, FaceMesh() as mesh:
        for clip in clips:
            cut, _ = prepare_clip(clip.video, Path(tmp) / clip.id, args.seconds, clip.audio)
            with frames_of(cut) as source:
                n = source.n_frames
                picks = range(0, n, EVERY)
                src = {i: source[i] for i in picks}
            faces = {i: found[0][:, :2] for i in picks if (found := mesh(src[i]))}
            if not faces:
                print(f"{clip.id}: no face found; left out", file=sys.stderr)
                continue
            base_bytes = None
            for name, options in VARIANTS:
                out = Path(tmp) / clip.id / "reencoded.mp4"
                t0 = time.perf_counter()
                run_ffmpeg(["-y", "-i", str(cut), "-c:v", "libx264", "-preset", "veryfast", *options,
                            "-pix_fmt", "yuv420p", str(out)], code=ErrorCode.internal,
                           what=f"{clip.id}: could not re-encode")
                speed[name].append(n / (time.perf_counter() - t0))
                with frames_of(out) as encoded:
                    pairs = [skin_texture(encoded[i], src[i], p, p) for i, p in faces.items()]
                kept = [(o, s) for o, s in pairs if np.isfinite(o) and np.isfinite(s)]
                texture[name].append(sum(o for o, _ in kept) / max(sum(s for _, s in kept), 1e-9))
                base_bytes = base_bytes or out.stat().st_size
                size[name].append(out.stat().st_size / base_bytes)
            print(f"{clip.id}: " + ", ".join(f"{n} {texture[n][-1]:.2f}" for n, _ in VARIANTS), file=sys.stderr)
    print(f"{len(texture[VARIANTS[0][0]])} clips, {args.seconds:g} s each; medians over clips\n")
    print("| x264 (preset veryfast) | skin texture re-encode / source | min over clips | size / CRF 18 | decode + encode fps |")
    print("|---|---|---|---|---|")
    for name, _ in VARIANTS:
        print(f"| {name} | {statistics.median(texture[name]):.2f} | {min(texture[name]):.2f} | "
              f"{statistics.median(size[name]):.2f}× | {statistics.median(speed[name]):.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
