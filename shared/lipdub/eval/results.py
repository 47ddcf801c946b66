"""What an evaluation runs on and what it gives back: the clips, the dub tracks, the options, and each clip's
results (lipdub.eval.protocols computes them, lipdub.eval.report writes them)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from lipdub.config import SyncMode
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
    self_reenactment: dict
    cross_dub: list[dict]
    self_signals: Signals | None = None
    cross_signals: list[Signals] = field(default_factory=list)

    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("self_signals")
        d.pop("cross_signals")
        return d
