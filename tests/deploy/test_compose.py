"""docker-compose.yml and .env.example: validated by docker-compose itself (no engine needed for `config`),
then checked against the design and the code: services, GPU reservation, healthchecks, dependency
conditions, process commands, and an env file that covers every setting."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import yaml

from lipdub.config import Settings
from lipdub.service import processes

from .conftest import K8S, ROOT, env_file, need_tool, service_processes

# Compose services are named after processes.py's processes, plus the CPU variant of the render worker.
LIPDUB_SERVICES = {p.name for p in service_processes()} | {"render_worker_cpu"}
DESIGN = LIPDUB_SERVICES | {"redis", "minio", "minio-init", "flower", "prometheus"}
SECRETS = {"LIPDUB_S3_ACCESS_KEY_ID": "lipdub-test", "LIPDUB_S3_SECRET_ACCESS_KEY": "not-a-real-secret",
           "FLOWER_BASIC_AUTH": "admin:not-a-real-secret"}


def settings_env_names() -> set[str]:
    return {f"LIPDUB_{name.upper()}" for name in Settings.model_fields}


def project_copy(tmp_path: Path, secrets: dict[str, str]) -> Path:
    """The compose file with what it mounts, and a .env made from .env.example plus `secrets`."""
    shutil.copy(ROOT / "docker-compose.yml", tmp_path)
    (tmp_path / "docker").mkdir()
    shutil.copy(ROOT / "docker" / "prometheus.yml", tmp_path / "docker")
    lines = []
    for line in (ROOT / ".env.example").read_text().splitlines():
        key = line.partition("=")[0]
        lines.append(f"{key}={secrets[key]}" if key in secrets else line)
    (tmp_path / ".env").write_text("\n".join(lines) + "\n")
    return tmp_path


def docker_compose(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # A clean environment: the developer's own LIPDUB_* or COMPOSE_* variables must not leak in.
    env = {"PATH": os.environ["PATH"], "HOME": str(project)}
    return subprocess.run([need_tool("docker-compose"), *args], check=False, cwd=project, env=env,
                          capture_output=True, text=True, timeout=120)


def test_docker_compose_accepts_the_file_with_env_example(tmp_path):
    project = project_copy(tmp_path, SECRETS)
    result = docker_compose(project, "config")
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    assert set(resolved["services"]) == DESIGN
    api = resolved["services"]["api"]
    assert api["environment"]["LIPDUB_S3_ACCESS_KEY_ID"] == SECRETS["LIPDUB_S3_ACCESS_KEY_ID"]
    assert resolved["services"]["minio"]["environment"]["MINIO_ROOT_PASSWORD"] == SECRETS[
        "LIPDUB_S3_SECRET_ACCESS_KEY"]


def test_docker_compose_refuses_to_start_without_secrets(tmp_path):
    """No credentials are baked in: with the SECRET lines of .env.example left empty, compose stops."""
    project = project_copy(tmp_path, {"FLOWER_BASIC_AUTH": "admin:x"})
    result = docker_compose(project, "config", "-q")
    assert result.returncode != 0
    assert "LIPDUB_S3_ACCESS_KEY_ID" in result.stderr


def test_services_of_the_design_exist_with_profiles(compose):
    services = compose["services"]
    assert set(services) == DESIGN
    assert services["render_worker"]["profiles"] == ["gpu"]
    assert services["render_worker_cpu"]["profiles"] == ["cpu"]
    assert services["prometheus"]["profiles"] == ["metrics"]
    unprofiled = {name for name, s in services.items() if "profiles" not in s}
    assert unprofiled == DESIGN - {"render_worker", "render_worker_cpu", "prometheus"}


def test_render_worker_reserves_one_nvidia_gpu(compose):
    gpu = compose["services"]["render_worker"]
    assert gpu["deploy"]["resources"]["reservations"]["devices"] == [
        {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert gpu["build"]["target"] == "cuda" and gpu["environment"]["LIPDUB_DEVICE"] == "cuda"
    cpu = compose["services"]["render_worker_cpu"]
    assert "deploy" not in cpu and cpu["build"]["target"] == "cpu"
    assert cpu["environment"]["LIPDUB_DEVICE"] == "cpu"
    assert cpu["command"] == gpu["command"]


def test_healthchecks_and_dependency_conditions(compose):
    services = compose["services"]
    for name, service in services.items():
        if name == "minio-init":
            assert "healthcheck" not in service and service["restart"] == "no"
            continue
        assert service["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name
        for dep, cond in service.get("depends_on", {}).items():  # the map form: every edge has a condition
            wanted = "service_completed_successfully" if dep == "minio-init" else "service_healthy"
            assert cond == {"condition": wanted}, f"{name} → {dep}"
    for name in LIPDUB_SERVICES:
        assert set(services[name]["depends_on"]) == {"redis", "minio-init"}, name


def test_commands_are_the_ones_processes_py_declares(compose):
    services = compose["services"]
    for process in service_processes():
        assert services[process.name]["command"] == list(process.argv), process.name
    assert services["render_worker_cpu"]["command"] == list(processes.render_worker().argv)
    local = processes.redis_server().argv
    redis = services["redis"]["command"]
    for flag in ("--appendonly", "--appendfsync", "--maxmemory-policy", "--save"):
        assert redis[redis.index(flag) + 1] == local[local.index(flag) + 1], flag
    assert services["redis"]["volumes"] == ["redis-data:/data"]


def test_worker_healthcheck_pings_its_own_node(compose):
    for process in service_processes():
        if not process.queues:
            continue
        service = compose["services"][process.name]
        node = process.argv[process.argv.index("-n") + 1]
        assert node == f"{service['environment']['WORKER_NAME']}@%h"
        test = service["healthcheck"]["test"]
        assert test[0] == "CMD-SHELL" and '-d "$${WORKER_NAME}@$$(hostname)"' in test[1]
        # Longer than the longest task: SIGTERM's warm shutdown lets it finish.
        grace = service["stop_grace_period"]
        assert grace.endswith("m") and int(grace[:-1]) * 60 > Settings().task_time_limit, process.name


def test_lipdub_services_share_one_env_file_and_image_build(compose):
    for name in LIPDUB_SERVICES:
        service = compose["services"][name]
        assert service["env_file"] == ".env", name
        assert service["build"]["dockerfile"] == "docker/Dockerfile"
        for key in service.get("environment", {}):
            assert key in settings_env_names() or key == "WORKER_NAME", f"{name}: {key}"


def test_no_secret_values_in_the_compose_file(compose):
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if re.search(r"SECRET|PASSWORD|ACCESS_KEY|AUTH|KEY$", key):
                assert re.fullmatch(r"\$\{[A-Z0-9_]+(:\?[^}]*)?\}", str(value)), f"{name}: {key} is a literal"


def test_env_example_covers_every_setting_and_only_settings(env_example):
    """Every field of lipdub.config.Settings has a LIPDUB_ line (commented out when its default is None),
    and every LIPDUB_ line is a field."""
    text = (ROOT / ".env.example").read_text()
    commented = set(re.findall(r"^#(LIPDUB_[A-Z0-9_]+)=", text, re.MULTILINE))
    lipdub = {k for k in env_example if k.startswith("LIPDUB_")} | commented
    missing = settings_env_names() - lipdub
    assert not missing, f"run .venv/bin/python docker/env_example.py; missing: {sorted(missing)}"
    unknown = lipdub - settings_env_names()
    assert not unknown, f".env.example has variables no setting reads: {sorted(unknown)}"


def test_env_example_documents_every_variable():
    lines = (ROOT / ".env.example").read_text().splitlines()
    for i, line in enumerate(lines):
        if line and not line.startswith("#"):
            assert i > 0 and lines[i - 1].startswith("#"), f"no comment above {line!r}"


def test_env_example_values_are_valid_settings(monkeypatch, tmp_path):
    """Read the way a container reads it (dotenv parsing, JSON for lists), every value is valid: the set
    ones, and the commented defaults once uncommented (empty ones mean None and stay commented)."""
    for key in list(os.environ):
        if key.startswith("LIPDUB_"):
            monkeypatch.delenv(key)
    example = ROOT / ".env.example"
    settings = Settings(_env_file=example)  # type: ignore[call-arg]
    assert settings.storage == "s3" and settings.redis_url == "redis://redis:6379/0"
    assert settings.s3_endpoint_url == "http://minio:9000" and str(settings.data_dir) == "/var/lib/lipdub"
    uncommented = tmp_path / "uncommented.env"
    uncommented.write_text("\n".join(re.sub(r"^#(LIPDUB_[A-Z0-9_]+=.+)$", r"\1", line)
                                      for line in example.read_text().splitlines()))
    assert len(env_file(uncommented)) > len(env_file(example))
    Settings(_env_file=uncommented)  # type: ignore[call-arg]


def test_every_variable_compose_interpolates_is_in_env_example(env_example):
    text = (ROOT / "docker-compose.yml").read_text()
    used = set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+)", text))
    assert used, "no ${VAR} found: the pattern is wrong"
    assert used <= set(env_example), f"not in .env.example: {sorted(used - set(env_example))}"


def test_compose_and_k8s_redis_commands_and_images_agree(compose):
    k8s_redis = yaml.safe_load_all((K8S / "components" / "in-cluster-deps" / "redis.yaml").read_text())
    (statefulset, _) = list(k8s_redis)
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    assert container["image"] == compose["services"]["redis"]["image"]
    assert container["args"][: len(compose["services"]["redis"]["command"])] == compose["services"]["redis"][
        "command"]


def test_env_file_parser_reads_env_example():
    # env_file() is what the other tests trust; it must see every assignment line.
    n_lines = sum(1 for line in (ROOT / ".env.example").read_text().splitlines()
                  if re.match(r"^[A-Z_][A-Z0-9_]*=", line))
    assert len(env_file(ROOT / ".env.example")) == n_lines > 5
