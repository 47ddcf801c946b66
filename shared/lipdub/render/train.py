"""Self-supervised training of the DINet mouth generator (`lipdub train render`), and per-source fine-tuning.

Recipe (after DH_live/DINet, reference §5): masked-mouth reconstruction with references from the same clip;
losses L1 + image-gradient L1 at two scales (the sharpness term; VGG perceptual loss is impossible without
downloadable ImageNet weights) + LSGAN with a patch discriminator once the reconstruction has settled;
coarse-to-fine (the first part of the run at half resolution — the generator is fully convolutional);
Adam with a linear learning-rate decay over the second half.

Deterministic and resumable: every batch is a pure function of (seed, step, rank) and the full training state
(generator, discriminator, optimisers, step) is written to `<run>/state.pt` every `save_every` steps; a
rerun with the same arguments continues from there. Runs under `torchrun` with DistributedDataParallel
when launched so (one process per GPU), else in one process on the CPU with one thread (shared machines).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lipdub.render.dataset import ClipWindows, WindowSampler, build_cache, load_clips
from lipdub.render.dinet import (
    CONFIGS,
    DinetConfig,
    DinetGenerator,
    PatchDiscriminator,
    blend_mask,
    load_checkpoint,
    save_checkpoint,
)


@dataclass
class TrainOptions:
    config: str = "mini"
    steps: int = 6000
    batch: int = 12
    lr: float = 1e-3
    coarse: float = 0.3  # share of the steps at half resolution
    gan_start: float = 0.5  # share of the steps before the adversarial loss joins
    gan_weight: float = 0.05
    grad_weight: float = 1.0
    seed: int = 1009
    save_every: int = 250
    eval_every: int = 500
    threads: int = 1
    init: str | None = None  # generator checkpoint to start from (fine-tuning)


@dataclass
class TrainState:
    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


def masked_l1(a: torch.Tensor, b: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return (torch.abs(a - b) * w).sum() / (w.sum() * a.shape[1] + 1e-6)


def gradient_l1(a: torch.Tensor, b: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """L1 between image gradients (edges, teeth contours) inside the weighted region."""
    def grads(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]

    (ax, ay), (bx, by) = grads(a), grads(b)
    return masked_l1(ax, bx, w[..., :, 1:]) + masked_l1(ay, by, w[..., 1:, :])


def reconstruction_loss(out: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                        grad_weight: float) -> tuple[torch.Tensor, dict[str, float]]:
    w = blend_mask(mask)
    l1 = masked_l1(out, target, w)
    g = gradient_l1(out, target, w)
    # Half scale too: the coarse structure of the mouth (opening, lip thickness) matters most.
    o2, t2, w2 = (F.avg_pool2d(x, 2) for x in (out, target, w))
    l1h, gh = masked_l1(o2, t2, w2), gradient_l1(o2, t2, w2)
    loss = l1 + l1h + grad_weight * (g + gh)
    return loss, {"l1": float(l1.detach()), "grad": float(g.detach())}


def psnr_in_mask(out: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> float:
    mse = float(((out - target) ** 2 * mask).sum() / (mask.sum() * 3 + 1e-6))
    return 10 * math.log10(1.0 / max(mse, 1e-10))


def resize_batch(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="area")


def _lr_factor(step: int, steps: int) -> float:
    half = steps // 2
    return 1.0 if step < half else max(0.02, 1.0 - (step - half) / max(1, steps - half))


def _dist() -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        import torch.distributed as dist

        local = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            torch.cuda.set_device(local)
            dist.init_process_group("nccl")
            return dist.get_rank(), world, torch.device("cuda", local)
        dist.init_process_group("gloo")
        return dist.get_rank(), world, torch.device("cpu")
    return 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")


def evaluate(generator: nn.Module, sampler: WindowSampler, n_batches: int = 8, batch: int = 16,
             device: torch.device | None = None) -> dict[str, float]:
    """Masked L1 and PSNR of the mouth region on a fixed set of held-out samples (same every call)."""
    device = device or torch.device("cpu")
    generator.eval()
    l1s, ps, base = [], [], []
    with torch.no_grad():
        for b in range(n_batches):
            src, ref, tgt = (torch.from_numpy(x).to(device) for x in sampler.batch((999_999, b), batch))
            out = generator(src, ref)
            w = src[:, 3:4]
            l1s.append(float(masked_l1(out, tgt, w)))
            ps.append(psnr_in_mask(out, tgt, w))
            # Baseline: the average colour of the references in place of the mouth (what "no model" gives).
            base.append(psnr_in_mask(src[:, :3] + w * ref[:, :3].mean((2, 3), keepdim=True), tgt, w))
    generator.train()
    return {"l1": float(np.mean(l1s)), "psnr": float(np.mean(ps)), "psnr_flat": float(np.mean(base))}


def train(run_dir: Path, train_clips: list[ClipWindows], eval_clips: list[ClipWindows],
          opts: TrainOptions, log: bool = True) -> Path:
    """Train (or resume) into `run_dir`; returns the exported generator checkpoint `<run>/generator.pt`."""
    rank, world, device = _dist()
    torch.set_num_threads(opts.threads)
    torch.manual_seed(opts.seed + rank)
    torch.use_deterministic_algorithms(True, warn_only=True)
    config: DinetConfig = CONFIGS[opts.config]
    run_dir.mkdir(parents=True, exist_ok=True)

    gen = DinetGenerator(config).to(device)
    if opts.init:
        base, _ = load_checkpoint(Path(opts.init))
        if base.config != config:
            raise ValueError(f"{opts.init} is a {base.config.name} checkpoint, not {config.name}")
        gen.load_state_dict(base.state_dict())
    disc = PatchDiscriminator().to(device)
    opt_g = torch.optim.Adam(gen.parameters(), lr=opts.lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=opts.lr, betas=(0.5, 0.999))
    state = TrainState()
    state_path = run_dir / "state.pt"
    if state_path.is_file():
        saved = torch.load(state_path, map_location=device, weights_only=True)
        gen.load_state_dict(saved["gen"])
        disc.load_state_dict(saved["disc"])
        opt_g.load_state_dict(saved["opt_g"])
        opt_d.load_state_dict(saved["opt_d"])
        state.step = int(saved["step"])
        if log and rank == 0:
            print(f"resumed at step {state.step}", flush=True)
    g_model: nn.Module = gen
    d_model: nn.Module = disc
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        g_model = DDP(gen, device_ids=[device.index] if device.type == "cuda" else None)
        d_model = DDP(disc, device_ids=[device.index] if device.type == "cuda" else None)

    sampler = WindowSampler(train_clips, config.size, config.refs, opts.seed)
    eval_sampler = WindowSampler(eval_clips, config.size, config.refs, opts.seed, augment=False) if eval_clips else None
    writer = None
    if rank == 0:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tb"))
        (run_dir / "options.json").write_text(__import__("json").dumps(asdict(opts), indent=2))
    mse = nn.MSELoss()
    t0, last = time.time(), time.time()
    while state.step < opts.steps:
        step = state.step
        size = config.size // 2 if step < opts.coarse * opts.steps else config.size
        for o in (opt_g, opt_d):
            for group in o.param_groups:
                group["lr"] = opts.lr * _lr_factor(step, opts.steps)
        src, ref, tgt = (resize_batch(torch.from_numpy(x).to(device), size)
                         for x in sampler.batch((step, rank), opts.batch))
        src[:, 3:4] = (src[:, 3:4] > 0.5).float()  # keep the mask binary after area resizing
        out = g_model(src, ref)
        loss, parts = reconstruction_loss(out, tgt, src[:, 3:4], opts.grad_weight)
        use_gan = step >= opts.gan_start * opts.steps
        if use_gan:
            fake_score = d_model(out)
            g_adv = mse(fake_score, torch.ones_like(fake_score))
            loss = loss + opts.gan_weight * g_adv
            parts["g_adv"] = float(g_adv.detach())
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        opt_g.step()
        if use_gan:
            real, fake = d_model(tgt), d_model(out.detach())
            d_loss = 0.5 * (mse(real, torch.ones_like(real)) + mse(fake, torch.zeros_like(fake)))
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            parts["d"] = float(d_loss.detach())
        state.step += 1
        if writer is not None:
            for k, v in parts.items():
                writer.add_scalar(f"train/{k}", v, state.step)
            writer.add_scalar("train/size", size, state.step)
            if log and (state.step % 50 == 0 or state.step == 1):
                rate = 50 / max(time.time() - last, 1e-6) if state.step > 1 else 0.0
                last = time.time()
                print(f"step {state.step}/{opts.steps} size {size} " +
                      " ".join(f"{k} {v:.4f}" for k, v in parts.items()) + f" ({rate:.2f} steps/s)", flush=True)
            if eval_sampler is not None and (state.step % opts.eval_every == 0 or state.step == opts.steps):
                metrics = evaluate(gen, eval_sampler, device=device)
                for k, v in metrics.items():
                    writer.add_scalar(f"heldout/{k}", v, state.step)
                state.history.append({"step": state.step, **metrics})
                if log:
                    print(f"held-out @ {state.step}: " + " ".join(f"{k} {v:.4f}" for k, v in metrics.items()),
                          flush=True)
                    with torch.no_grad():
                        writer.add_images("heldout/out", gen.eval()(*(torch.from_numpy(x).to(device) for x in
                                                                      eval_sampler.batch((999_999, 0), 4)[:2])),
                                          state.step)
                    gen.train()
            if state.step % opts.save_every == 0 or state.step == opts.steps:
                torch.save({"gen": gen.state_dict(), "disc": disc.state_dict(), "opt_g": opt_g.state_dict(),
                            "opt_d": opt_d.state_dict(), "step": state.step}, run_dir / "state.tmp.pt")
                (run_dir / "state.tmp.pt").replace(state_path)
                save_checkpoint(run_dir / "generator.pt", gen,
                                extra={"step": state.step, "seconds": time.time() - t0,
                                       "history": __import__("json").dumps(state.history)})
    if writer is not None:
        writer.close()
    if world > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
    return run_dir / "generator.pt"


def train_from_corpus(corpus: Path, data_dir: Path, run_dir: Path, opts: TrainOptions,
                      max_frames: int = 80) -> Path:
    """Cut (or reuse) the corpus windows, hold out the eval identities, and train."""
    config = CONFIGS[opts.config]
    marks = data_dir / "audio_model" / "corpus"  # the audio model's landmark cache, reused when present
    paths = build_cache(corpus, data_dir / "render" / f"windows{config.size}", config.size,
                        margin=max(2, config.size // 16), max_frames=max_frames,
                        landmark_cache=marks if marks.is_dir() else None)
    train_clips, eval_clips = load_clips(paths)
    print(f"{len(train_clips)} training clips ({sum(len(c.crops) for c in train_clips)} windows), "
          f"{len(eval_clips)} held-out clips", flush=True)
    return train(run_dir, train_clips, eval_clips, opts)
