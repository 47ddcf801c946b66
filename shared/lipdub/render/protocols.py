"""What the render stage asks of a renderer (lipdub.render.video), and what it tells of the frames.

`Renderer` re-draws one frame for a target mouth opening; `BatchRenderer` (the DINet and exemplar renderers)
also takes full target landmark sets, several frames per call, in two halves that the render stage runs on
two threads. `CountsUnmatched` is a renderer that can lack the asked-for mouth (the exemplar renderer: a
shape the source never shows); the render stage adds up its count for the job's report.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np


class Renderer(Protocol):
    name: str

    def __call__(self, frame: np.ndarray, points: np.ndarray, opening: float) -> np.ndarray: ...


@runtime_checkable
class BatchRenderer(Protocol):
    name: str
    batch: int

    def target(self, points: np.ndarray, opening: float, lips: np.ndarray | None = None) -> np.ndarray: ...

    def prepare(self, frames: list[np.ndarray], points: list[np.ndarray],
                targets: list[np.ndarray]) -> list[Any]: ...

    def finish(self, prepared: list[Any]) -> list[np.ndarray]: ...


@runtime_checkable
class CountsUnmatched(Protocol):
    unmatched: int  # frames drawn without a mouth of the target's shape (the nearest one, or the warp)


@dataclass(frozen=True)
class Rendered:
    """What `render_video` did: frames shown as the source has them (no usable face, or outside the dub's
    ranges), and re-drawn frames whose mouth shape the source lacked (`CountsUnmatched`)."""

    passed_through: int
    unmatched: int = 0
