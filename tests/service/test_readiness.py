"""Worker readiness means models loaded: each stage worker loads its models in a `worker_process_init`
handler, before it consumes or answers `celery inspect ping` (the compose and k8s readiness probes)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from lipdub.service import processes
from lipdub.service.stack import REPO, StackConfig


def test_stage_workers_load_their_models_before_they_are_ready(stack: StackConfig) -> None:
    for name, model in (("prep_worker", "face mesh"), ("audio_worker", "audio model energy"),
                        ("render_worker", "face mesh")):  # the render worker's sync estimate tracks faces
        log = (stack.root / f"{name}.log").read_text(errors="replace")
        loaded, ready = log.find(f"warm-up: {model} loaded in"), log.find(" ready.")
        assert 0 <= loaded < ready, f"{name}: models not loaded before ready\n{log[-2000:]}"


def test_a_worker_whose_model_cannot_load_exits_and_never_reports_ready(stack: StackConfig, tmp_path: Path) -> None:
    weights = tmp_path / "broken.pt"
    weights.write_bytes(b"not a checkpoint")
    weights.with_name("broken.pt.sha256").write_text("0" * 64 + "\n")
    argv = list(processes.render_worker().argv)
    argv[0] = str(Path(sys.executable).parent / "celery")
    argv[argv.index("-Q") + 1] = "readiness-test"  # never takes the stack's tasks, even if it came up
    argv[argv.index("-n") + 1] = "broken_render@%h"
    env = {**os.environ, **stack.environment(), "LIPDUB_RENDERER": "dinet", "LIPDUB_DINET_WEIGHTS": str(weights),
           "PYTHONPATH": os.pathsep.join(str(REPO / p) for p in processes.SERVICE_PATHS)}
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output[-2000:]
    assert "DINet renderer broken.pt could not be loaded" in output and " ready." not in output, output[-2000:]
