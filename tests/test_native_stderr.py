"""The CLI's stderr filter drops MediaPipe's native notes and nothing else (lipdub.native_stderr)."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = r'''
import os, sys
from lipdub import native_stderr

with native_stderr.filtered():
    os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
    os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
    os.write(2, b"W0000 00:00:1795935520.438376    8366 inference_feedback_manager.cc:114] Feedback manager\n")
    os.write(2, b"I0000 00:00:1795935520.478895    8366 gl_context.cc:369] GL version: 3.2\n")
    os.write(2, b"E0000 00:00:1795935520.478895    8366 calculator_graph.cc:928] a real error\n")
    print("python stderr", file=sys.stderr)
    os.write(2, b"[mp4 @ 0x55] ffmpeg says something\n")
    os.system("echo child process line >&2")
print("after", file=sys.stderr)
os.write(2, b"W0000 00:00:1.0    1 x.cc:1] after the filter: kept\n")
'''


def test_filter_drops_only_the_native_notes() -> None:
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert sorted(lines) == sorted([
        "E0000 00:00:1795935520.478895    8366 calculator_graph.cc:928] a real error",
        "python stderr", "[mp4 @ 0x55] ffmpeg says something", "child process line", "after",
        "W0000 00:00:1.0    1 x.cc:1] after the filter: kept"]), result.stderr
    assert lines[-2:] == ["after", "W0000 00:00:1.0    1 x.cc:1] after the filter: kept"]  # all drained first
