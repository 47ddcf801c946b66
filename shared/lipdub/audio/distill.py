"""Distilling the teacher into the student: teacher-labelled speech, augmented, and a seeded CPU training loop."""

from __future__ import annotations

import csv
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lipdub.audio.augment import augment
from lipdub.audio.features import N_MELS, fbank, lifter
from lipdub.audio.models import CoeffModel
from lipdub.audio.shape import MouthBasis
from lipdub.audio.student import Audio2Feature
from lipdub.audio.student_recipe import LOOKAHEAD
from lipdub.audio.synthetic import synthetic_utterances
from lipdub.media.audio import load_audio

log = logging.getLogger(__name__)


@dataclass
class Utterance:
    """Unlabelled distillation audio. Synthetic utterances carry the frames of silence inserted around them."""

    name: str
    samples: np.ndarray
    group: str  # corpus / speech / synthetic
    pre: int = 0
    post: int = 0


@dataclass
class Source:
    """Clean speech and the teacher's [T, K] labels for it (resting mouth where silence was inserted)."""

    name: str
    samples: np.ndarray
    labels: np.ndarray
    group: str  # corpus / speech / synthetic


def speech_files(corpus: Path) -> list[Path]:
    with open(corpus / "manifest.csv", newline="") as f:
        return [corpus / "speech" / r["file"] for r in csv.DictReader(f) if r["folder"] == "speech"]


def distillation_audio(corpus: Path, corpus_clips: list[tuple[str, np.ndarray]], n_synthetic: int,
                       seed: int, speech: list[Path] | None = None) -> list[Utterance]:
    """The training identities' clip audio, every clip of `speech/` (or the `speech` files given) and
    `n_synthetic` espeak-ng utterances."""
    utterances = [Utterance(name, x, "corpus") for name, x in corpus_clips]
    paths = speech_files(corpus) if speech is None else speech
    utterances += [Utterance(path.name, load_audio(path), "speech") for path in paths]
    utterances += [Utterance(desc, x, "synthetic", pre, post)
                   for desc, x, pre, post in synthetic_utterances(n_synthetic, seed=seed)]
    return utterances


def label_sources(utterances: list[Utterance], teacher: CoeffModel, rest: np.ndarray) -> list[Source]:
    """The teacher's labels on clean audio; inserted silence is labelled as the resting mouth."""
    out = []
    for u in utterances:
        y = teacher.coeffs(u.samples)
        if u.pre or u.post:
            y = label_silence(y, u.pre, u.post, rest)
        out.append(Source(u.name, u.samples, y, u.group))
    return out


def label_silence(labels: np.ndarray, pre: int, post: int, rest: np.ndarray, ramp: int = 3) -> np.ndarray:
    """Resting mouth over inserted silence, easing into the teacher's labels over `ramp` frames at the joins."""
    w = np.ones(len(labels), np.float32)
    w[:pre] = 0.0
    if post:
        w[len(labels) - post:] = 0.0
    kernel = np.ones(2 * ramp + 1) / (2 * ramp + 1)
    w = np.minimum(w, np.convolve(w, kernel, mode="same"))
    return (w[:, None] * labels + (1 - w[:, None]) * rest[None]).astype(np.float32)


@dataclass
class Dataset:
    rows: list[np.ndarray]  # per item [2T, 80] fbank
    labels: list[np.ndarray]  # per item [T, K]

    @property
    def frames(self) -> int:
        return sum(len(x) for x in self.labels)


def build_dataset(sources: list[Source], n_augmented: int, seed: int,
                  babble: np.ndarray | None = None, cepstra: int = 0) -> Dataset:
    """Each source once clean and `n_augmented` times degraded (different random draws), as the student hears
    it: fbank rows, liftered to `cepstra` cepstral coefficients when that is set (as `StudentModel` does)."""
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    for src in sources:
        versions = [(src.samples, src.labels)]
        versions += [augment(src.samples, src.labels, rng, babble) for _ in range(n_augmented)]
        for x, y in versions:
            f = lifter(fbank(x), cepstra)
            t = min(len(f) // 2, len(y))
            rows.append(f[: 2 * t])
            labels.append(y[:t])
    return Dataset(rows, labels)


def feature_stats(data: Dataset) -> tuple[np.ndarray, np.ndarray]:
    pairs = np.concatenate([r.reshape(-1, 160) for r in data.rows])
    return pairs.mean(0).astype(np.float32), (pairs.std(0) + 1e-3).astype(np.float32)


def sample_batch(data: Dataset, rng: np.random.Generator, batch: int, window: int,
                 lookahead: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`batch` windows of `window` target frames; inputs run `lookahead` frames further (edge-padded)."""
    lengths = np.array([len(y) for y in data.labels])
    items = rng.choice(len(lengths), size=batch, p=lengths / lengths.sum())
    xs, ys = [], []
    for i in items:
        n = lengths[i]
        start = int(rng.integers(0, max(1, n - window)))
        y = data.labels[i][start: start + window]
        x = data.rows[i][2 * start: 2 * (start + window + lookahead)]
        if len(y) < window:
            y = np.concatenate([y, np.repeat(y[-1:], window - len(y), 0)])
        need = 2 * (window + lookahead)
        if len(x) < need:
            x = np.concatenate([x, np.repeat(x[-1:], need - len(x), 0)])
        xs.append(x)
        ys.append(y)
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))


def spec_augment(x: torch.Tensor, fill: torch.Tensor, rng: np.random.Generator, time_masks: int, time_rows: int,
                 freq_masks: int, freq_bins: int) -> torch.Tensor:
    """[B, 2T, 80] fbank windows with random time and frequency bands set to `fill` (the per-bin mean, about zero
    after the network's input normalisation), so the student cannot lean on any one band or instant of the audio."""
    if time_masks == 0 and freq_masks == 0:
        return x
    x = x.clone()
    b, n, f = x.shape
    for i in range(b):
        for _ in range(freq_masks):
            w = int(rng.integers(0, freq_bins + 1))
            s = int(rng.integers(0, f - w + 1))
            x[i, :, s: s + w] = fill[s: s + w]
        for _ in range(time_masks):
            w = int(rng.integers(0, time_rows + 1))
            s = int(rng.integers(0, n - w + 1))
            x[i, s: s + w] = fill
    return x


@dataclass
class TrainConfig:
    max_steps: int = 3000
    minutes: float = 120.0  # a safety cap; the step count is what ends a normal run
    batch: int = 32
    window: int = 100  # target frames per sequence (4 s)
    warmup: int = 10  # first frames of each window left out of the loss (the LSTM state is still cold)
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    threads: int = 1
    eval_every: int = 250
    dropout: float = 0.0  # between the LSTM layers, training only
    # SpecAugment on the fbank input, training only: per window, this many time masks of up to
    # `time_mask_rows` 20-ms rows and frequency masks of up to `freq_mask_bins` mel bins (0 = off).
    time_masks: int = 0
    time_mask_rows: int = 10
    freq_masks: int = 0
    freq_mask_bins: int = 10
    lookahead: int = LOOKAHEAD  # video frames of future audio the student hears before answering
    # Weight of a (1 - Pearson r) loss on each window's mouth opening. The opening's movement, not its level,
    # is what viewers see and what the held-out metric scores; the per-coefficient loss alone weighs levels.
    # Needs the opening direction (`MouthBasis.opening_direction`). Off: it did not help (BENCHMARKS.md).
    opening_corr: float = 0.0
    cepstra: int = 0  # fbank rows liftered to this many cepstral coefficients (`features.lifter`; 0 = off)


def window_correlation(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Pearson r over time of each window [B, T] → [B]. Windows whose target barely moves (silence) count as
    r = 1, i.e. no loss: their correlation is noise."""
    p = pred - pred.mean(1, keepdim=True)
    t = target - target.mean(1, keepdim=True)
    r = (p * t).sum(1) / (p.norm(dim=1) * t.norm(dim=1) + 1e-6)
    moving = t.std(1) > 0.1 * target.std()
    return torch.where(moving, r, torch.ones_like(r))


def train_student(train: Dataset, dev: Dataset, n_out: int, weights: np.ndarray, cfg: TrainConfig,
                  log_dir: Path | None = None,
                  opening: np.ndarray | None = None) -> tuple[Audio2Feature, dict]:
    """Adam with cosine decay on a time budget; keeps the weights with the best dev loss."""
    if cfg.opening_corr > 0 and opening is None:
        raise ValueError("opening_corr needs the opening direction (MouthBasis.opening_direction)")
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    rng = np.random.default_rng(cfg.seed)
    mask_rng = np.random.default_rng(cfg.seed + 100)  # its own stream: masking leaves the batches unchanged
    net = Audio2Feature(n_out=n_out, dropout=cfg.dropout)
    mean, std = feature_stats(train)
    fill = torch.from_numpy(mean.reshape(2, N_MELS).mean(0))
    net.feat_mean.copy_(torch.from_numpy(mean))
    net.feat_std.copy_(torch.from_numpy(std))
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    w = torch.from_numpy(weights.astype(np.float32))
    direction = torch.from_numpy(opening.astype(np.float32)) if opening is not None else None
    writer = None
    if log_dir is not None:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(log_dir))
    dev_rng = np.random.default_rng(cfg.seed + 1)
    dev_batches = [sample_batch(dev, dev_rng, cfg.batch, cfg.window, cfg.lookahead) for _ in range(6)]

    def loss_of(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out, _ = net(x)
        pred = out[:, cfg.lookahead:][:, cfg.warmup:]
        target = y[:, cfg.warmup:]
        loss = (nn.functional.smooth_l1_loss(pred, target, reduction="none", beta=0.5) * w).mean()
        if direction is not None and cfg.opening_corr > 0:
            r = window_correlation(pred @ direction, target @ direction)
            loss = loss + cfg.opening_corr * (1 - r).mean()
        return loss

    budget = cfg.minutes * 60.0
    start = time.monotonic()
    best: tuple[float, dict[str, torch.Tensor] | None, int] = (float("inf"), None, 0)
    history = []
    step = 0
    while step < cfg.max_steps and time.monotonic() - start < budget:
        # The cosine runs over whichever budget ends first: wall clock (the recipe) or steps (load-independent runs).
        frac = min(1.0, max((time.monotonic() - start) / budget, step / cfg.max_steps))
        for g in opt.param_groups:
            g["lr"] = cfg.lr * (0.02 + 0.98 * 0.5 * (1 + np.cos(np.pi * frac)))
        net.train()
        x, y = sample_batch(train, rng, cfg.batch, cfg.window, cfg.lookahead)
        x = spec_augment(x, fill, mask_rng, cfg.time_masks, cfg.time_mask_rows, cfg.freq_masks, cfg.freq_mask_bins)
        loss = loss_of(x, y)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        step += 1
        if writer is not None:
            writer.add_scalar("train/loss", loss.item(), step)
        if step % cfg.eval_every == 0:
            net.eval()
            with torch.no_grad():
                dev_loss = float(np.mean([float(loss_of(bx, by)) for bx, by in dev_batches]))
            history.append({"step": step, "train": loss.item(), "dev": dev_loss,
                            "seconds": round(time.monotonic() - start)})
            log.info("step %d train %.4f dev %.4f (%.0f s)", step, loss.item(), dev_loss, time.monotonic() - start)
            if writer is not None:
                writer.add_scalar("dev/loss", dev_loss, step)
                writer.add_scalar("lr", opt.param_groups[0]["lr"], step)
            if dev_loss < best[0]:
                best = (dev_loss, {k: v.clone() for k, v in net.state_dict().items()}, step)
    if best[1] is not None:
        net.load_state_dict(best[1])
    net.eval()
    if writer is not None:
        writer.close()
    return net, {"steps": step, "best_step": best[2], "best_dev_loss": best[0], "history": history,
                 "seconds": round(time.monotonic() - start)}


def student_loss_weights(basis: MouthBasis) -> np.ndarray:
    """Per-component loss weights: half uniform, half by explained variance (the opening components matter most)."""
    k = basis.n_components
    return 0.5 + 0.5 * k * basis.explained / basis.explained.sum()


def distill(sources: list[Source], loss_weights: np.ndarray, cfg: TrainConfig, n_augmented: int,
            log_dir: Path | None = None, opening: np.ndarray | None = None) -> tuple[Audio2Feature, dict]:
    """Student from labelled sources: 5% of them (at least 4) held aside as the dev set that picks the checkpoint,
    the rest heard clean and `n_augmented` times degraded (babble noise cut from `speech/` clips)."""
    rng = np.random.default_rng(cfg.seed)
    dev_idx = set(rng.choice(len(sources), size=max(4, len(sources) // 20), replace=False).tolist())
    speech = [s.samples for s in sources if s.group == "speech"][:20]
    babble = np.concatenate(speech) if speech else None
    train = build_dataset([s for i, s in enumerate(sources) if i not in dev_idx], n_augmented, cfg.seed, babble,
                          cfg.cepstra)
    dev = build_dataset([s for i, s in enumerate(sources) if i in dev_idx], 1, cfg.seed + 7, babble, cfg.cepstra)
    log.info("student data: %d train frames, %d dev frames", train.frames, dev.frames)
    net, info = train_student(train, dev, sources[0].labels.shape[1], loss_weights, cfg, log_dir, opening)
    return net, {**info, "train_frames": train.frames, "dev_frames": dev.frames}
