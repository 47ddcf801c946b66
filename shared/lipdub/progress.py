"""Progress of long stages: a rich bar on a terminal, one line per stage otherwise, or a callback."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol


class Advance(Protocol):
    """Called as a stage's work goes on: `advance()` for one unit, `advance(n)` for n."""

    def __call__(self, n: int = 1) -> None: ...


class Progress(Protocol):
    def stage(self, name: str, total: int) -> AbstractContextManager[Advance]: ...


def ignore(n: int = 1) -> None:
    """The Advance of a stage nobody watches."""


class ConsoleProgress:
    """Bars when stderr is a TTY; otherwise a single summary line per stage (logs stay readable)."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.tty = sys.stderr.isatty()

    @contextmanager
    def stage(self, name: str, total: int) -> Iterator[Advance]:
        start = time.perf_counter()
        if self.quiet:
            yield ignore
            return
        if self.tty:
            from rich.progress import BarColumn, MofNCompleteColumn, TimeRemainingColumn
            from rich.progress import Progress as Bar

            with Bar(f"[bold]{name:<7}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                     transient=False) as bar:
                task = bar.add_task(name, total=total)

                def advance(n: int = 1) -> None:
                    bar.advance(task, n)

                yield advance
        else:
            yield ignore
            print(f"{name}: {total} done in {time.perf_counter() - start:.1f}s", file=sys.stderr, flush=True)


class CallbackProgress:
    """Reports each stage's fraction done to `report(stage, fraction)`, at most every `every` seconds."""

    def __init__(self, report: Callable[[str, float], None], every: float = 1.0) -> None:
        self.report, self.every = report, every

    @contextmanager
    def stage(self, name: str, total: int) -> Iterator[Advance]:
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
