"""How much of the student's gap to the teacher is its look-ahead? (issue 5)

The student answers for frame t having heard audio up to t+4 frames (160 ms); the teacher's Whisper encoder
sees about 1 s on each side. This bench holds the teacher to a look-ahead of A frames: for every frame t of
every corpus clip the encoder runs on a window from 1 s before t to A frames after it, and the head reads its
usual lags (-2..+4 frames, clipped to the window) from that window only. Then the recipe's own teacher fit and
held-out evaluation follow: 5 identity splits, the offsets `lipdub train audio` corrects, the shipped ridge
strength, held-out clips as recorded, Pearson r of predicted vs true mouth opening (head output, no gain or
silence gating). The "full" row is the recipe's pooled teacher on its usual 4-s windows.

One encoder pass per frame and look-ahead (about 4 min of one core for the corpus's 17,500 frames); look-aheads
run in parallel processes, one thread each. Run:
`python -m bench.streaming_teacher [--lookaheads 0 4 8 25] [--jobs 2] [--out var/streaming_teacher.json]`
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import json
import logging
import multiprocessing
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from bench.eval_audio_splits import summary

log = logging.getLogger("bench.streaming_teacher")

CONTEXT_BEFORE = 25  # frames of past audio in every window: the teacher's own margin (1 s)


@dataclass(frozen=True)
class Job:
    lookahead: int
    corpus: Path
    cache: Path


def windowed_features(job: Job) -> dict[str, np.ndarray]:
    """Per clip [T, len(LAGS)·D]: row t is the head's input read from a window that ends `lookahead` frames after t."""
    from lipdub import SAMPLES_PER_FRAME
    from lipdub.audio.teacher import LAGS, WhisperEncoder
    from lipdub.audio.training import load_paired

    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s [look-ahead {job.lookahead}] %(message)s")
    encoder = WhisperEncoder(None, threads=1)
    lags = np.array(LAGS)
    out, t0 = {}, time.monotonic()
    for p in load_paired(job.corpus, job.cache, encoder):
        n = len(p.feats)  # frames with both audio and video
        total = max(n, len(p.samples) // SAMPLES_PER_FRAME)  # the audio may run on past the video
        samples = np.zeros(total * SAMPLES_PER_FRAME, np.float32)
        samples[: len(p.samples)] = p.samples[: len(samples)]
        rows = np.empty((n, len(LAGS) * p.feats.shape[1]), np.float16)
        for t in range(n):
            lo, hi = max(0, t - CONTEXT_BEFORE), min(total, t + job.lookahead + 1)
            block = encoder.encode_frames(samples[lo * SAMPLES_PER_FRAME: hi * SAMPLES_PER_FRAME])
            rows[t] = block[np.clip(t + lags, lo, hi - 1) - lo].reshape(-1)
        out[p.clip.name] = rows
    log.info("%d clips in %.0f s", len(out), time.monotonic() - t0)
    return out


def with_feats(paired: list, feats: dict[str, np.ndarray]) -> list:
    """The same clips (offsets included: they shift the face track, not the features) with other features."""
    return [replace(p, feats=feats[p.clip.name].astype(np.float32)) for p in paired]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=Path("../shared/corpus"))
    parser.add_argument("--cache", type=Path, default=None, help="default: LIPDUB_DATA_DIR/audio_model")
    parser.add_argument("--lookaheads", type=int, nargs="*", default=[0, 4, 8, 25],
                        help="frames of audio after t the teacher may hear")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("var/streaming_teacher.json"))
    args = parser.parse_args()
    if not (args.corpus / "manifest.csv").is_file():
        raise SystemExit(f"no corpus at {args.corpus} (../shared/corpus): nothing to evaluate")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from lipdub.audio.models import card
    from lipdub.audio.splits import identity_splits
    from lipdub.audio.teacher import WhisperEncoder, stack_lags
    from lipdub.audio.training import check_offsets, correct_offsets, evaluate_split, load_paired
    from lipdub.config import get_settings

    cache = args.cache or get_settings().data_dir / "audio_model"
    jobs = [Job(a, args.corpus, cache) for a in args.lookaheads]
    # spawn, not fork: CTranslate2 thread pools do not survive a fork.
    with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
        windowed = dict(zip(args.lookaheads, pool.map(windowed_features, jobs, chunksize=1)))

    encoder = WhisperEncoder(None, threads=1)
    ident = encoder.identity
    paired = load_paired(args.corpus, cache, encoder)
    corrected, _ = correct_offsets(check_offsets(paired, ident, alpha=3.0))  # as `lipdub train audio`
    splits = identity_splits([p.clip for p in paired])
    alpha = card()["teacher"]["alpha"]
    variants = {"full": {p.clip.name: stack_lags(p.feats) for p in paired},
                **{f"lookahead_{a}": feats for a, feats in windowed.items()}}
    rows: dict[str, list[dict]] = {}
    for name, feats in variants.items():
        # The features arrive stacked at the head's lags already, so the head reads lag 0 only.
        results = [evaluate_split(with_feats(corrected, feats), with_feats(paired, feats), sp, ident, alpha,
                                  lags=(0,)) for sp in splits]
        rows[name] = [{"split": r["split"], **c} for r in results for c in r["clips"]]
        log.info("%s: pooled median %.3f", name, summary([c["teacher"] for c in rows[name]])["median"])
    full = {(c["split"], c["clip"]): c["teacher"] for c in rows["full"]}
    out = {"args": {k: str(v) for k, v in vars(args).items()}, "alpha": alpha, "variants": {}}
    for name, clips in rows.items():
        diff = [c["teacher"] - full[(c["split"], c["clip"])] for c in clips]
        out["variants"][name] = {
            "pooled": summary([c["teacher"] for c in clips]),
            "per_split": {sp.name: summary([c["teacher"] for c in clips if c["split"] == sp.name])["median"]
                          for sp in splits},
            "minus_full_per_clip": summary(diff),
            "below_full": int(np.sum(np.array(diff) < 0)),
            "clips": clips,
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1, default=float) + "\n")
    print(json.dumps({k: {m: v[m] for m in ("pooled", "per_split", "minus_full_per_clip", "below_full")}
                      for k, v in out["variants"].items()}, indent=1))


if __name__ == "__main__":
    main()
