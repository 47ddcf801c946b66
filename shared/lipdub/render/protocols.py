"""What the render stage asks of a renderer (lipdub.render.video).

`Renderer` re-draws one frame for a target mouth opening; `BatchRenderer` (the DINet renderer) also takes
full target landmark sets, several frames per call, in two halves that the render stage runs on two threads.
"""

from __future__ import annotations

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
