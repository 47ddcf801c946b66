"""Progress of an evaluation run: one rich display with an overall bar and a bar for the current stage.

`EvalProgress` also satisfies `lipdub.progress.Progress`, so the pipeline's own stages (prep, audio,
render, mux) show up in the same display while a protocol dubs a clip.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from lipdub.progress import Advance


class EvalProgress:
    def __init__(self, total_steps: int, quiet: bool = False) -> None:
        self.quiet = quiet
        self.console = Console(stderr=True)
        self.live = not quiet and sys.stderr.isatty()
        self._bar = Progress(TextColumn("[bold]{task.description:<34}"), BarColumn(), MofNCompleteColumn(),
                             TimeElapsedColumn(), TimeRemainingColumn(), console=self.console,
                             disable=not self.live)
        self._overall = self._bar.add_task("evaluation", total=total_steps)
        self._started = time.perf_counter()

    def __enter__(self) -> EvalProgress:
        self._bar.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._bar.stop()

    def log(self, message: str) -> None:
        if not self.quiet:
            self.console.print(message)

    def describe(self, label: str) -> None:
        """Name what the overall bar is working on (the clip)."""
        self._bar.update(self._overall, description=label[:34])

    def step_done(self, label: str) -> None:
        self._bar.advance(self._overall)
        if not self.live and not self.quiet:
            done = int(self._bar.tasks[0].completed)
            total = int(self._bar.tasks[0].total or 0)
            elapsed = time.perf_counter() - self._started
            print(f"[{done}/{total}] {label} ({elapsed:.0f}s)", file=sys.stderr, flush=True)

    @contextmanager
    def stage(self, name: str, total: int) -> Iterator[Advance]:
        task = self._bar.add_task(f"  {name}", total=max(total, 1))

        def advance(n: int = 1) -> None:
            self._bar.advance(task, n)

        try:
            yield advance
        finally:
            self._bar.remove_task(task)
