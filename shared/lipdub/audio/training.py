"""Training and evaluation of the audio models on the corpus (`lipdub train audio`).

Steps: paired clips (speech + face mesh, cached) → canonical mouth shapes → per-clip audio/video offset check
(cross-validated teacher predictions against the face; clearly shifted clips are corrected, hopeless ones
dropped from training) → PCA basis + ridge teacher on the training identities → held-out evaluation on the
fixed split and on random identity splits (pooled medians) → distillation data for the student.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lipdub.audio.corpus import ClipData, CorpusClip, load_or_extract, talking_clips
from lipdub.audio.features import fbank
from lipdub.audio.mouth import EnergyMouthModel
from lipdub.audio.shape import MouthBasis, canonical_mouth, reference_head
from lipdub.audio.splits import Split
from lipdub.audio.teacher import LAGS, EncoderIdentity, RidgeHead, WhisperEncoder, stack_lags
from lipdub.face.landmarks import mouth_opening

log = logging.getLogger(__name__)

MAX_LAG = 5  # frames searched when checking a clip's audio/video offset (±200 ms)


@dataclass
class Paired:
    """One corpus clip ready for training: aligned to T = min(video, audio) frames."""

    clip: CorpusClip
    shapes: np.ndarray  # [T, P, 3] canonical mouth points (NaN where no face)
    opening: np.ndarray  # [T] true mouth opening from the raw mesh (NaN where no face)
    feats: np.ndarray  # [T, D] encoder features
    samples: np.ndarray
    offset: int = 0  # video frames the face track was shifted by to match the audio
    extras: dict = field(default_factory=dict)

    @property
    def valid(self) -> np.ndarray:
        return ~np.isnan(self.opening)


def load_paired(corpus: Path, cache: Path, encoder: WhisperEncoder) -> list[Paired]:
    clips = talking_clips(corpus)
    data: list[ClipData] = [load_or_extract(c, cache / "corpus") for c in clips]
    ref = reference_head(np.concatenate([d.landmarks[::5] for d in data]))
    feat_dir = cache / "features" / encoder.identity.sha256[:16]
    feat_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for clip, d in zip(clips, data):
        fpath = feat_dir / f"{clip.name}.npy"
        if fpath.is_file():
            feats = np.load(fpath)
        else:
            feats = encoder.features(d.samples)
            np.save(fpath, feats)
        n = min(len(feats), d.n_frames)
        shapes = canonical_mouth(d.landmarks[:n], ref)
        out.append(Paired(clip, shapes, mouth_opening(d.landmarks[:n]).astype(np.float64), feats[:n],
                          d.samples, extras={"ref": ref}))
    return out


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    ok = ~(np.isnan(a) | np.isnan(b))
    if ok.sum() < 5 or np.std(a[ok]) < 1e-9 or np.std(b[ok]) < 1e-9:
        return float("nan")
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def shifted(x: np.ndarray, lag: int) -> np.ndarray:
    """x delayed by `lag` frames (positive: later), NaN-filled at the uncovered end."""
    out = np.full_like(x, np.nan, dtype=np.float64)
    if lag >= 0:
        out[lag:] = x[: len(x) - lag]
    else:
        out[:lag] = x[-lag:]
    return out


def best_lag(pred: np.ndarray, truth: np.ndarray) -> tuple[int, float, float]:
    """(lag, r at that lag, r at lag 0): the shift of the face track that best matches the prediction."""
    rs = {lag: pearson(pred, shifted(truth, -lag)) for lag in range(-MAX_LAG, MAX_LAG + 1)}
    lag = max(rs, key=lambda k: -np.inf if np.isnan(rs[k]) else rs[k])
    return lag, rs[lag], rs[0]


def apply_offset(p: Paired, lag: int) -> Paired:
    """Shift the face track by `lag` frames (face at t+lag ↔ audio at t)."""
    shapes = shifted(p.shapes.reshape(len(p.shapes), -1), -lag).reshape(p.shapes.shape).astype(np.float32)
    return Paired(p.clip, shapes, shifted(p.opening, -lag), p.feats, p.samples, lag, p.extras)


@dataclass
class TeacherFit:
    basis: MouthBasis
    head: RidgeHead


def fit_teacher(train: list[Paired], encoder: EncoderIdentity, alpha: float, n_components: int = 8,
                lags: tuple[int, ...] = LAGS) -> TeacherFit:
    ref = train[0].extras["ref"]
    basis = MouthBasis.fit([p.shapes for p in train], ref, n_components)
    feats, targets = [], []
    for p in train:
        coeffs = basis.encode(p.shapes)
        ok = ~np.isnan(coeffs[:, 0])
        # Rows without a face are dropped after stacking so the lag context stays intact.
        feats.append(p.feats)
        targets.append(np.where(ok[:, None], coeffs, np.nan))
    head = _fit_masked(feats, targets, alpha, encoder, lags)
    return TeacherFit(basis, head)


def _fit_masked(feats: list[np.ndarray], targets: list[np.ndarray], alpha: float,
                encoder: EncoderIdentity, lags: tuple[int, ...]) -> RidgeHead:
    allf = np.concatenate(feats)
    mean, std = allf.mean(0), allf.std(0) + 1e-5
    xs, ys = [], []
    for f, y in zip(feats, targets):
        x = stack_lags((f - mean) / std, lags)
        ok = ~np.isnan(y[:, 0])
        xs.append(x[ok])
        ys.append(y[ok])
    x = np.concatenate(xs).astype(np.float64)
    y = np.concatenate(ys).astype(np.float64)
    xm, ym = x.mean(0), y.mean(0)
    xc = x - xm
    gram = xc.T @ xc
    gram[np.diag_indices_from(gram)] += alpha * len(x)
    weight = np.linalg.solve(gram, xc.T @ (y - ym))
    bias = ym - xm @ weight
    return RidgeHead(mean.astype(np.float32), std.astype(np.float32), weight.astype(np.float32),
                     bias.astype(np.float32), lags, encoder)


def predict_opening(fit: TeacherFit, p: Paired) -> np.ndarray:
    return fit.basis.opening(fit.head(p.feats))


def energy_opening(p: Paired) -> np.ndarray:
    track = EnergyMouthModel()(fbank(p.samples))
    n = len(p.opening)
    op = track.opening[:n].astype(np.float64)
    return np.pad(op, (0, n - len(op)), mode="edge") if len(op) < n else op


def check_offsets(paired: list[Paired], encoder: EncoderIdentity, alpha: float, folds: int = 5,
                  seed: int = 0) -> list[tuple[Paired, int, float, float]]:
    """Cross-validated (by identity) teacher predictions → (clip, best lag, r at best lag, r at lag 0)."""
    identities = sorted({p.clip.identity for p in paired})
    rng = np.random.default_rng(seed)
    fold_of = dict(zip(identities, rng.permutation(len(identities)) % folds))
    out = []
    for k in range(folds):
        train = [p for p in paired if fold_of[p.clip.identity] != k]
        fit = fit_teacher(train, encoder, alpha)
        for p in paired:
            if fold_of[p.clip.identity] == k:
                lag, r_best, r0 = best_lag(predict_opening(fit, p), p.opening)
                out.append((p, lag, r_best, r0))
    return out


def correct_offsets(checks: list[tuple[Paired, int, float, float]], min_gain: float = 0.08,
                    min_r: float = 0.0) -> tuple[list[Paired], list[dict]]:
    """Shift clips whose best lag beats lag 0 clearly; drop clips no lag makes agree with the teacher."""
    kept, report = [], []
    for p, lag, r_best, r0 in checks:
        action = "keep"
        if np.isnan(r_best) or r_best < min_r:
            action = "drop"
        elif lag != 0 and r_best - r0 >= min_gain:
            action = f"shift {lag:+d}"
            p = apply_offset(p, lag)
        report.append({"clip": p.clip.name, "lag": lag, "r_best": round(r_best, 3), "r0": round(r0, 3),
                       "action": action})
        if action != "drop":
            kept.append(p)
    return kept, report


def evaluate_split(train_pool: list[Paired], test_pool: list[Paired], split: Split, encoder: EncoderIdentity,
                   alpha: float, lags: tuple[int, ...] = LAGS) -> dict:
    """Per-clip r on the split's held-out identities for the teacher (fit on the rest) and the energy baseline.

    Evaluation always uses the held-out clips as recorded (lag 0, no offset correction): correcting them with a
    model's own predictions would flatter it.
    """
    train = [p for p in train_pool if not split.is_test(p.clip)]
    test = [p for p in test_pool if split.is_test(p.clip)]
    fit = fit_teacher(train, encoder, alpha, lags=lags)
    rows = []
    for p in test:
        rows.append({"clip": p.clip.name, "frames": int(p.valid.sum()),
                     "teacher": pearson(predict_opening(fit, p), p.opening),
                     "energy": pearson(energy_opening(p), p.opening)})
    return {"split": split.name, "clips": rows, "fit": fit}


def median_iqr(values: list[float]) -> tuple[float, float, float]:
    v = np.array([x for x in values if not np.isnan(x)])
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    return float(np.median(v)), float(np.percentile(v, 25)), float(np.percentile(v, 75))


def select_alpha(paired: list[Paired], encoder: EncoderIdentity, grid: tuple[float, ...], folds: int = 5,
                 seed: int = 0) -> tuple[float, dict[float, float], np.ndarray]:
    """Ridge strength by identity-grouped cross-validation inside the training identities (median clip r).

    Also returns, for the chosen strength, the per-component amplitude gain that undoes the ridge's shrinkage
    (std of the true coefficients over std of the held-out predictions, averaged over folds).
    """
    identities = sorted({p.clip.identity for p in paired})
    rng = np.random.default_rng(seed)
    fold_of = dict(zip(identities, rng.permutation(len(identities)) % folds))
    scores: dict[float, float] = {}
    gains: dict[float, np.ndarray] = {}
    for alpha in grid:
        rs, ratios = [], []
        for k in range(folds):
            fit = fit_teacher([p for p in paired if fold_of[p.clip.identity] != k], encoder, alpha)
            preds, truths = [], []
            for p in paired:
                if fold_of[p.clip.identity] != k:
                    continue
                pred = fit.head(p.feats)
                rs.append(pearson(fit.basis.opening(pred), p.opening))
                true = fit.basis.encode(p.shapes)
                ok = ~np.isnan(true[:, 0])
                preds.append(pred[ok] - pred[ok].mean(0))
                truths.append(true[ok])
            ratios.append(np.concatenate(truths).std(0) / (np.concatenate(preds).std(0) + 1e-6))
        scores[alpha] = median_iqr(rs)[0]
        gains[alpha] = np.clip(np.mean(ratios, axis=0), 1.0, 3.0)
        log.info("alpha %.3g: cross-validated median r %.3f, gains %s", alpha, scores[alpha],
                 np.round(gains[alpha], 2))
    best = max(scores, key=lambda a: scores[a])
    return best, scores, gains[best]


def silence_ratio(tracks: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """Mean opening where voice activity is off over its mean where it is on, pooled over (opening, speech)."""
    off = np.concatenate([o[~s] for o, s in tracks])
    on = np.concatenate([o[s] for o, s in tracks])
    if len(off) == 0 or len(on) == 0 or on.mean() <= 0:
        return float("nan")
    return float(off.mean() / on.mean())
