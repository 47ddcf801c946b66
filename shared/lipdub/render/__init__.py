"""Render stage: re-draw the mouth region of each frame for a target mouth opening.

Two renderers share the `Renderer` protocol of `lipdub.render.protocols`: the geometric `warp.WarpRenderer`
(fast fallback) and the neural `dinet_renderer.DinetRenderer`; `make_renderer` picks one from the settings.
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from lipdub.digest import sha256_file
from lipdub.render.warp import WarpRenderer

if TYPE_CHECKING:
    from lipdub.config import Settings
    from lipdub.prep.track import SourceTrack
    from lipdub.render.protocols import Renderer

log = logging.getLogger(__name__)

ENROLLED = "dinet_enrolled.pt"  # per-source fine-tuned generator, cached next to the source track


def packaged_weights(config: str = "mini") -> Path:
    return Path(str(resources.files("lipdub.render").joinpath("weights", f"dinet_{config}.pt")))


def generic_weights(settings: Settings) -> Path:
    return settings.dinet_weights or packaged_weights()


def current_enrolment(track_dir: Path, weights: Path) -> Path | None:
    """The source's fine-tuned generator (`lipdub enroll`, or the job option `enroll`) when it was tuned from
    `weights` as they are now; a fine-tune of older generic weights is stale once those change."""
    enrolled = track_dir / ENROLLED
    if not enrolled.is_file():
        return None
    import torch

    extra = torch.load(enrolled, map_location="cpu", weights_only=True).get("extra", {})
    return enrolled if extra.get("base_sha256") == sha256_file(weights) else None


def make_renderer(track: SourceTrack, settings: Settings, device: str = "cpu") -> Renderer:
    """The renderer the settings ask for; DINet without weights falls back to the warp renderer. The exemplar
    renderer reads the shot's frames once to build its mouth library."""
    if settings.renderer == "warp":
        return WarpRenderer()
    if settings.renderer == "exemplar":
        # lazy: scipy's RBF; no weights, the shot's own frames are its mouths
        from lipdub.render.exemplar import ExemplarRenderer

        return ExemplarRenderer.for_track(track)
    # lazy: torch (2 s); a deployment on the warp renderer never loads it
    from lipdub.render.dinet_renderer import DinetRenderer

    weights = generic_weights(settings)
    if not weights.is_file():
        log.warning("no DINet weights at %s: using the warp renderer", weights)
        return WarpRenderer()
    return DinetRenderer.for_track(track, current_enrolment(track.dir, weights) or weights, device)
