"""Audio models' speed on one CPU core: real-time factor (audio seconds per compute second) and peak memory.

Targets (issue 5): student ≥ 200x real time, teacher ≥ 50x; both on one thread. Input: 60 s of espeak-ng
speech (repeated demo speech), so the numbers include fbank / Whisper feature extraction.
Run: `python -m bench.bench_audio [--seconds 60]`.
"""

from __future__ import annotations

import os

# One core means one thread everywhere: BLAS (numpy matmuls in the heads, Whisper's mel filterbank) included.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lipdub import SAMPLE_RATE
from lipdub.audio.models import MouthModelName


def speech(seconds: float) -> np.ndarray:
    from lipdub.demo import DEMO_TEXT, speak
    from lipdub.media.audio import load_audio

    with tempfile.TemporaryDirectory() as tmp:
        x = load_audio(speak(DEMO_TEXT, Path(tmp) / "speech.wav"))
    reps = int(np.ceil(seconds * SAMPLE_RATE / len(x)))
    return np.tile(x, reps)[: int(seconds * SAMPLE_RATE)]


def timed(fn, repeats: int) -> tuple[float, float]:
    """(best wall seconds, best CPU seconds of this process) over `repeats` runs after a warm-up.

    On a shared machine the wall time includes waiting for a core; CPU time is what one core spends.
    """
    fn()  # warm-up (model load, allocator)
    wall, cpu = float("inf"), float("inf")
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall, cpu = min(wall, time.perf_counter() - t), min(cpu, time.process_time() - c)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    from lipdub.audio.models import _student, _teacher, load_model
    from lipdub.audio.student import StudentStream

    x = speech(args.seconds)
    dur = len(x) / SAMPLE_RATE
    print(f"audio: {dur:.0f} s of speech, 1 thread")
    rows = []
    names: tuple[MouthModelName, ...] = ("energy", "student", "teacher")
    for name in names:
        model = load_model(name, threads=1)
        rows.append((f"{name} (file: fbank, VAD, lips)", timed(lambda m=model: m(x), args.repeats)))
    student = _student()
    rows.append(("student coefficients only", timed(lambda: student.coeffs(x), args.repeats)))
    teacher = _teacher(None, 1)
    rows.append(("teacher coefficients only", timed(lambda: teacher.coeffs(x), args.repeats)))

    def stream() -> None:
        s = StudentStream(student)
        piece = SAMPLE_RATE // 10  # 100-ms pieces
        for i in range(0, len(x), piece):
            s.push(x[i: i + piece])
        s.flush()

    rows.append(("student streaming, 100-ms pieces", timed(stream, args.repeats)))
    print(f"{'':40s} {'wall':>8s} {'CPU':>8s}  (x real time)")
    for label, (wall, cpu) in rows:
        print(f"{label:40s} {dur / wall:7.0f}x {dur / cpu:7.0f}x")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
