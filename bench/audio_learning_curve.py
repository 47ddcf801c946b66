"""How the student's held-out accuracy grows with the real speech it is distilled on (issue 5).

Every variant of the student tried so far stays 0.12-0.15 below the teacher pooled (BENCHMARKS.md); synthetic
voices did not close it. This asks what more real speakers would buy: `bench.eval_audio_splits` is run with
the real speech (training identities' clip audio and `speech/`) of a random fraction of the speakers, the
espeak-ng utterances and everything else as the recipe has them, and the teacher of each split unchanged. The
slope of student r against log2(real minutes) says roughly how much more real speech the 0.05 target needs.

Run: `python -m bench.audio_learning_curve [--fractions 1 0.5 0.25] [--dir var/lc]` (about 40 min of 2 cores
per fraction; a fraction whose JSON is already in --dir is read, not re-run). Writes `learning_curve.png`
(in BENCHMARKS.md as docs/img/audio_learning_curve.png) and `learning_curve.json` to --dir.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np


def run(fraction: float, out: Path) -> dict:
    if not out.is_file():
        subprocess.run([sys.executable, "-m", "bench.eval_audio_splits", "--jobs", "2",
                        "--real-fraction", str(fraction), "--out", str(out)], check=True)
    return json.loads(out.read_text())


def clip_scores(result: dict, model: str) -> dict[tuple[str, str], float]:
    return {(s["split"], c["clip"]): c[model] for s in result["splits"] for c in s["clips"]
            if not np.isnan(c[model])}


def point(fraction: float, result: dict, full: dict) -> dict:
    """One fraction: real minutes and speakers (summed over splits), pooled medians, and the student paired by
    clip with the full-data student (the pooled median of 61 clips moves by a few hundredths by chance)."""
    student, base = clip_scores(result, "student"), clip_scores(full, "student")
    diff = np.array([student[k] - base[k] for k in student.keys() & base.keys()])
    teacher = clip_scores(result, "teacher")
    agreement_gap = np.array([teacher[k] - student[k] for k in teacher.keys() & student.keys()])
    return {"fraction": fraction,
            "real_minutes_per_split": round(float(np.mean([s["real_minutes"] for s in result["splits"]])), 1),
            "real_speakers_per_split": round(float(np.mean([s["real_speakers"] for s in result["splits"]])), 1),
            "teacher": result["pooled"]["teacher"]["median"], "teacher_mean": result["pooled"]["teacher"]["mean"],
            "student": result["pooled"]["student"]["median"],
            "student_mean": result["pooled"]["student"]["mean"],
            "teacher_minus_student_mean": round(float(agreement_gap.mean()), 3),
            "paired_vs_full": {"mean": round(float(diff.mean()), 3),
                               "stderr": round(float(diff.std(ddof=1) / np.sqrt(len(diff))), 3) if len(diff) > 1
                               else None, "better": int((diff > 0).sum()), "clips": len(diff)}}


def plot(points: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [p["real_minutes_per_split"] for p in points]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot(x, [p["teacher"] for p in points], "s--", color="tab:blue", label="teacher (fixed per split), median")
    ax.plot(x, [p["teacher_mean"] for p in points], "s:", color="tab:blue", alpha=0.6, label="teacher, mean")
    ax.plot(x, [p["student"] for p in points], "o-", color="tab:orange", label="student, pooled median")
    ax.plot(x, [p["student_mean"] for p in points], "o:", color="tab:orange", alpha=0.6, label="student, mean")
    target = np.mean([p["teacher"] for p in points]) - 0.05
    ax.axhline(target, color="tab:green", lw=0.8, label="target: teacher − 0.05")
    for p in points:
        ax.annotate(f"{p['real_speakers_per_split']:.0f} speakers", (p["real_minutes_per_split"], p["student"]),
                    textcoords="offset points", xytext=(4, -12), fontsize=7)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("real speech in the distillation data (min per split, log scale)")
    ax.set_ylabel("held-out r, predicted vs true opening")
    ax.set_title("Student vs real speech (5 identity splits, 61 clips)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fractions", type=float, nargs="+", default=[1.0, 0.5, 0.25])
    parser.add_argument("--dir", type=Path, default=Path("var/lc"))
    args = parser.parse_args()
    results = {f: run(f, args.dir / f"real_{f}.json") for f in sorted(args.fractions, reverse=True)}
    full = results[max(results)]
    points = [point(f, r, full) for f, r in results.items()]
    x = np.log2([p["real_minutes_per_split"] for p in points])
    slope = float(np.polyfit(x, [p["student"] for p in points], 1)[0]) if len(points) > 1 else float("nan")
    slope_mean = float(np.polyfit(x, [p["student_mean"] for p in points], 1)[0]) if len(points) > 1 else float("nan")
    out = {"points": points, "student_per_doubling": round(slope, 3), "student_mean_per_doubling": round(slope_mean, 3)}
    (args.dir / "learning_curve.json").write_text(json.dumps(out, indent=1) + "\n")
    plot(points, args.dir / "learning_curve.png")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
