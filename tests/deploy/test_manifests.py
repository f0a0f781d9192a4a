"""deploy/: every manifest validates against a schema shipped inside an installed package (no network),
and compose and Kubernetes run exactly the Procfile's commands (modulo the Procfile's env-var defaults)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from check_jsonschema.builtin_schemas import get_builtin_schema

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
# The oldest Kubernetes the manifests target (preStop "sleep" needs 1.30) and the newest schema shipped.
K8S_VERSIONS = ["1.30.0", kubernetes_validate.utils.latest_version() + ".0"]
K8S_FILES = sorted(path for path in K8S.glob("*.yaml") if path.name != "kustomization.yaml")

# Procfile process -> compose service, Kubernetes (kind, name, container).
COMPOSE_SERVICE = {"release": "migrate", "web": "api", "worker-audit": "worker-audit",
                   "worker-webhooks": "worker-webhooks", "worker-keys": "worker-keys", "beat": "beat"}
K8S_CONTAINER = {"release": ("Job", "keymeta-migrate", "migrate"),
                 "web": ("Deployment", "keymeta-api", "api"),
                 "worker-audit": ("Deployment", "keymeta-worker-audit", "worker"),
                 "worker-webhooks": ("Deployment", "keymeta-worker-webhooks", "worker"),
                 "worker-keys": ("Deployment", "keymeta-worker-keys", "worker"),
                 "beat": ("Deployment", "keymeta-beat", "beat")}


def procfile() -> dict[str, str]:
    processes = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, command = line.split(":", 1)
            processes[name.strip()] = command.strip()
    return processes


_DEFAULTED = re.compile(r"\$\{[A-Z0-9_]+:-[^}]*\}")


def command_pattern(command: str) -> list[re.Pattern[str]]:
    """One pattern per word; each ``${VAR:-default}`` stands for whatever value the deployment chose."""
    patterns = []
    for word in shlex.split(command):
        parts = _DEFAULTED.split(word)
        patterns.append(re.compile(r"[^\s]*".join(re.escape(part) for part in parts)))
    return patterns


def assert_same_command(process: str, actual: list[str]) -> None:
    expected = procfile()[process]
    patterns = command_pattern(expected)
    assert len(actual) == len(patterns), f"{process}: {actual} is not {expected!r}"
    for word, pattern in zip(actual, patterns, strict=True):
        assert pattern.fullmatch(word), f"{process}: {word!r} does not match {pattern.pattern!r} in {expected!r}"


def k8s_documents() -> list[dict[str, Any]]:
    documents = []
    for path in K8S_FILES:
        documents.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return documents


def k8s_object(kind: str, name: str) -> dict[str, Any]:
    [found] = [doc for doc in k8s_documents() if doc["kind"] == kind and doc["metadata"]["name"] == name]
    return found


def pod_containers(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    spec = obj["spec"]["template"]["spec"]
    return {c["name"]: c for c in spec.get("initContainers", []) + spec["containers"]}


def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


# ---- the pattern itself must be able to fail ------------------------------------------------------------

def test_command_patterns_accept_defaults_and_reject_other_commands() -> None:
    audit = procfile()["worker-audit"]
    good = ["celery", "-A", "workers.app", "worker", "-Q", "audit", "-n", "audit@%h", "--concurrency", "8",
            "--without-gossip", "--without-mingle", "-l", "INFO"]
    assert_same_command("worker-audit", good)
    assert "${KEYMETA_AUDIT_CONCURRENCY:-2}" in audit
    with pytest.raises(AssertionError):
        assert_same_command("worker-audit", [*good[:5], "webhooks", *good[6:]])
    with pytest.raises(AssertionError):
        assert_same_command("worker-audit", good[:-2])


# ---- schemas ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("path", K8S_FILES, ids=lambda p: p.name)
def test_kubernetes_manifest_is_valid(path: Path, version: str) -> None:
    documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    assert documents
    for document in documents:
        kubernetes_validate.validate(document, version, strict=True)


def test_the_kubernetes_validator_rejects_a_typo() -> None:
    deployment = k8s_object("Deployment", "keymeta-beat")
    deployment["spec"]["template"]["spec"]["containers"][0]["comand"] = ["celery"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[-1], strict=True)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(path.name for path in K8S_FILES)


def test_compose_file_is_valid() -> None:
    schema = get_builtin_schema("vendor.compose-spec")
    jsonschema.validators.validator_for(schema)(schema).validate(compose())
    broken = compose()
    broken["services"]["beat"]["comand"] = "celery"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validators.validator_for(schema)(schema).validate(broken)


# ---- same commands everywhere ---------------------------------------------------------------------------

def test_every_procfile_process_is_deployed() -> None:
    assert set(procfile()) == set(COMPOSE_SERVICE) == set(K8S_CONTAINER)


@pytest.mark.parametrize("process", sorted(COMPOSE_SERVICE))
def test_compose_runs_the_procfile_command(process: str) -> None:
    command = compose()["services"][COMPOSE_SERVICE[process]]["command"]
    assert isinstance(command, list)
    assert_same_command(process, command)


@pytest.mark.parametrize("process", sorted(K8S_CONTAINER))
def test_kubernetes_runs_the_procfile_command(process: str) -> None:
    kind, name, container = K8S_CONTAINER[process]
    spec = pod_containers(k8s_object(kind, name))[container]
    assert_same_command(process, spec["command"] + spec.get("args", []))


def test_the_image_default_is_the_web_process() -> None:
    cmd = [line for line in (DEPLOY / "Dockerfile").read_text().splitlines() if line.startswith("CMD ")]
    assert len(cmd) == 1
    assert_same_command("web", yaml.safe_load(cmd[0][4:]))


# ---- probes, singletons, settings -------------------------------------------------------------------------

def _node_name(command: list[str]) -> str:
    return command[command.index("-n") + 1].split("@")[0]


@pytest.mark.parametrize("process", ["worker-audit", "worker-webhooks", "worker-keys"])
def test_worker_liveness_pings_its_own_node(process: str) -> None:
    kind, name, container = K8S_CONTAINER[process]
    spec = pod_containers(k8s_object(kind, name))[container]
    node = _node_name(spec["command"])
    probe = spec["livenessProbe"]["exec"]["command"]
    assert probe[:2] == ["sh", "-c"]
    assert shlex.split(probe[2])[:6] == ["celery", "-A", "workers.app", "inspect", "ping", "-d"]
    assert shlex.split(probe[2])[6] == f"{node}@$HOSTNAME"
    service = compose()["services"][COMPOSE_SERVICE[process]]
    assert f"-d {node}@$$HOSTNAME" in service["healthcheck"]["test"][1]  # $$: compose's escape for $


def test_api_probes_use_health_endpoints() -> None:
    api = pod_containers(k8s_object("Deployment", "keymeta-api"))["api"]
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz?exclude=broker"
    hpa = k8s_object("HorizontalPodAutoscaler", "keymeta-api")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "keymeta-api"}
    service = k8s_object("Service", "keymeta-api")
    assert service["spec"]["selector"] == k8s_object("Deployment", "keymeta-api")["spec"]["selector"]["matchLabels"]


def test_beat_is_a_singleton() -> None:
    beat = k8s_object("Deployment", "keymeta-beat")
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}
    assert not [doc for doc in k8s_documents() if doc["kind"] == "HorizontalPodAutoscaler"
                and doc["spec"]["scaleTargetRef"]["name"] == "keymeta-beat"]


def test_every_container_gets_the_settings() -> None:
    config = k8s_object("ConfigMap", "keymeta-config")
    secret = k8s_object("Secret", "keymeta-secrets")
    assert {"KEYMETA_DATABASE_URL", "KEYMETA_BROKER_URL", "KEYMETA_MASTER_KEY"} <= set(secret["stringData"])
    assert config["data"]["KEYMETA_HOST"] == "0.0.0.0"
    workloads = [doc for doc in k8s_documents() if doc["kind"] in ("Deployment", "Job")]
    assert len(workloads) == 6
    for workload in workloads:
        for container in pod_containers(workload).values():
            refs = [next(iter(ref.values()))["name"] for ref in container["envFrom"]]
            assert refs == ["keymeta-config", "keymeta-secrets"], workload["metadata"]["name"]
    for name, service in compose()["services"].items():
        if name.startswith(("api", "worker-", "beat", "migrate", "bootstrap")):
            assert {"KEYMETA_DATABASE_URL", "KEYMETA_BROKER_URL", "KEYMETA_MASTER_KEY"} <= set(service["environment"])
