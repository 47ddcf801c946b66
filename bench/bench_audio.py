"""Audio models' speed on one CPU core: real-time factor (audio seconds per compute second) and peak memory.

Targets (issue 5): student ≥ 200x real time, teacher ≥ 50x; both on one thread. Input: 60 s of espeak-ng
speech (repeated demo speech), so the numbers include fbank / Whisper feature extraction.
Run: `python -m bench.bench_audio [--seconds 60]`.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lipdub import SAMPLE_RATE


def speech(seconds: float) -> np.ndarray:
    from lipdub.demo import DEMO_TEXT, speak
    from lipdub.media.audio import load_audio

    with tempfile.TemporaryDirectory() as tmp:
        x = load_audio(speak(DEMO_TEXT, Path(tmp) / "speech.wav"))
    reps = int(np.ceil(seconds * SAMPLE_RATE / len(x)))
    return np.tile(x, reps)[: int(seconds * SAMPLE_RATE)]


def timed(fn, repeats: int) -> float:
    fn()  # warm-up (model load, allocator)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


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
    for name in ("energy", "student", "teacher"):
        model = load_model(name, threads=1)  # type: ignore[arg-type]
        sec = timed(lambda: model(x), args.repeats)
        rows.append((f"{name} (file, incl. VAD + lips)", dur / sec))
    student = _student()
    sec = timed(lambda: student.coeffs(x), args.repeats)  # type: ignore[attr-defined]
    rows.append(("student coefficients only", dur / sec))
    teacher = _teacher(None, 1)
    sec = timed(lambda: teacher.coeffs(x), args.repeats)  # type: ignore[attr-defined]
    rows.append(("teacher coefficients only", dur / sec))

    def stream() -> None:
        s = StudentStream(student)  # type: ignore[arg-type]
        piece = SAMPLE_RATE // 10  # 100-ms pieces
        for i in range(0, len(x), piece):
            s.push(x[i: i + piece])
        s.flush()

    sec = timed(stream, args.repeats)
    rows.append(("student streaming, 100-ms pieces", dur / sec))
    for label, rtf in rows:
        print(f"{label:40s} {rtf:8.0f}x real time")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
