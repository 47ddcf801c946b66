"""`lipdub train audio`: the full recipe, corpus → shipped weights + card + held-out metrics.

1. Paired corpus clips (face mesh cached under the data dir) and Whisper features.
2. Audio/video offset check per clip (cross-validated teacher), corrected or dropped for training only.
3. Ridge strength by identity-grouped cross-validation inside split 0's training identities.
4. Teacher metrics on split 0 and random identity splits (pooled), with the energy baseline.
5. The shipped teacher: basis + head fit on split 0's training identities.
6. Student distilled from it on corpus + speech/ + espeak-ng audio with augmentation; evaluated on split 0.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from lipdub import __version__
from lipdub.audio.distill import (
    Source,
    TrainConfig,
    distill,
    distillation_audio,
    label_sources,
    student_loss_weights,
)
from lipdub.audio.features import fbank
from lipdub.audio.models import (
    BASIS_FILE,
    CARD_FILE,
    STUDENT_FILE,
    TEACHER_FILE,
    CoeffModel,
    LearnedMouthModel,
)
from lipdub.audio.mouth import EnergyMouthModel
from lipdub.audio.shape import MouthBasis
from lipdub.audio.splits import held_out_identities, identity_splits
from lipdub.audio.student import StudentModel
from lipdub.audio.student_recipe import StudentRecipe
from lipdub.audio.teacher import RidgeHead, TeacherModel, WhisperEncoder
from lipdub.audio.training import (
    check_offsets,
    correct_offsets,
    energy_opening,
    evaluate_split,
    load_paired,
    median_iqr,
    pearson,
    select_alpha,
    silence_ratio,
)

log = logging.getLogger(__name__)

ALPHAS = (1.0, 3.0, 10.0)


def summarise(values: list[float]) -> dict:
    med, q25, q75 = median_iqr(values)
    return {"median": round(med, 3), "q25": round(q25, 3), "q75": round(q75, 3),
            "n": int(np.sum(~np.isnan(values)))}


# The per-clip columns `held_out_metrics` returns, in the order reports list them.
HELD_OUT_COLUMNS = ("teacher", "student", "energy", "teacher_ungated", "student_ungated")


def summarise_rows(rows: list[dict]) -> dict:
    """Median [q25, q75] of each held-out column over per-clip rows."""
    return {name: summarise([r[name] for r in rows]) for name in HELD_OUT_COLUMNS}


def clip_rows(rows: list[dict]) -> list[dict]:
    """Per-clip held-out rows as the card keeps them (3 decimals), whichever command wrote the card."""
    return [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()} for r in rows]


def distill_student(corpus: Path, clips: list[tuple[str, np.ndarray]], teacher: CoeffModel, basis: MouthBasis,
                    recipe: StudentRecipe, seed: int, threads: int, log_dir: Path | None = None,
                    speech: list[Path] | None = None) -> tuple[StudentModel, list[Source], dict]:
    """Step 6 for one split: the training identities' clip audio (`clips`), `speech/` (or the `speech` files
    given) and espeak-ng utterances, labelled by `teacher` on clean audio, and the student distilled from them
    by `recipe`."""
    audio = distillation_audio(corpus, clips, recipe.synthetic, seed, speech)
    sources = label_sources(audio, teacher, basis.rest)
    log.info("distillation sources: %d (%.1f min)", len(sources), sum(len(s.samples) for s in sources) / 16000 / 60)
    cfg = TrainConfig(max_steps=recipe.steps, seed=seed, threads=threads, dropout=recipe.dropout,
                      time_masks=recipe.spec_masks, freq_masks=recipe.spec_masks, lookahead=recipe.lookahead,
                      opening_corr=recipe.opening_corr, cepstra=recipe.cepstra)
    net, info = distill(sources, student_loss_weights(basis), cfg, recipe.augmented, log_dir,
                        opening=basis.opening_direction())
    spec = {"time_masks": cfg.time_masks, "time_mask_rows": cfg.time_mask_rows,
            "freq_masks": cfg.freq_masks, "freq_mask_bins": cfg.freq_mask_bins}
    return StudentModel(net, cfg.lookahead, cfg.cepstra), sources, {**info, "spec_augment": spec}


def run(corpus: Path, cache: Path, weights: Path, runs: Path, encoder_path: Path | None = None,
        recipe: StudentRecipe = StudentRecipe(), seed: int = 0, threads: int = 1,
        alphas: tuple[float, ...] = ALPHAS, n_random_splits: int = 4) -> dict:
    t0 = time.monotonic()
    np.random.seed(seed)
    torch.manual_seed(seed)
    encoder = WhisperEncoder(encoder_path, threads=threads)
    ident = encoder.identity
    paired = load_paired(corpus, cache, encoder)
    log.info("%d paired clips, %d frames (%.0f s)", len(paired), sum(len(p.opening) for p in paired),
             time.monotonic() - t0)
    splits = identity_splits([p.clip for p in paired], n_random=n_random_splits, seed=seed)
    split0 = splits[0]

    # 2. offsets: every clip is checked by a teacher that never saw its identity.
    checks = check_offsets(paired, ident, alpha=3.0, seed=seed)
    corrected, offsets = correct_offsets(checks)
    log.info("offsets: %s", [o for o in offsets if o["action"] != "keep"])

    # 3. ridge strength, inside split 0's training identities only.
    train0 = [p for p in corrected if not split0.is_test(p.clip)]
    alpha, alpha_scores, gain = select_alpha(train0, ident, alphas, seed=seed)

    # 4. held-out metrics: train on corrected clips, test on clips as recorded.
    results = [evaluate_split(corrected, paired, sp, ident, alpha) for sp in splits]
    teacher0 = results[0]["fit"]

    # 5. the shipped teacher = split 0's fit.
    head = teacher0.head
    basis = teacher0.basis
    # One gain for all components (the opening component's): per-component gains would also amplify the
    # least predictable components most, which adds noise to the lip shape.
    basis.gain = np.full(basis.n_components, gain[0], np.float32)
    weights.mkdir(parents=True, exist_ok=True)
    basis.save(weights / BASIS_FILE)
    teacher = TeacherModel(head, encoder)
    head.card = {"encoder": asdict(ident), "alpha": alpha}
    head.save(weights / TEACHER_FILE)

    # 6. the student, distilled from the shipped teacher.
    k = basis.n_components
    run_dir = runs / f"audio-student-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    student, sources, train_info = distill_student(
        corpus, [(p.clip.name, p.samples) for p in paired if not split0.is_test(p.clip)], teacher, basis, recipe,
        seed, threads, run_dir)
    student.save(weights / STUDENT_FILE)

    # Held-out evaluation of all three on split 0, plus silence behaviour (gated as shipped, and raw).
    test0 = [p for p in paired if split0.is_test(p.clip)]
    rows, silence = held_out_metrics(test0, teacher, student, basis)

    pooled_teacher = [c["teacher"] for r in results for c in r["clips"]]
    pooled_energy = [c["energy"] for r in results for c in r["clips"]]
    metrics = {
        "split0": summarise_rows(rows),
        "pooled_teacher_fit_per_split": {"teacher": summarise(pooled_teacher), "energy": summarise(pooled_energy),
                                         "splits": [r["split"] for r in results]},
        "per_split": {r["split"]: {"teacher": summarise([c["teacher"] for c in r["clips"]]),
                                   "energy": summarise([c["energy"] for c in r["clips"]])} for r in results},
        "silence_opening_ratio": silence,
        "split0_clips": clip_rows(rows),
    }
    card = {
        "version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "seed": seed,
        "representation": {"components": k, "explained_variance": [round(float(v), 4) for v in basis.explained],
                           "points": "MediaPipe lips (40) + lower jaw (13), canonical frontal head",
                           "rest_opening": round(basis.rest_opening(), 4),
                           "amplitude_gain": round(float(gain[0]), 3),
                           "cv_gain_per_component": [round(float(g), 3) for g in gain]},
        "teacher": {"encoder": asdict(ident), "encoder_path_hint": str(encoder.path.name), "alpha": alpha,
                    "alpha_cv": {str(a): round(s, 3) for a, s in alpha_scores.items()},
                    "lags": list(head.lags), "file": TEACHER_FILE},
        "student": {"architecture": "DH_live Audio2Feature (pair-stacking, MLP 160-80, LSTM 2x192, MLP head)",
                    "lookahead_frames": student.lookahead, "file": STUDENT_FILE,
                    "sources": {g: sum(1 for s in sources if s.group == g) for g in ("corpus", "speech", "synthetic")},
                    "source_minutes": {g: round(sum(len(s.samples) for s in sources if s.group == g) / 16000 / 60, 1)
                                       for g in ("corpus", "speech", "synthetic")},
                    "augmented_copies": recipe.augmented, "lstm_dropout": recipe.dropout,
                    "opening_corr_loss": recipe.opening_corr, "cepstra": student.cepstra,
                    **{k_: v for k_, v in train_info.items() if k_ != "history"}},
        "data": {"corpus_clips": len(paired), "train_clips_split0": len(train0),
                 "held_out_identities": sorted(split0.held_out),
                 "offsets": [o for o in offsets if o["action"] != "keep"]},
        "metrics": metrics,
        "basis_file": BASIS_FILE,
    }
    (weights / CARD_FILE).write_text(json.dumps(card, indent=1) + "\n")
    report = {"card": card, "metrics": metrics, "offsets": offsets, "history": train_info["history"],
              "seconds": round(time.monotonic() - t0)}
    (cache / "report.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    return report


def held_out_metrics(test: list, teacher: TeacherModel, student: StudentModel, basis) -> tuple[list[dict], dict]:
    """Per-clip r of predicted vs true mouth opening (as shipped: gain + silence gating; and ungated) for
    teacher, student and the energy baseline, and each one's silence opening ratio."""
    vad = EnergyMouthModel()
    rows: list[dict] = []
    tracks: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {
        k: [] for k in ("teacher", "student", "energy", "teacher_raw", "student_raw")}
    models = {"teacher": LearnedMouthModel(teacher, basis), "student": LearnedMouthModel(student, basis)}
    raw = {"teacher": LearnedMouthModel(teacher, basis, gate=False),
           "student": LearnedMouthModel(student, basis, gate=False)}
    for p in test:
        n = len(p.opening)
        row = {"clip": p.clip.name, "frames": int(p.valid.sum())}
        for name in ("teacher", "student"):
            tr = models[name](p.samples)
            rt = raw[name].track_from_coeffs(models[name].model.coeffs(p.samples), tr.speech)
            assert tr.coeffs is not None and rt.coeffs is not None  # learned models always give them
            row[name] = pearson(basis.opening(tr.coeffs[:n]), p.opening[: len(tr.coeffs)])
            row[f"{name}_ungated"] = pearson(basis.opening(rt.coeffs[:n]), p.opening[: len(rt.coeffs)])
            tracks[name].append((tr.opening, tr.speech))
            tracks[f"{name}_raw"].append((rt.opening, rt.speech))
        row["energy"] = pearson(energy_opening(p), p.opening)
        et = vad(fbank(p.samples))
        tracks["energy"].append((et.opening, et.speech))
        rows.append(row)
    return rows, {name: round(silence_ratio(t), 3) for name, t in tracks.items()}


def reevaluate(corpus: Path, cache: Path, weights: Path, threads: int = 1) -> dict:
    """Held-out split-0 metrics of the weights in `weights` as the audio stage runs them now (post-processing
    included); the card's split-0 metrics and silence ratios are replaced with them."""
    encoder = WhisperEncoder(None, threads=threads)
    held = held_out_identities()
    test = [p for p in load_paired(corpus, cache, encoder) if p.clip.identity in held]
    basis = MouthBasis.load(weights / BASIS_FILE)
    teacher = TeacherModel(RidgeHead.load(weights / TEACHER_FILE), encoder)
    student = StudentModel.load(weights / STUDENT_FILE)
    rows, silence = held_out_metrics(test, teacher, student, basis)
    card = json.loads((weights / CARD_FILE).read_text())
    card["metrics"]["split0"] = summarise_rows(rows)
    card["metrics"]["silence_opening_ratio"] = silence
    card["metrics"]["split0_clips"] = clip_rows(rows)
    card["evaluated"] = datetime.now(UTC).isoformat(timespec="seconds")
    (weights / CARD_FILE).write_text(json.dumps(card, indent=1) + "\n")
    return card["metrics"]
