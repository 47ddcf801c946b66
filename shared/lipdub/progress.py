"""Progress of long stages: a rich bar on a terminal, one line per stage otherwise, or a callback."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol


class Progress(Protocol):
    def stage(self, name: str, total: int) -> StageProgress: ...


class StageProgress(Protocol):
    def __enter__(self) -> Callable[[int], None]: ...
    def __exit__(self, *exc: object) -> None: ...


class ConsoleProgress:
    """Bars when stderr is a TTY; otherwise a single summary line per stage (logs stay readable)."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.tty = sys.stderr.isatty()

    @contextmanager
    def stage(self, name: str, total: int) -> Iterator[Callable[[int], None]]:
        start = time.perf_counter()
        if self.quiet:
            yield lambda n=1: None
            return
        if self.tty:
            from rich.progress import BarColumn, MofNCompleteColumn, TimeRemainingColumn
            from rich.progress import Progress as Bar

            with Bar(f"[bold]{name:<7}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                     transient=False) as bar:
                task = bar.add_task(name, total=total)
                yield lambda n=1: bar.advance(task, n)
        else:
            yield lambda n=1: None
            print(f"{name}: {total} done in {time.perf_counter() - start:.1f}s", file=sys.stderr, flush=True)


class CallbackProgress:
    """Reports each stage's fraction done to `report(stage, fraction)`, at most every `every` seconds."""

    def __init__(self, report: Callable[[str, float], None], every: float = 1.0) -> None:
        self.report, self.every = report, every

    @contextmanager
    def stage(self, name: str, total: int) -> Iterator[Callable[[int], None]]:
        done, last = 0, 0.0

        def advance(n: int = 1) -> None:
            nonlocal done, last
            done += n
            now = time.monotonic()
            if now - last >= self.every:
                last = now
                self.report(name, min(1.0, done / max(total, 1)))

        self.report(name, 0.0)
        yield advance
        self.report(name, 1.0)


SILENT = ConsoleProgress(quiet=True)
