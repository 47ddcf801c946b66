"""Build-time check of a lipdub image: every service process can start its Python side.

Run by docker/Dockerfile after the install (a failing import or a missing model file fails the build
instead of the first job), and by tests/deploy against the development venv. It reads the process list
from lipdub.service.processes, so a new process is checked without editing this file.

    python docker/check_image.py --torch cpu|cuda|any
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

from lipdub.service import processes
from lipdub.service.processes import Process


def python_modules(process: Process) -> list[str]:
    """The modules a process command imports: `celery -A MODULE ...` and `uvicorn MODULE:ATTR ...`."""
    argv = process.argv
    if argv[0] == "celery":
        return [argv[argv.index("-A") + 1]]
    if argv[0] == "uvicorn":
        return [argv[1].split(":", 1)[0]]
    return []  # redis-server, moto_server: not part of the image


def service_processes() -> list[Process]:
    """The processes the images run (the local stack's infrastructure, redis and s3, is not among them)."""
    found = {p.name: p for p in processes.stack() if python_modules(p)}
    if hasattr(processes, "webhooks"):  # the webhooks worker (issue 8)
        found.setdefault("webhooks", processes.webhooks())
    return list(found.values())


def check_torch(flavour: str) -> str:
    import torch

    cuda = torch.version.cuda
    if flavour == "cpu" and cuda is not None:
        raise SystemExit(f"torch {torch.__version__} is a CUDA build (CUDA {cuda}); the cpu image wants +cpu")
    if flavour == "cuda" and cuda is None:
        raise SystemExit(f"torch {torch.__version__} is a CPU-only build; the cuda image needs CUDA")
    return f"torch {torch.__version__} (CUDA {cuda})"


def check_face_model() -> str:
    """MediaPipe's face-mesh model ships inside the mediapipe wheel; building the graph loads it."""
    from lipdub.face.mesh import FaceMesh

    FaceMesh().close()
    return "face mesh model loaded"


def check_audio_model() -> str:
    """The audio stage's mouth model named by the settings, with the weights shipped inside lipdub."""
    if importlib.util.find_spec("lipdub.audio.models") is None:
        return "audio models: lipdub.audio.models not in this version"
    from lipdub.audio.models import load_model
    from lipdub.config import get_settings

    settings = get_settings()
    model = load_model(settings.audio_model, settings.audio_encoder, settings.audio_threads)
    return f"audio model {model.name} loaded"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch", choices=("cpu", "cuda", "any"), default="any")
    args = parser.parse_args()
    for process in service_processes():
        for module in python_modules(process):
            importlib.import_module(module)
            print(f"ok {process.name}: import {module}")
    print("ok", check_torch(args.torch))
    print("ok", check_face_model())
    print("ok", check_audio_model())


if __name__ == "__main__":
    sys.exit(main())
