"""Kubernetes manifests: rendered with kustomize, validated against the Kubernetes schemas offline, and
checked against the code they deploy (process commands, queues, settings, task time limits)."""

from __future__ import annotations

import copy
import os
import shlex
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
from kubernetes_validate.utils import SchemaNotFoundError

from lipdub.config import Settings
from lipdub.service import processes
from lipdub.service.celery_app import queue_lists

from .conftest import K8S, OVERLAYS, Doc, by_kind, containers, env_file, k8s_name, service_processes

# The oldest Kubernetes we claim (autoscaling/v2, policy/v1 and batch/v1 Job TTLs are all GA there) and
# the newest the schema package knows.
K8S_VERSIONS = ("1.29.0", kubernetes_validate.utils.latest_version())
KEDA_API = "keda.sh/v1alpha1"
WORKERS = [p for p in service_processes() if p.queues]


def option(argv: tuple[str, ...] | list[str], flag: str) -> str:
    return argv[list(argv).index(flag) + 1]


def deployment(docs: list[Doc], name: str) -> Doc:
    deployments = by_kind(docs, "Deployment")
    assert name in deployments, f"no Deployment {name}; have {sorted(deployments)}"
    return deployments[name]


def config_map(docs: list[Doc]) -> dict[str, str]:
    maps = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("lipdub-config")]
    assert len(maps) == 1
    return maps[0]["data"]


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("target", ["base", *OVERLAYS])
def test_manifests_validate_against_kubernetes_schemas(rendered, target, version):
    docs = rendered[target]
    assert docs
    for doc in docs:
        if doc["apiVersion"] == KEDA_API:
            continue  # no schema in kubernetes-validate; test_keda_* below check these field by field
        # strict: unknown fields (a typo such as `readinesProbe`) fail too.
        kubernetes_validate.validate(doc, version, strict=True)


def test_schema_validation_rejects_a_broken_manifest(rendered):
    """The validator is not a no-op: a misspelt probe and a string replica count are caught."""
    doc = copy.deepcopy(deployment(rendered["cpu"], "lipdub-api"))
    doc["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"httpGet": {"path": "/readyz"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSIONS[0], strict=True)
    doc = copy.deepcopy(deployment(rendered["cpu"], "lipdub-api"))
    doc["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSIONS[0], strict=True)
    with pytest.raises(SchemaNotFoundError):
        kubernetes_validate.validate({"apiVersion": KEDA_API, "kind": "ScaledObject"}, K8S_VERSIONS[0])


def test_secret_template_validates_and_is_not_rendered(rendered, secret_template):
    kubernetes_validate.validate(secret_template, K8S_VERSIONS[0], strict=True)
    for target, docs in rendered.items():
        assert not by_kind(docs, "Secret"), f"{target} renders a Secret: credentials must not be committed"


@pytest.mark.parametrize("target", ["base", *OVERLAYS])
def test_commands_are_the_ones_processes_py_declares(rendered, target):
    for process in service_processes():
        (container,) = deployment(rendered[target], k8s_name(process.name))["spec"]["template"]["spec"][
            "containers"]
        assert container["command"] == list(process.argv), process.name
        assert "args" not in container


@pytest.mark.parametrize("target", ["base", *OVERLAYS])
def test_every_container_has_requests_limits_probes_and_runs_unprivileged(rendered, target):
    for kind in ("Deployment", "StatefulSet", "Job"):
        for name, doc in by_kind(rendered[target], kind).items():
            pod = doc["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True, name
            for c in containers(doc):
                for part in ("requests", "limits"):
                    assert {"cpu", "memory"} <= set(c["resources"][part]), f"{name}: {part}"
                assert c["securityContext"]["allowPrivilegeEscalation"] is False, name
                if kind != "Job":
                    assert {"startupProbe", "readinessProbe", "livenessProbe"} & set(c), f"{name}: no probe"


@pytest.mark.parametrize("target", OVERLAYS)
def test_api_probes_health_endpoints_and_is_autoscaled(rendered, target):
    docs = rendered[target]
    api = deployment(docs, "lipdub-api")
    (c,) = api["spec"]["template"]["spec"]["containers"]
    port = int(option(c["command"], "--port"))
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"http": port}
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    service = by_kind(docs, "Service")["lipdub-api"]
    assert service["spec"]["selector"].items() <= api["spec"]["template"]["metadata"]["labels"].items()
    hpa = by_kind(docs, "HorizontalPodAutoscaler")["lipdub-api"]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": "lipdub-api"}
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]


@pytest.mark.parametrize("target", OVERLAYS)
def test_worker_readiness_pings_its_own_celery_node(rendered, target):
    """The startup probe addresses the node name the command gives the worker (-n NAME@%h, %h being the
    pod's hostname), so a pod is ready only when its own worker answers."""
    for process in WORKERS:
        (c,) = deployment(rendered[target], k8s_name(process.name))["spec"]["template"]["spec"]["containers"]
        node = option(process.argv, "-n")
        assert node.endswith("@%h")
        probe = c["startupProbe"]["exec"]["command"]
        assert probe[:2] == ["sh", "-c"]
        words = shlex.split(probe[2])
        assert words[:5] == ["exec", "celery", "-A", "lipdub.service.celery_app", "inspect"]
        assert words[5] == "ping"
        assert option(words, "-d") == node.replace("%h", "$(hostname)")
        # A periodic ping would fail on a worker busy in its single solo-pool slot.
        assert "livenessProbe" not in c and "readinessProbe" not in c


@pytest.mark.parametrize("target", ["base", *OVERLAYS])
def test_workers_outlast_their_longest_task_on_shutdown(rendered, target):
    """SIGTERM → Celery warm shutdown finishes the running task; the kill must come after the longest one
    (task_time_limit), and Redis must not redeliver a task still running (visibility_timeout)."""
    docs = rendered[target]
    config = config_map(docs)
    defaults = Settings()
    time_limit = int(config.get("LIPDUB_TASK_TIME_LIMIT", defaults.task_time_limit))
    visibility = int(config.get("LIPDUB_VISIBILITY_TIMEOUT", defaults.visibility_timeout))
    assert visibility > time_limit
    for process in WORKERS:
        grace = deployment(docs, k8s_name(process.name))["spec"]["template"]["spec"][
            "terminationGracePeriodSeconds"]
        assert grace > time_limit, process.name
    for name in by_kind(docs, "Deployment"):
        assert name in by_kind(docs, "PodDisruptionBudget"), f"{name} has no PodDisruptionBudget"


def test_keda_scaledobjects_have_required_fields_and_cover_every_queue(rendered, secret_template):
    for target in ("base", *OVERLAYS):
        docs = rendered[target]
        scaled = by_kind(docs, "ScaledObject")
        auths = by_kind(docs, "TriggerAuthentication")
        covered: set[str] = set()
        for name, so in scaled.items():
            assert so["apiVersion"] == KEDA_API
            spec = so["spec"]
            target_name = spec["scaleTargetRef"]["name"]
            (c,) = deployment(docs, target_name)["spec"]["template"]["spec"]["containers"]
            queues = option(c["command"], "-Q").split(",")
            assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"], name
            assert isinstance(spec["cooldownPeriod"], int) and spec["pollingInterval"] > 0
            lists = []
            for trigger in spec["triggers"]:
                assert trigger["type"] == "redis"
                meta = trigger["metadata"]
                # KEDA metadata values are strings; listName and listLength are required.
                assert all(isinstance(v, str) for v in meta.values()), meta
                assert meta["listName"] and int(meta["listLength"]) >= 1
                assert int(meta.get("activationListLength", "0")) >= 0
                auth = auths[trigger["authenticationRef"]["name"]]
                params = {ref["parameter"]: ref for ref in auth["spec"]["secretTargetRef"]}
                assert "address" in params or "address" in meta or "addressFromEnv" in meta
                for ref in params.values():
                    assert ref["name"] == secret_template["metadata"]["name"]
                    assert ref["key"] in secret_template["stringData"], ref
                db = urlsplit(secret_template["stringData"]["LIPDUB_REDIS_URL"]).path.strip("/") or "0"
                assert meta.get("databaseIndex", "0") == db
                lists.append(meta["listName"])
            # One trigger per Redis list of every queue the worker consumes (priority lists included).
            assert sorted(lists) == sorted(lst for q in queues for lst in queue_lists(q)), name
            covered.update(queues)
        consumed = {q for p in WORKERS for q in p.queues}
        assert consumed <= covered, f"{target}: queues without autoscaling: {consumed - covered}"
        assert covered <= set(processes.QUEUES), f"{target}: autoscaled on unknown queues"


def test_gpu_overlay_puts_only_the_render_worker_on_gpu_nodes(rendered):
    docs = rendered["gpu"]
    for name, doc in by_kind(docs, "Deployment").items():
        pod = doc["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        limits, requests = c["resources"]["limits"], c["resources"]["requests"]
        if name == k8s_name(processes.render_worker().name):
            assert limits["nvidia.com/gpu"] == 1
            assert requests.get("nvidia.com/gpu", 1) == 1  # GPUs: limits only, or requests equal to them
            assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
            toleration = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
            assert toleration in pod["tolerations"]
            assert c["image"].endswith(":cuda")
            assert {"name": "LIPDUB_DEVICE", "value": "cuda"} in c["env"]
        else:
            assert "nvidia.com/gpu" not in limits and "tolerations" not in pod, name
            assert c["image"].endswith(":cpu")


def test_cpu_overlay_uses_no_gpu_and_runs_on_the_cpu_image(rendered):
    text = repr(rendered["cpu"])
    assert "nvidia" not in text and ":cuda" not in text
    assert config_map(rendered["cpu"])["LIPDUB_DEVICE"] == "cpu"


def test_in_cluster_redis_and_minio_only_where_asked(rendered, secret_template):
    """cpu overlay: self-contained (Redis with the stack's persistence flags, MinIO, bucket Job);
    gpu overlay: external Redis/S3 from config only."""
    cpu, gpu = rendered["cpu"], rendered["gpu"]
    stateful = by_kind(cpu, "StatefulSet")
    assert set(stateful) == {"lipdub-redis", "lipdub-minio"}
    (redis,) = stateful["lipdub-redis"]["spec"]["template"]["spec"]["containers"]
    local = processes.redis_server().argv
    for flag in ("--appendonly", "--appendfsync", "--maxmemory-policy", "--save"):
        assert option(redis["args"], flag) == option(local, flag), flag
    assert redis["volumeMounts"][0]["mountPath"] == option(redis["args"], "--dir")
    assert stateful["lipdub-redis"]["spec"]["volumeClaimTemplates"]
    # The Secret template's default Redis and KEDA address are this in-cluster Service.
    service = by_kind(cpu, "Service")
    url = urlsplit(secret_template["stringData"]["LIPDUB_REDIS_URL"])
    assert f"{url.hostname}:{url.port}" == secret_template["stringData"]["REDIS_ADDRESS"]
    assert url.hostname == "lipdub-redis" and service["lipdub-redis"]["spec"]["ports"][0]["port"] == url.port
    endpoint = urlsplit(config_map(cpu)["LIPDUB_S3_ENDPOINT_URL"])
    assert endpoint.hostname in service and endpoint.port in [p["port"] for p in service[endpoint.hostname][
        "spec"]["ports"]]
    assert "lipdub-minio-bucket" in by_kind(cpu, "Job")
    # The password-less in-cluster Redis is fenced to lipdub's pods and KEDA.
    policy = by_kind(cpu, "NetworkPolicy")["lipdub-redis"]["spec"]
    redis_labels = stateful["lipdub-redis"]["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= redis_labels.items()
    assert policy["ingress"][0]["ports"] == [{"port": url.port, "protocol": "TCP"}]
    assert not by_kind(gpu, "StatefulSet") and not by_kind(gpu, "Job")
    assert "LIPDUB_S3_ENDPOINT_URL" not in config_map(gpu)  # AWS S3: boto3's own endpoint


@pytest.mark.parametrize("target", ["base", *OVERLAYS])
def test_config_holds_only_settings_and_no_secrets(rendered, target, monkeypatch):
    fields = {f"LIPDUB_{name.upper()}" for name in Settings.model_fields}
    config = config_map(rendered[target])
    assert set(config) <= fields, f"not lipdub settings: {set(config) - fields}"
    for key in config:
        assert not any(word in key for word in ("SECRET", "PASSWORD", "ACCESS_KEY")), key
    # Every value is valid for its field, read as pods read it: from the environment.
    for key in list(os.environ):
        if key.startswith("LIPDUB_"):
            monkeypatch.delenv(key)
    for key, value in config.items():
        monkeypatch.setenv(key, value)
    Settings(_env_file=None)  # type: ignore[call-arg]


def test_secret_template_keys_are_settings_or_keda_parameters(secret_template):
    fields = {f"LIPDUB_{name.upper()}" for name in Settings.model_fields}
    keys = set(secret_template["stringData"])
    assert keys - fields == {"REDIS_ADDRESS", "REDIS_PASSWORD"}
    assert {"LIPDUB_S3_ACCESS_KEY_ID", "LIPDUB_S3_SECRET_ACCESS_KEY", "LIPDUB_REDIS_URL"} <= keys


def test_overlay_env_files_are_settings():
    fields = {f"LIPDUB_{name.upper()}" for name in Settings.model_fields}
    for path in [K8S / "base" / "config.env", *(K8S / "overlays" / o / "config.env" for o in OVERLAYS)]:
        assert set(env_file(path)) <= fields, path
