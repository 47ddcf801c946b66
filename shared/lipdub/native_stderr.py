"""Keep MediaPipe's native start-up notes off the command line's stderr.

MediaPipe 0.10.21 writes a few notes straight to file descriptor 2 when a graph starts (the TFLite XNNPACK
delegate, the feedback manager, NORM_RECT), through absl before any log setup; no environment variable
silences them (GLOG_minloglevel and TF_CPP_MIN_LOG_LEVEL were tried). On a terminal they bury the
progress bars and read like problems. `filtered()` points descriptor 2 at a pipe whose reader drops
absl's INFO and WARNING lines and those two TFLite banners, and passes everything else through (absl
errors, ffmpeg's messages); Python's own stderr (rich's progress bars, our errors) is moved to a copy of
the real descriptor, so it is neither delayed nor filtered. Only the CLI uses this: service workers
keep every line in their logs.
"""

from __future__ import annotations

import io
import os
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# `W0000 00:00:1795935520.438376    8366 inference_feedback_manager.cc:114] ...` (absl's prefix: severity,
# date, time, thread, file:line) and the banners TFLite and absl print without one.
NOTE = re.compile(rb"^(?:[IW]\d{4} \d\d:\d\d:[\d.]+ +\d+ [\w.+-]+:\d+\] "
                  rb"|INFO: Created TensorFlow Lite XNNPACK delegate"
                  rb"|WARNING: All log messages before absl::InitializeLog\(\) is called)")


def _drain(pipe: int, out: int) -> None:
    """Copy the pipe to `out` without the notes, until every write end is closed; then close both."""
    try:
        with os.fdopen(pipe, "rb") as lines:
            for line in lines:
                if not NOTE.match(line):
                    os.write(out, line)
    except OSError:  # the terminal went away: nothing left to show the lines on
        pass
    finally:
        os.close(out)


@contextmanager
def filtered() -> Iterator[None]:
    try:
        sys.stderr.flush()
        real = os.dup(2) if sys.stderr.fileno() == 2 else -1
    except (OSError, ValueError, io.UnsupportedOperation):  # no descriptor 2 (detached), or a test's buffer
        real = -1
    if real < 0:
        yield
        return
    python_stderr = sys.stderr
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    # Line-buffered, so a line reaches the terminal in one write and no filtered line lands inside it.
    sys.stderr = io.TextIOWrapper(os.fdopen(os.dup(real), "wb"), encoding=python_stderr.encoding,
                                  errors="backslashreplace", line_buffering=True)
    reader = threading.Thread(target=_drain, args=(read_end, os.dup(real)), name="native-stderr", daemon=True)
    reader.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        sys.stderr.close()
        sys.stderr = python_stderr
        os.dup2(real, 2)  # the pipe's last write end closes: the reader drains what is left and ends
        os.close(real)
        reader.join(timeout=2)  # longer only if a child process still holds the pipe; it ends with it
