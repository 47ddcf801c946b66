"""Teacher and student on held-out identities, pooled over identity splits (issue 5's target metric).

For each split (split 0 = the fixed held-out identities, then random splits of 10 identities, as
`lipdub train audio`), a teacher is fit on the split's training identities only (offsets corrected, the
recipe's ridge strength) and a student is distilled from it by the recipe's own steps (`distill`): the
training identities' clip audio, `speech/` and espeak-ng utterances, labelled by that teacher. The student
trains for a fixed number of steps rather than minutes, so the result does not depend on the machine's load.
Both are scored on the split's held-out clips as recorded: Pearson r of predicted vs true mouth opening, as
the audio stage runs them (gain + silence gating) and ungated. Medians are pooled over all clip evaluations.

Splits run in parallel processes, one thread each. Run:
`python -m bench.eval_audio_splits [--steps 3000] [--jobs 2] [--spec-masks 2] [--lookahead 4]
[--opening-corr 0] [--cepstra 0] [--real-fraction 1] [--out var/audio_splits.json]`
(about 12 min of one core per split at 3,000 steps).
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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lipdub.audio.student_recipe import StudentRecipe

log = logging.getLogger("bench.eval_audio_splits")


@dataclass(frozen=True)
class Job:
    split: int
    corpus: Path
    cache: Path
    recipe: StudentRecipe
    seed: int
    real_fraction: float = 1.0


def run_split(job: Job) -> dict:
    """One split end to end in a fresh process: teacher fit, labels, student, held-out scores."""
    import torch

    from lipdub.audio.distill import speech_files
    from lipdub.audio.models import card
    from lipdub.audio.recipe import distill_student, held_out_metrics
    from lipdub.audio.splits import identity_splits
    from lipdub.audio.teacher import TeacherModel, WhisperEncoder
    from lipdub.audio.training import check_offsets, correct_offsets, fit_teacher, load_paired

    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s [split {job.split}] %(message)s")
    torch.set_num_threads(1)
    t0 = time.monotonic()
    np.random.seed(job.seed)
    torch.manual_seed(job.seed)
    encoder = WhisperEncoder(None, threads=1)
    ident = encoder.identity
    paired = load_paired(job.corpus, job.cache, encoder)
    split = identity_splits([p.clip for p in paired], seed=job.seed)[job.split]
    corrected, _ = correct_offsets(check_offsets(paired, ident, alpha=3.0, seed=job.seed))
    shipped = card()
    fit = fit_teacher([p for p in corrected if not split.is_test(p.clip)], ident, shipped["teacher"]["alpha"])
    basis = fit.basis
    basis.gain = np.full(basis.n_components, shipped["representation"]["amplitude_gain"], np.float32)
    teacher = TeacherModel(fit.head, encoder)
    train = [p for p in paired if not split.is_test(p.clip)]
    speech = speech_files(job.corpus)
    if job.real_fraction < 1.0:
        train, speech = real_speakers(train, speech, job.real_fraction, job.seed + job.split)
    student, sources, info = distill_student(
        job.corpus, [(p.clip.name, p.samples) for p in train], teacher, basis, job.recipe, job.seed, threads=1,
        speech=speech)
    test = [p for p in paired if split.is_test(p.clip)]
    rows, silence = held_out_metrics(test, teacher, student, basis)
    log.info("done at %.0f s", time.monotonic() - t0)
    return {"split": split.name, "held_out": sorted(split.held_out), "clips": rows, "silence": silence,
            "steps": info["steps"], "best_step": info["best_step"], "seconds": round(time.monotonic() - t0),
            "real_speakers": len({p.clip.identity for p in train}) + len({speaker_of(s) for s in speech}),
            "real_minutes": round(sum(len(s.samples) for s in sources if s.group != "synthetic") / 16000 / 60, 1)}


def speaker_of(path: Path) -> str:
    """`speech/` files carry no speaker label: files from one source repository count as one speaker."""
    return path.name.split("__")[0]


def real_speakers(train: list, speech: list[Path], fraction: float, seed: int) -> tuple[list, list[Path]]:
    """The real speech of a random `fraction` of the speakers (the learning curve of issue 5): corpus clips
    grouped by identity, `speech/` files by source repository; espeak-ng utterances are left as they are."""
    rng = np.random.default_rng(seed)
    speakers = sorted({"clip:" + p.clip.identity for p in train} | {"speech:" + speaker_of(s) for s in speech})
    kept = set(rng.choice(speakers, max(1, round(fraction * len(speakers))), replace=False))
    return ([p for p in train if "clip:" + p.clip.identity in kept],
            [s for s in speech if "speech:" + speaker_of(s) in kept])


def summary(values: list[float]) -> dict:
    """The recipe's median [q25, q75] summary, plus the mean (a median of 12 clips moves with one clip)."""
    from lipdub.audio.recipe import summarise

    return {**summarise(values), "mean": round(float(np.nanmean(values)), 3)}


def report(results: list[dict]) -> dict:
    from lipdub.audio.recipe import HELD_OUT_COLUMNS as MODELS

    clips = [c for r in results for c in r["clips"]]
    gap = [c["teacher"] - c["student"] for c in clips if not np.isnan(c["teacher"] - c["student"])]
    return {"pooled": {m: summary([c[m] for c in clips]) for m in MODELS},
            "per_split": {r["split"]: {m: summary([c[m] for c in r["clips"]])["median"] for m in MODELS}
                          for r in results},
            "teacher_minus_student_per_clip": summary(gap)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=Path("../shared/corpus"))
    parser.add_argument("--cache", type=Path, default=None, help="default: LIPDUB_DATA_DIR/audio_model")
    parser.add_argument("--splits", type=int, nargs="*", default=[0, 1, 2, 3, 4])
    recipe = StudentRecipe()  # the shipped student's choices
    parser.add_argument("--steps", type=int, default=recipe.steps)
    parser.add_argument("--spec-masks", type=int, default=recipe.spec_masks)
    parser.add_argument("--synthetic", type=int, default=recipe.synthetic)
    parser.add_argument("--augmented", type=int, default=recipe.augmented)
    parser.add_argument("--dropout", type=float, default=recipe.dropout)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lookahead", type=int, default=recipe.lookahead, help="student look-ahead in video frames")
    parser.add_argument("--opening-corr", type=float, default=recipe.opening_corr,
                        help="opening-correlation loss weight")
    parser.add_argument("--cepstra", type=int, default=recipe.cepstra,
                        help="fbank rows liftered to this many cepstral coefficients (0 = off)")
    parser.add_argument("--real-fraction", type=float, default=1.0,
                        help="distil on the real speech of this fraction of the speakers (learning curve)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("var/audio_splits.json"))
    args = parser.parse_args()
    if not (args.corpus / "manifest.csv").is_file():
        raise SystemExit(f"no corpus at {args.corpus} (../shared/corpus): nothing to evaluate")
    from lipdub.config import get_settings

    cache = args.cache or get_settings().data_dir / "audio_model"
    recipe = StudentRecipe(steps=args.steps, synthetic=args.synthetic, augmented=args.augmented,
                           dropout=args.dropout, spec_masks=args.spec_masks, lookahead=args.lookahead,
                           opening_corr=args.opening_corr, cepstra=args.cepstra)
    jobs = [Job(s, args.corpus, cache, recipe, args.seed, args.real_fraction) for s in args.splits]
    # spawn, not fork: CTranslate2 and torch thread pools do not survive a fork.
    with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
        results = sorted(pool.map(run_split, jobs, chunksize=1), key=lambda r: r["split"])
    out = {"args": {k: str(v) for k, v in vars(args).items()}, **report(results), "splits": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1, default=float) + "\n")
    print(json.dumps({k: out[k] for k in ("pooled", "per_split", "teacher_minus_student_per_clip")}, indent=1))


if __name__ == "__main__":
    main()
