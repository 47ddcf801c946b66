"""Progress of long stages: a rich bar on a terminal, one line per stage otherwise, or a callback."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol


class Advance(Protocol):
    """Called as a stage's work goes on: `advance()` for one unit, `advance(n)` for n."""

    def __call__(self, n: int = 1) -> None: ...


class Progress(Protocol):
    def stage(self, name: str, total: int) -> AbstractContextManager[Advance]: ...


def ignore(n: int = 1) -> None:
    """The Advance of a stage nobody watches."""


class ConsoleProgress:
    """Bars when stderr is a TTY; otherwise a single summary line per stage (logs stay readable).

    Stages may run at once (`lipdub dub` analyses the audio while prep runs): their bars share one display,
    which lives while any of them runs (rich allows one live display at a time)."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self._lock = threading.Lock()
        self._bar: Any = None  # rich.progress.Progress while a stage runs on a TTY
        self._running = 0

    @contextmanager
    def stage(self, name: str, total: int) -> Iterator[Advance]:
        start = time.perf_counter()
        if self.quiet:
            yield ignore
            return
        if not self.tty:
            yield ignore
            print(f"{name}: {total} done in {time.perf_counter() - start:.1f}s", file=sys.stderr, flush=True)
            return
        bar = self._open()
        task = bar.add_task(name, total=total)
        try:
            yield lambda n=1: bar.advance(task, n)
        finally:
            self._close()

    def _open(self) -> Any:
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
        from rich.progress import Progress as Bar

        with self._lock:
            if self._bar is None:
                self._bar = Bar(TextColumn("[bold]{task.description:<7}"), BarColumn(), MofNCompleteColumn(),
                                TimeRemainingColumn())
                self._bar.start()
            self._running += 1
            return self._bar

    def _close(self) -> None:
        with self._lock:
            self._running -= 1
            if self._running == 0:
                self._bar.stop()
                self._bar = None


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
