"""What an evaluation runs on and what it gives back: the clips, the dub tracks, the options, and each clip's
results (lipdub.eval.protocols computes them, lipdub.eval.report writes them)."""

from __future__ import annotations

from copy import deepcopy
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lipdub.config import SyncMode
from lipdub.eval.sheets import SheetRows
from lipdub.eval.sync import SyncResult


@dataclass(frozen=True)
class EvalClip:
    id: str
    video: Path
    audio: Path | None = None  # the clip's own soundtrack when it is a separate file (paired wav)


@dataclass(frozen=True)
class DubAudio:
    id: str
    path: Path
    language: str = ""


@dataclass(frozen=True)
class EvalOptions:
    max_seconds: float = 10.0  # clips and dub tracks are cut to this (keeps a corpus run short)
    cross_sync_mode: SyncMode = "bounce"  # the service default
    frame_stride: int = 1  # image metrics on every n-th frame (landmark metrics always use all frames)


@dataclass
class Signals:
    """Per-frame signals kept for plots (not written to the JSON report)."""

    envelope: np.ndarray
    speech: np.ndarray
    mouths: dict[str, np.ndarray] = field(default_factory=dict)
    curves: dict[str, SyncResult] = field(default_factory=dict)


@dataclass
class ClipResult:
    clip: str
    frames: int
    ground_truth: dict
    self_reenactment: dict  # reversed source
    cross_dub: list[dict]
    self_signals: Signals | None = None
    cross_signals: list[Signals] = field(default_factory=list)
    split_clip: dict = field(default_factory=dict)  # first half as source, second half as audio and truth
    split_signals: Signals | None = None
    sheets: dict[str, SheetRows] = field(default_factory=dict)  # mouth crops per protocol (contact sheet)

    def to_json(self) -> dict:
        kept = ("clip", "frames", "ground_truth", "self_reenactment", "split_clip", "cross_dub")
        return {k: deepcopy(getattr(self, k)) for k in kept}
