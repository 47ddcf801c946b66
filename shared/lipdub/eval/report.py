"""Evaluation reports: report.json (everything), report.md (per-clip tables and medians), plots/*.png,
sheets/<clip>.png (mouth crops, source above output, per protocol: lipdub.eval.sheets)."""

from __future__ import annotations

import json
import math
import platform
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lipdub import __version__
from lipdub.eval.results import ClipResult, EvalOptions, Signals
from lipdub.eval.sheets import write_sheet

if TYPE_CHECKING:  # matplotlib is imported only when a report is drawn
    from matplotlib.axes import Axes

# (key, label, format, what "better" means) for the summary table.
SUMMARY_METRICS: list[tuple[str, str, str, str]] = [
    ("sync_offset", "AV offset (frames, + = video lags)", "{:+.2f}", "near ground truth"),
    ("sync_offset_vs_gt", "offset − ground-truth offset (frames)", "{:+.2f}", "0"),
    ("sync_peak", "sync peak r", "{:.3f}", "higher"),
    ("sync_r_near_zero", "best r within ±2 frames", "{:.3f}", "higher"),
    ("sync_confidence", "sync confidence (peak − median r)", "{:.3f}", "higher"),
    ("silence_ratio", "opening in silence / in speech", "{:.2f}", "lower (real speech ≈ GT)"),
    ("lmd_lips", "LMD lips (×100/IOD)", "{:.2f}", "lower"),
    ("lmd_jaw", "LMD jaw (×100/IOD)", "{:.2f}", "lower"),
    ("moc", "mouth-opening correlation with GT", "{:.3f}", "higher"),
    ("width_corr", "mouth-width correlation with GT", "{:.3f}", "higher"),
    ("audio_moc", "the audio model's own opening correlation with GT", "{:.3f}", "renderer's MOC within 0.05"),
    ("mouth_psnr", "mouth PSNR vs GT (dB)", "{:.2f}", "higher"),
    ("mouth_ssim", "mouth SSIM vs GT", "{:.3f}", "higher"),
    ("outside_psnr", "outside-face PSNR vs source (dB)", "{:.2f}", "higher"),
    ("outside_ssim", "outside-face SSIM vs source", "{:.4f}", "higher"),
    ("sharpness_ratio", "mouth sharpness output / source", "{:.2f}", "≈1"),
    ("lip_delta_e", "lip colour ΔE2000 output vs source (GT: same lips 2 s apart)", "{:.2f}", "≤ GT"),
    ("lip_chroma_ratio", "lip chroma output / source", "{:.3f}", "≈1 (≥ 0.98)"),
    ("skin_texture_ratio", "lower-face skin texture output / source", "{:.2f}", "≈1 (≥ 0.95)"),
    ("lip_edge_ratio", "lip-contour edge energy output / source", "{:.2f}", "≈1 (≤ 1.10)"),
    ("teeth_fraction", "teeth: bright share of the open inner mouth", "{:.3f}", "≈ source's"),
    ("teeth_fraction_source", "teeth in the source's own open frames", "{:.3f}", "–"),
    ("lip_jitter", "lip jitter (×100/IOD per frame²)", "{:.3f}", "≈ GT"),
    ("seam_color", "seam colour jump (grey levels)", "{:.2f}", "lower"),
    ("seam_gradient", "seam gradient jump (grey levels)", "{:.2f}", "lower"),
    ("seam_ratio", "boundary gradient output / source", "{:.2f}", "≤ 1.2"),
    ("duration_video_minus_audio_ms", "video − audio duration (ms)", "{:+.0f}", "within ±40"),
    ("realtime_factor", "dub wall time / output duration", "{:.2f}", "lower"),
]

SHORT_CLIP_FRAMES = 75  # 3 s: below this the ±15-frame correlation has too few overlapping frames

COLUMNS = [("ground truth", "gt"), ("split: lipdub", "split_out"), ("split: source half", "split_base"),
           ("self: lipdub", "self_out"), ("self: reversed source", "self_base"),
           ("cross: lipdub", "cross_out"), ("cross: untouched", "cross_base")]


def _num(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


def groups(results: list[ClipResult]) -> dict[str, list[dict]]:
    """Metric dicts per column: ground truth, split-clip, self-reenactment and cross-dub output/baseline.

    The ground-truth column carries the lip-colour baseline as `lip_delta_e` (the same lips 2 s apart), so
    it stands beside the outputs' ΔE in the table."""
    g: dict[str, list[dict]] = {key: [] for _, key in COLUMNS}
    for r in results:
        gt = dict(r.ground_truth)
        if "lip_delta_e_2s" in gt:
            gt["lip_delta_e"] = gt["lip_delta_e_2s"]
        g["gt"].append(gt)
        if "output" in r.split_clip:
            g["split_out"].append(r.split_clip["output"])
        if r.split_clip.get("baseline"):
            g["split_base"].append(r.split_clip["baseline"])
        if "output" in r.self_reenactment:
            g["self_out"].append(r.self_reenactment["output"])
        g["self_base"].append(r.self_reenactment["baseline"])
        for c in r.cross_dub:
            if "output" in c:
                g["cross_out"].append(c["output"])
            g["cross_base"].append(c["baseline"])
    return g


def medians(rows: list[dict]) -> dict[str, float]:
    keys = {k for row in rows for k, v in row.items() if _num(v)}
    out = {}
    for k in sorted(keys):
        vals = [float(row[k]) for row in rows if _num(row.get(k))]
        if vals:
            out[k] = float(np.median(vals))
    return out


# Renderers whose output pixels come from other source frames (lipdub.render.exemplar).
REUSES_SOURCE = {"exemplar"}


def _fmt(v: object, fmt: str = "{:.3f}") -> str:
    return fmt.format(v) if _num(v) else "–"


def markdown(results: list[ClipResult], summary: dict[str, dict[str, float]], meta: dict) -> str:
    lines = ["# lipdub quality evaluation", "",
             f"{meta['clips']} clips, {meta['cross_dubs']} cross-dubs, clips cut to {meta['max_seconds']} s, "
             f"cross-dub sync mode `{meta['cross_sync_mode']}`, {meta['elapsed_s']:.0f} s on "
             f"{meta['machine']}; pipeline settings: "
             + (", ".join(f"{k}={v}" for k, v in sorted(meta["pipeline"].items())) or "defaults") + ".",
             "Definitions: quality_metrics.md §3.4 and lipdub/eval/*.py. Medians over clips; "
             "`–` = not applicable.",
             *([f"Renderer `{meta['pipeline']['renderer']}` draws with the source's own frames: judge it on "
                "the split clip; on a reversed source the truth frame is among those it may copy."]
               if meta["pipeline"].get("renderer") in REUSES_SOURCE else []),
             "", "## Medians", "",
             "| metric | better | " + " | ".join(label for label, _ in COLUMNS) + " |",
             "|---|---|" + "---|" * len(COLUMNS)]
    for key, label, fmt, better in SUMMARY_METRICS:
        cells = [_fmt(summary[col].get(key), fmt) for _, col in COLUMNS]
        if any(c != "–" for c in cells):
            lines.append(f"| {label} | {better} | " + " | ".join(cells) + " |")

    lines += _reenactment_table("Split clip: first half as source, second half as audio and truth (lipdub / "
                                "source-half baseline)", results, "split_clip")
    lines += _reenactment_table("Self-reenactment with a reversed source (lipdub / reversed-source baseline)",
                                results, "self_reenactment")
    lines += _picture_table(results)

    lines += ["", "## Cross-dubbing (lipdub / untouched-clip baseline)", "",
              "| clip | audio | offset | sync peak | r ±2 | confidence | silence ratio | jitter / source | "
              "sharpness | outside PSNR | seam colour | dur. ms | error |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += _cross_rows(results)

    lines += ["", "## Ground truth (original clip, own audio)", "",
              "| clip | frames | offset | sync peak | r ±2 | confidence | silence ratio | speech share | "
              "lip jitter | lip ΔE 2 s apart |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        g = r.ground_truth
        lines.append(f"| {_name(r)} | {r.frames} | {_fmt(g.get('sync_offset'), '{:+.1f}')} | "
                     f"{_fmt(g.get('sync_peak'), '{:.2f}')} | {_fmt(g.get('sync_r_near_zero'), '{:.2f}')} | "
                     f"{_fmt(g.get('sync_confidence'), '{:.2f}')} | "
                     f"{_fmt(g.get('silence_ratio'), '{:.2f}')} | "
                     f"{_fmt(g.get('speech_fraction'), '{:.2f}')} | {_fmt(g.get('lip_jitter'), '{:.3f}')} | "
                     f"{_fmt(g.get('lip_delta_e_2s'), '{:.2f}')} |")
    if any(r.frames < SHORT_CLIP_FRAMES for r in results):
        lines += ["", f"† shorter than {SHORT_CLIP_FRAMES / 25:.0f} s: fewer than {SHORT_CLIP_FRAMES} frames for "
                  "±15 lags, so its sync numbers are noisy (its own-audio peak may sit at the edge of the lags)."]
    lines.append("")
    return "\n".join(lines)


def _reenactment_table(title: str, results: list[ClipResult], attr: str) -> list[str]:
    """Per clip, output / baseline, of a protocol that compares with a truth frame by frame."""
    lines = ["", f"## {title}", "",
             "| clip | frames | LMD lips | LMD jaw | MOC | width r | offset − GT | sync peak | confidence | "
             "mouth PSNR | mouth SSIM | outside PSNR | sharpness | jitter / GT | seam colour | dur. ms | "
             "error |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        proto = getattr(r, attr)
        if not proto:
            continue
        o, b = proto.get("output", {}), proto.get("baseline", {})

        def pair(k: str, fmt: str = "{:.2f}", o: dict = o, b: dict = b) -> str:
            return f"{_fmt(o.get(k), fmt)} / {_fmt(b.get(k), fmt)}"

        lines.append(
            f"| {_name(r)} | {proto.get('half_frames', r.frames)} | {pair('lmd_lips')} | {pair('lmd_jaw')} | "
            f"{pair('moc', '{:.2f}')} | {pair('width_corr', '{:.2f}')} | "
            f"{pair('sync_offset_vs_gt', '{:+.1f}')} | {pair('sync_peak')} | {pair('sync_confidence')} | "
            f"{pair('mouth_psnr', '{:.1f}')} | {pair('mouth_ssim')} | "
            f"{_fmt(o.get('outside_psnr'), '{:.1f}')} | "
            f"{_fmt(o.get('sharpness_ratio'), '{:.2f}')} | {pair('jitter_ratio_vs_gt')} | "
            f"{_fmt(o.get('seam_color'), '{:.1f}')} | "
            f"{_fmt(o.get('duration_video_minus_audio_ms'), '{:+.0f}')} | "
            f"{proto.get('error') or ''} |")
    return lines


def _picture_table(results: list[ClipResult]) -> list[str]:
    """Per clip and protocol, the picture metrics of the output against its source (lipdub.eval.picture)."""
    lines = ["", "## Picture: lipdub output against its source frame", "",
             "| clip | protocol | lip ΔE (2 s apart) | lip chroma | skin texture | lip edge | teeth / source's | "
             "mouth sharpness |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        protos = [("split", r.split_clip), ("reversed", r.self_reenactment)]
        protos += [(f"cross {c['audio']}", c) for c in r.cross_dub]
        for name, proto in protos:
            o = proto.get("output") if proto else None
            if not o:
                continue
            lines.append(
                f"| {r.clip} | {name} | {_fmt(o.get('lip_delta_e'), '{:.2f}')} "
                f"({_fmt(r.ground_truth.get('lip_delta_e_2s'), '{:.2f}')}) | "
                f"{_fmt(o.get('lip_chroma_ratio'), '{:.3f}')} | {_fmt(o.get('skin_texture_ratio'), '{:.2f}')} | "
                f"{_fmt(o.get('lip_edge_ratio'), '{:.2f}')} | {_fmt(o.get('teeth_fraction'), '{:.2f}')} / "
                f"{_fmt(o.get('teeth_fraction_source'), '{:.2f}')} | {_fmt(o.get('sharpness_ratio'), '{:.2f}')} |")
    return lines


def _cross_rows(results: list[ClipResult]) -> list[str]:
    lines = []
    for r in results:
        for c in r.cross_dub:
            o, b = c.get("output", {}), c["baseline"]

            def pair2(k: str, fmt: str = "{:.2f}", o: dict = o, b: dict = b) -> str:
                return f"{_fmt(o.get(k), fmt)} / {_fmt(b.get(k), fmt)}"

            lines.append(
                f"| {r.clip} | {c['audio']} ({c['language']}) | {pair2('sync_offset', '{:+.1f}')} | "
                f"{pair2('sync_peak')} | {pair2('sync_r_near_zero')} | {pair2('sync_confidence')} | "
                f"{pair2('silence_ratio')} | {_fmt(o.get('jitter_ratio_vs_source'), '{:.2f}')} | "
                f"{_fmt(o.get('sharpness_ratio'), '{:.2f}')} | {_fmt(o.get('outside_psnr'), '{:.1f}')} | "
                f"{_fmt(o.get('seam_color'), '{:.1f}')} | "
                f"{_fmt(o.get('duration_video_minus_audio_ms'), '{:+.0f}')} | {c.get('error') or ''} |")
    return lines


def _name(r: ClipResult) -> str:
    return f"{r.clip}†" if r.frames < SHORT_CLIP_FRAMES else r.clip


def _z(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    ok = ~np.isnan(x)
    if ok.sum() < 2 or np.nanstd(x) < 1e-12:
        return x - np.nanmean(x) if ok.any() else x
    return (x - np.nanmean(x)) / np.nanstd(x)


def _speech_spans(ax: Axes, speech: np.ndarray) -> None:
    edges = np.flatnonzero(np.diff(np.concatenate([[0], speech.astype(int), [0]])))
    for start, stop in zip(edges[0::2], edges[1::2]):
        ax.axvspan(start / 25.0, stop / 25.0, color="0.9", zorder=0, lw=0)


COLOURS = {"ground truth": "tab:green", "lipdub": "tab:red", "reversed (baseline)": "tab:gray",
           "untouched (baseline)": "tab:gray", "source half (baseline)": "tab:gray"}


def plot_clip(result: ClipResult, path: Path) -> None:
    """Mouth opening vs audio envelope over time (self-reenactment, first cross-dub) and r(lag) curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: list[tuple[str, Signals]] = []
    if result.split_signals is not None:
        panels.append(("split clip (second half's audio)", result.split_signals))
    if result.self_signals is not None:
        panels.append(("self-reenactment (own audio)", result.self_signals))
    for c, sig in zip(result.cross_dub, result.cross_signals):
        panels.append((f"cross-dub: {c['audio']} ({c['language']})", sig))
    fig, axes = plt.subplots(len(panels), 2, figsize=(14, 3.2 * len(panels)), squeeze=False,
                             gridspec_kw={"width_ratios": [3, 1]})
    for row, (title, sig) in enumerate(panels):
        ax, axc = axes[row]
        t = np.arange(len(sig.envelope)) / 25.0
        _speech_spans(ax, sig.speech)
        ax.plot(t, _z(sig.envelope), color="tab:blue", lw=1.0, alpha=0.7, label="audio envelope")
        for name, m in sig.mouths.items():
            tm = np.arange(len(m)) / 25.0
            ax.plot(tm, _z(m), color=COLOURS.get(name, "tab:orange"), lw=1.3 if name == "lipdub" else 1.0,
                    ls="--" if "baseline" in name else "-", label=f"mouth: {name}")
        ax.set_title(f"{result.clip} — {title}", fontsize=10)
        ax.set_xlabel("time (s); grey = speech (VAD)")
        ax.set_ylabel("z-score")
        ax.legend(fontsize=7, loc="upper right", ncol=2)
        ax.set_xlim(0, max(t[-1] if len(t) else 1.0, 1.0))
        for name, sync in sig.curves.items():
            if sync.curve:
                axc.plot(sync.lags, sync.curve, color=COLOURS.get(name, "tab:orange"),
                         ls="--" if "baseline" in name else "-", marker=".", ms=3,
                         label=f"{name}: {sync.offset:+.1f} f, r={sync.peak:.2f}")
        axc.axvline(0, color="0.6", lw=0.8)
        axc.set_title("corr(mouth[t], audio[t−k])", fontsize=10)
        axc.set_xlabel("lag k (frames, + = video lags)")
        axc.legend(fontsize=7, loc="lower center")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_summary(summary_rows: dict[str, list[dict]], path: Path) -> None:
    """Distribution over clips of the key metrics, one box per column (GT, outputs, baselines)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [("sync_peak", "sync peak r"), ("sync_offset_vs_gt", "offset − GT (frames)"),
            ("silence_ratio", "silence / speech opening"), ("lmd_lips", "LMD lips"), ("moc", "MOC"),
            ("lip_jitter", "lip jitter")]
    fig, axes = plt.subplots(2, 3, figsize=(14, 7))
    for ax, (key, title) in zip(axes.ravel(), keys):
        data, labels = [], []
        for label, col in COLUMNS:
            vals = [float(r[key]) for r in summary_rows[col] if _num(r.get(key))]
            if vals:
                data.append(vals)
                labels.append(label.replace(": ", ":\n"))
        if data:
            ax.boxplot(data, showmeans=True)
            ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_report(results: list[ClipResult], out_dir: Path, options: EvalOptions, elapsed: float,
                 pipeline: dict[str, str] | None = None) -> dict:
    rows = groups(results)
    summary = {col: medians(rows[col]) for _, col in COLUMNS}
    meta = {"clips": len(results), "cross_dubs": sum(len(r.cross_dub) for r in results),
            "max_seconds": options.max_seconds, "cross_sync_mode": options.cross_sync_mode,
            "frame_stride": options.frame_stride, "elapsed_s": elapsed,
            "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "lipdub": __version__,
            "pipeline": pipeline or {}}
    report = {"meta": meta, "options": asdict(options), "medians": summary,
              "clips": [r.to_json() for r in results]}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(_finite(report), indent=2, default=_json_default))
    (out_dir / "report.md").write_text(markdown(results, summary, meta))
    for r in results:
        plot_clip(r, out_dir / "plots" / f"{r.clip}.png")
        write_sheet(out_dir / "sheets" / f"{r.clip}.png", r.clip, r.sheets)
    if results:
        plot_summary(rows, out_dir / "plots" / "summary.png")
    return report


def _finite(v: object) -> object:
    """NaN/inf → null: strict JSON readers reject NaN."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    return v


def _json_default(v: object) -> object:
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, Path):
        return str(v)
    raise TypeError(type(v))
