"""Per-source fine-tuning (`lipdub enroll SOURCE`): a short self-supervised run on the source's own frames.

The generic generator has to guess a new person's teeth and lip texture from three references; a few
hundred steps on the source video itself teach it that one face. The result is cached next to the source
track (`<track dir>/dinet_enrolled.pt`, with the SHA-256 of the generic weights it started from, so it is
ignored once those change) and `make_renderer` prefers it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from lipdub.config import Settings
from lipdub.digest import sha256_file
from lipdub.face import landmarks as L
from lipdub.prep.cache import prepare_cached
from lipdub.prep.tracking import Target
from lipdub.progress import SILENT, Progress
from lipdub.render import ENROLLED, generic_weights, window
from lipdub.render.dataset import ClipWindows
from lipdub.render.dinet import load_checkpoint, save_checkpoint
from lipdub.render.train import TrainOptions, train


def track_windows(track: object, size: int, margin: int, indices: np.ndarray | None = None,
                  max_frames: int = 200) -> ClipWindows:
    """Mouth windows (size + 2·margin) of up to `max_frames` evenly spaced valid frames of a source track."""
    landmarks: np.ndarray = track.landmarks  # type: ignore[attr-defined]
    valid: np.ndarray = track.valid  # type: ignore[attr-defined]
    pool = np.flatnonzero(valid) if indices is None else np.asarray(indices)[valid[np.asarray(indices)]]
    if pool.size < 8:
        raise ValueError(f"only {pool.size} frames with a face: too few to fine-tune on")
    pick = pool[np.linspace(0, pool.size - 1, min(max_frames, pool.size)).round().astype(int)]
    crops, pts = [], []
    with track.reader() as reader:  # type: ignore[attr-defined]
        for i in pick:
            a = window.window_affine(landmarks[i], size, margin)
            crops.append(window.crop(reader[int(i)], a, size + 2 * margin))
            pts.append(window.apply(a, landmarks[i, :, :2]))
    points = np.stack(pts)
    return ClipWindows("source", "source", False, np.stack(crops), points, L.mouth_opening(points))


def enroll(track: object, base: Path, steps: int, out: Path | None = None, indices: np.ndarray | None = None,
           threads: int = 1, log: bool = False) -> Path:
    """Fine-tune `base` on the track's frames (optionally only `indices`); returns the enrolled checkpoint."""
    model, _ = load_checkpoint(base)
    cfg = model.config
    track_dir: Path = track.dir  # type: ignore[attr-defined]
    out = out or track_dir / ENROLLED
    # One clip per shot: the training pairs take their references from the same clip, and after a cut the
    # face may be another person's.
    n_shots: int = getattr(track, "n_shots", 1)
    views = [track.for_shot(k) for k in range(n_shots)] if n_shots > 1 else [track]  # type: ignore[attr-defined]
    clips = []
    for view in views:
        try:
            clips.append(track_windows(view, cfg.size, max(2, cfg.size // 16), indices,
                                       max_frames=max(8, 200 // n_shots)))
        except ValueError:  # a shot with too few faces: the others are enough
            continue
    if not clips:
        raise ValueError("no shot has enough frames with a face to fine-tune on")
    run = out.parent / (out.stem + "_run")
    shutil.rmtree(run, ignore_errors=True)  # a fresh run: never resume a fine-tune of other weights
    # Low learning rate, full resolution, no adversarial term: adapt texture without forgetting the task.
    opts = TrainOptions(config=cfg.name, steps=steps, batch=8, lr=2e-4, coarse=0.0, gan_start=2.0,
                        save_every=max(1, steps), eval_every=10**9, threads=threads, init=str(base))
    tuned = train(run, clips, [], opts, log=log)
    tuned_model, _ = load_checkpoint(tuned)
    save_checkpoint(out, tuned_model, extra={"base_sha256": sha256_file(base), "steps": steps,
                                             "frames": sum(len(c.crops) for c in clips)})
    shutil.rmtree(run, ignore_errors=True)
    return out


def enroll_source(video: Path, settings: Settings, steps: int | None = None, target: Target | None = None,
                  progress: Progress = SILENT, log: bool = False) -> Path:
    """Prepare `video` through the prep cache (as `lipdub dub` does) and fine-tune the generic weights on it;
    the result lands in the source's cache entry, where `make_renderer` finds it."""
    weights = generic_weights(settings)
    if not weights.is_file():
        raise FileNotFoundError(f"no DINet weights at {weights}")
    track = prepare_cached(video, settings, progress, target=target)
    return enroll(track, weights, settings.dinet_enroll_steps if steps is None else steps, log=log)
