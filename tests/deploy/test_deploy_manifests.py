"""Static checks of the deployment files: Kubernetes, Compose, Dockerfiles, Prometheus config.

- Every Kubernetes manifest validates, strictly (unknown fields fail), against the schemas
  that the `kubernetes-validate` package ships, for the oldest and the newest Kubernetes
  it knows; both kustomizations build with ``kubectl kustomize`` and their output
  validates too.
- The manifests agree with themselves and with the code: selectors match pod labels,
  probes and Services name ports that exist, every environment variable is one `Settings`
  reads and its value parses, the PodDisruptionBudget, anti-affinity, limits and network
  policies are what docs/deployment.md says.
- ``docker-compose config`` accepts docker-compose.yml, and its services are what the
  guide names; the Dockerfiles use a slim base, a non-root user, a health check on
  ``/healthz`` and copy only what the build context holds.
- promtool accepts both Prometheus configs, and the Kubernetes one keeps exactly the
  HTTP ports of the annotated pods.

Tools that are not installed (kubectl, docker-compose, promtool) skip their check with
the reason; .ci/run installs docker-compose and prometheus (promtool).
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from sllm.config import _VARIABLES, ConfigError, Settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
OVERLAY = K8S / "overlays" / "decentralized"
# The oldest and newest Kubernetes versions kubernetes-validate ships schemas for
# (the guide asks for 1.24+; 1.25 is the oldest schema it ships).
KUBERNETES_VERSIONS = ("1.25.0", kubernetes_validate.latest_version())
# Variables the manifests set that `Settings` does not read: the downward-API pod name
# (expanded into WORKER_ID) and the front door's API keys (the serving issue reads them).
NOT_SETTINGS = {"POD_NAME", "API_KEYS"}
TOOL_TIMEOUT_S = 60
# The UID of the images' non-root user.
IMAGE_UID = 10001
# Every variable `Settings` reads.
SETTINGS_VARIABLES = {var.env for var in _VARIABLES}
# The variables naming each service's UDP and HTTP ports.
PORTS = {
    "coordinator": ("COORDINATOR_PORT", "HTTP_PORT"),
    "worker": ("WORKER_PORT", "WORKER_HTTP_PORT"),
}


def manifest_files() -> list[Path]:
    """Whole manifests: not kustomizations, not an overlay's patches (partial objects), and
    not KEDA's objects (a custom resource: test_deploy_autoscaling.py checks them)."""
    return sorted(
        p
        for p in K8S.rglob("*.yaml")
        if p.name != "kustomization.yaml"
        and "patches" not in p.parts
        and not p.name.startswith("keda-")
    )


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def all_documents() -> list[dict[str, Any]]:
    return [doc for path in manifest_files() for doc in documents(path)]


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    for doc in docs:
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    raise AssertionError(f"no {kind} {name}")


def workloads(docs: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    return (doc for doc in docs if doc["kind"] in ("Deployment", "StatefulSet"))


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = workload["spec"]["template"]["spec"]["containers"]
    return result


def run_tool(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, cwd=ROOT, check=False
    )


def need(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed ({package}; .ci/run installs it)")
    return path


# -- Kubernetes --------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: str(p.relative_to(K8S)))
def test_manifest_validates_against_the_kubernetes_schemas(path: Path, version: str) -> None:
    docs = documents(path)
    assert docs, f"{path} holds no manifest"
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_validator_rejects_an_unknown_field() -> None:
    """The check above is strict: a misspelt field fails it."""
    deployment = find(all_documents(), "Deployment", "central-coordinator")
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


@pytest.mark.parametrize("directory", [K8S, OVERLAY], ids=["base", "decentralized"])
def test_kustomization_builds_and_its_output_validates(directory: Path) -> None:
    kubectl = need("kubectl", "install kubectl")
    built = run_tool(kubectl, "kustomize", str(directory))
    assert built.returncode == 0, built.stderr
    docs = [doc for doc in yaml.safe_load_all(built.stdout) if doc]
    listed = yaml.safe_load((directory / "kustomization.yaml").read_text())["resources"]
    expected = sum(len(documents(directory / name)) for name in listed)
    assert len(docs) == expected
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "sllm-system", doc["metadata"]
        kubernetes_validate.validate(doc, KUBERNETES_VERSIONS[-1], strict=True)
    kinds = {(doc["kind"], doc["metadata"]["name"]) for doc in docs}
    if directory == K8S:
        assert ("Deployment", "central-coordinator") in kinds
        assert ("StatefulSet", "worker") in kinds
    else:
        assert ("StatefulSet", "node") in kinds
        assert not any(kind in ("Deployment", "HorizontalPodAutoscaler") for kind, _ in kinds)


def test_the_overlays_copies_match_the_base() -> None:
    """The overlay cannot build on ../.. (kustomize refuses a base holding its overlay)."""
    for name in ("namespace.yaml", "configmap.yaml"):
        assert documents(OVERLAY / name) == documents(K8S / name), name
    base = {doc["metadata"]["name"]: doc for doc in documents(K8S / "networkpolicy.yaml")}
    overlay = {doc["metadata"]["name"]: doc for doc in documents(OVERLAY / "networkpolicy.yaml")}
    for name in ("default-deny", "allow-dns"):
        assert overlay[name] == base[name], name


def test_the_guides_files_and_names() -> None:
    docs = all_documents()
    namespace = documents(K8S / "namespace.yaml")
    assert [(d["kind"], d["metadata"]["name"]) for d in namespace] == [("Namespace", "sllm-system")]
    coordinator_file = documents(K8S / "coordinator-deployment.yaml")
    assert {d["kind"] for d in coordinator_file} == {"Deployment", "Service"}
    worker_file = documents(K8S / "worker-statefulset.yaml")
    assert {d["kind"] for d in worker_file} == {"StatefulSet", "Service"}

    service = find(docs, "Service", "central-coordinator")
    ports = {(p["port"], p["protocol"]) for p in service["spec"]["ports"]}
    assert {(9000, "UDP"), (8080, "TCP")} <= ports
    assert service["spec"]["publishNotReadyAddresses"] is True  # workers report before ready
    headless = find(docs, "Service", "worker")
    assert headless["spec"]["clusterIP"] == "None"
    assert find(docs, "StatefulSet", "worker")["spec"]["serviceName"] == "worker"

    pdb = find(docs, "PodDisruptionBudget", "worker-pdb")
    assert pdb["spec"]["minAvailable"] == 2
    assert pdb["spec"]["selector"]["matchLabels"] == {"app": "worker"}

    worker = find(docs, "StatefulSet", "worker")
    anti = worker["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    term = anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
    assert term["labelSelector"]["matchLabels"] == {"app": "worker"}

    hpa = find(docs, "HorizontalPodAutoscaler", "worker")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "name": "worker",
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 20)


def test_workloads_are_consistent() -> None:
    docs = all_documents()
    services = [doc for doc in docs if doc["kind"] == "Service"]
    for workload in workloads(docs):
        name = workload["metadata"]["name"]
        labels = workload["spec"]["template"]["metadata"]["labels"]
        selector = workload["spec"]["selector"]["matchLabels"]
        assert selector.items() <= labels.items(), name
        port_names = {p["name"]: p for c in containers(workload) for p in c["ports"]}
        for container in containers(workload):
            limits = container["resources"]["limits"]
            assert limits["memory"] == "1Gi", name
            assert container["resources"]["requests"]
            for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
                action = container[probe]["httpGet"]
                assert action["path"] == path, (name, probe)
                assert port_names[action["port"]]["protocol"] == "TCP", (name, probe)
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
        security = workload["spec"]["template"]["spec"]["securityContext"]
        assert security["runAsNonRoot"] is True
        assert security["runAsUser"] == IMAGE_UID, name
        # A Service that selects these pods targets ports they have.
        for service in services:
            if service["spec"]["selector"].items() <= labels.items():
                for port in service["spec"]["ports"]:
                    target = port_names[port["targetPort"]]
                    assert target["protocol"] == port["protocol"], (name, port)


def test_every_variable_is_a_setting_and_parses() -> None:
    """What a pod's environment would be parses into `Settings` (ConfigMap, then env)."""
    docs = all_documents()
    config = find(docs, "ConfigMap", "sllm-config")["data"]
    known = SETTINGS_VARIABLES
    for workload in workloads(docs):
        for container in containers(workload):
            env = dict(config)
            for variable in container["env"]:
                value = variable.get("value", "")
                if "valueFrom" in variable:  # the operator's Secret: a secret of its own
                    value = OPERATOR_SECRET
                value = value.replace("$(POD_NAME)", f"{workload['metadata']['name']}-0")
                env[variable["name"]] = value
            unknown = set(env) - known - NOT_SETTINGS
            assert not unknown, (workload["metadata"]["name"], unknown)
            try:
                settings = Settings.from_env({k: v for k, v in env.items() if k in known})
            except ConfigError as error:
                pytest.fail(f"{workload['metadata']['name']}: {error}")
            assert settings.deployment_mode == "kubernetes"
            assert settings.bind_host == "0.0.0.0"


def test_network_policies_allow_the_control_plane_and_http_only() -> None:
    docs = all_documents()
    deny = find(docs, "NetworkPolicy", "default-deny")
    assert deny["spec"]["podSelector"] == {}
    assert set(deny["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny["spec"] and "egress" not in deny["spec"]

    def rules(policy: str, direction: str) -> set[tuple[str, str, int]]:
        found = set()
        for rule in find(docs, "NetworkPolicy", policy)["spec"].get(direction, []):
            peers = rule.get("from" if direction == "ingress" else "to") or [{}]
            for peer in peers:
                labels = peer.get("podSelector", {}).get("matchLabels", {})
                app = labels.get("app") or labels.get("app.kubernetes.io/name", "*")
                # A pod selector alone means this namespace; with a namespace selector, any.
                if "namespaceSelector" in peer:
                    assert peer["namespaceSelector"] == {}, peer
                    app = f"any namespace/{app}"
                for port in rule["ports"]:
                    found.add((app, port["protocol"], port["port"]))
        return found

    assert rules("central-coordinator", "ingress") == {("worker", "UDP", 9000), ("*", "TCP", 8080)}
    # A worker's HTTP serves models: only the front door and Prometheus reach it.
    assert rules("worker", "ingress") == {
        ("central-coordinator", "UDP", 8000),
        ("central-coordinator", "TCP", 8081),
        ("any namespace/prometheus", "TCP", 8081),
    }
    assert rules("worker", "egress") == {
        ("central-coordinator", "UDP", 9000),
        ("central-coordinator", "TCP", 8080),  # the model registry
    }
    assert rules("central-coordinator", "egress") == {
        ("worker", "UDP", 8000),
        ("worker", "TCP", 8081),
    }


def test_the_decentralized_overlay_seeds_nodes_through_the_headless_service() -> None:
    node = find(documents(OVERLAY / "node-statefulset.yaml"), "StatefulSet", "node")
    headless = find(documents(OVERLAY / "node-statefulset.yaml"), "Service", "node")
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    assert node["spec"]["serviceName"] == "node"
    container = containers(node)[0]
    argv = [*container["command"], *container["args"]]
    assert argv[:4] == ["python3", "-m", "sllm", "node"]
    assert argv[argv.index("--node-id") + 1] == "$(POD_NAME)"
    assert argv[argv.index("--seed-nodes") + 1] == "$(SEED_NODES)"
    env = {v["name"]: v.get("value") for v in container["env"]}
    seeds = env["SEED_NODES"].split(",")
    replicas = node["spec"]["replicas"]
    pattern = re.compile(r"node-(\d+)\.node\.sllm-system\.svc\.cluster\.local:(\d+)")
    for seed in seeds:
        match = pattern.fullmatch(seed)
        assert match, seed
        assert int(match.group(1)) < replicas  # a pod that exists
        assert int(match.group(2)) == int(env["WORKER_PORT"])


# -- Compose and Dockerfiles -------------------------------------------------------------


def test_compose_file_validates_with_docker_compose(monkeypatch: pytest.MonkeyPatch) -> None:
    tool = need("docker-compose", "apt-get install docker-compose")
    monkeypatch.delenv("CLUSTER_SECRET", raising=False)
    refused = run_tool(tool, "-f", "docker-compose.yml", "config", "-q")
    assert refused.returncode != 0 and "set CLUSTER_SECRET" in refused.stderr
    monkeypatch.setenv("CLUSTER_SECRET", OPERATOR_SECRET)
    checked = run_tool(tool, "-f", "docker-compose.yml", "config", "-q")
    assert checked.returncode == 0, checked.stderr
    profiles = run_tool(tool, "-f", "docker-compose.yml", "--profile", "monitoring", "config", "-q")
    assert profiles.returncode == 0, profiles.stderr


def test_compose_refuses_to_run_without_a_cluster_secret(compose, missing_variable) -> None:
    for unset in ({}, {"CLUSTER_SECRET": ""}):
        with pytest.raises(missing_variable, match=r"set CLUSTER_SECRET .* docs/deployment\.md"):
            compose(unset)
    services = compose({"CLUSTER_SECRET": OPERATOR_SECRET})
    signed = [service for service in services.values() if service.dockerfile is not None]
    assert len(signed) == 3
    assert all(service.environment["CLUSTER_SECRET"] == OPERATOR_SECRET for service in signed)


def test_compose_services_are_the_guides(compose_file, compose) -> None:
    services = compose({"CLUSTER_SECRET": OPERATOR_SECRET})
    assert {"central-coordinator", "worker-1", "worker"} <= set(services)
    network = compose_file["networks"]["sllm-network"]
    assert network["name"] == "sllm-network"
    assert network["ipam"]["config"][0]["subnet"] == "172.28.0.0/16"

    coordinator = services["central-coordinator"]
    assert {"9000:9000/udp", "8080:8080"} <= set(coordinator.spec["ports"])
    assert coordinator.spec["container_name"] == "central-coordinator"
    assert coordinator.dockerfile is not None
    assert coordinator.dockerfile.path == ROOT / "docker/coordinator/Dockerfile.coordinator"
    for name in ("worker-1", "worker"):
        worker = services[name]
        assert worker.dockerfile is not None
        assert worker.dockerfile.path == ROOT / "docker/worker/Dockerfile.worker"
        # Scalable: no fixed container name, no fixed worker id.
        assert "container_name" not in worker.spec
        assert not worker.environment.get("WORKER_ID")
        assert worker.environment["COORDINATOR_HOST"] == "central-coordinator"
    known = SETTINGS_VARIABLES
    for service in services.values():
        if service.dockerfile is None:
            continue
        assert service.healthcheck, f"{service.name} has no health check"
        assert "/healthz" in " ".join(service.healthcheck)
        ours = set(service.environment) - IMAGE_VARIABLES
        assert ours <= known, service.name
        Settings.from_env(service.environment)  # raises ConfigError on a bad value
        assert service.spec["networks"] == ["sllm-network"]


@pytest.mark.parametrize(
    ("path", "extras"),
    [
        ("docker/coordinator/Dockerfile.coordinator", "serve"),
        ("docker/worker/Dockerfile.worker", "serve,torch"),
        ("docker/worker/Dockerfile.worker-gpu", "serve,gpu,vllm,torch"),
    ],
)
def test_dockerfile(path: str, extras: str, dockerfile) -> None:
    parsed = dockerfile(ROOT / path)
    # Two stages on one pinned base: the build's tools and caches stay out of the image.
    assert len(parsed.stages) == 2 and len(set(parsed.stages)) == 1, parsed.stages
    assert base_pin_problem(parsed.base) is None, base_pin_problem(parsed.base)
    assert any(f"install '.[{extras}]'" in run for run in parsed.runs), parsed.runs
    assert set(parsed.env) - SETTINGS_VARIABLES <= IMAGE_VARIABLES, parsed.env
    assert parsed.user not in ("", "root", "0")
    # Kubernetes checks runAsNonRoot only for a numeric user: the manifests name the UID.
    uid = re.search(rf"useradd [^&]*--uid (\d+) [^&]*\b{parsed.user}\b", " ".join(parsed.runs))
    assert uid and int(uid.group(1)) == IMAGE_UID, parsed.runs
    assert parsed.healthcheck[:2] == ["python", "-c"]
    assert "/healthz" in parsed.healthcheck[2]
    assert parsed.entrypoint[:3] == ["python", "-m", "sllm"]
    assert parsed.env["LOG_FORMAT"] == "json"
    assert parsed.env["DEPLOYMENT_MODE"] == "docker"
    # The image runs only with the secret its orchestrator gives it (or an explicit opt-out).
    with pytest.raises(ConfigError, match="CLUSTER_SECRET"):
        Settings.from_env(parsed.env)
    Settings.from_env({**parsed.env, "CLUSTER_SECRET": "given-by-the-orchestrator"})
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for sources in parsed.copies:
        for source in sources:
            assert (ROOT / source).exists(), source
            assert not any(fnmatch.fnmatch(source, pattern) for pattern in ignored), source
    udp, http = PORTS[parsed.entrypoint[3]]
    assert set(parsed.expose) == {f"{parsed.env[udp]}/udp", f"{parsed.env[http]}/tcp"}


# An image's ENV beyond the settings, and why each is there.
IMAGE_VARIABLES = {
    "PATH",  # the virtual environment's bin/ first, so `python` is the installed one
    "PYTHONDONTWRITEBYTECODE",  # no .pyc beside a read-only install
    "PYTHONUNBUFFERED",  # log lines reach `docker logs` as they are written
    "VLLM_NO_USAGE_STATS",  # vLLM reports nothing home: workers reach model sources only
}
# A base image named by a tag that moves with every release of its series.
FLOATING_TAGS = re.compile(r"^(latest|\d+|\d+\.\d+|\d+\.\d+-slim|slim)$")
_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def base_pin_problem(image: str) -> str | None:
    """Why `image` is not pinned, or None. Pinned: a digest, or a tag that names the
    version and the distribution release (``python:3.11-slim-trixie``,
    ``nvidia/cuda:12.9.1-base-ubuntu24.04``), which a release then pins by digest
    (docs/deployment.md, "Pinning the bases")."""
    if _DIGEST.search(image):
        return None
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag:
        return f"{image}: no tag"
    if FLOATING_TAGS.fullmatch(tag):
        return f"{image}: the tag {tag!r} moves (name the distribution release)"
    return None


def test_an_unpinned_base_is_flagged() -> None:
    assert base_pin_problem("python:3.11-slim-trixie") is None
    assert base_pin_problem("nvidia/cuda:12.9.1-base-ubuntu24.04") is None
    assert base_pin_problem("python:3.11-slim@sha256:" + "0" * 64) is None
    for floating in ("python:3.11-slim", "python:latest", "python:3", "python", "nvidia/cuda"):
        assert base_pin_problem(floating) is not None, floating


# -- Prometheus --------------------------------------------------------------------------


def test_prometheus_compose_config_passes_promtool() -> None:
    promtool = need("promtool", "apt-get install prometheus")
    checked = run_tool(promtool, "check", "config", "deploy/prometheus/prometheus-compose.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_prometheus_kubernetes_config_passes_promtool(tmp_path: Path) -> None:
    """Debian's promtool is built without Kubernetes discovery, so that block is checked
    here by hand and swapped for a static one before promtool checks the rest."""
    promtool = need("promtool", "apt-get install prometheus")
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus-kubernetes.yml").read_text())
    for job in config["scrape_configs"]:
        discovery = job.pop("kubernetes_sd_configs")
        assert discovery == [{"role": "pod", "namespaces": {"names": ["sllm-system"]}}]
        job["static_configs"] = [{"targets": ["127.0.0.1:9"]}]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    shutil.copy(ROOT / "deploy/prometheus/alerts.yml", tmp_path)  # its rule_files, beside it
    checked = run_tool(promtool, "check", "config", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_alert_rules_pass_promtool_and_fire_on_their_failures() -> None:
    """``promtool check rules`` on the alerts, and their unit tests (alerts-test.yml): each
    alert fires on its failure (no ready worker, 5xx share, TTFT p99) and not before."""
    promtool = need("promtool", "apt-get install prometheus")
    checked = run_tool(promtool, "check", "rules", "deploy/prometheus/alerts.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "3 rules found" in checked.stdout
    tested = run_tool(promtool, "test", "rules", "deploy/prometheus/alerts-test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    for config in ("prometheus-compose.yml", "prometheus-kubernetes.yml"):
        loaded = yaml.safe_load((ROOT / "deploy/prometheus" / config).read_text())
        assert loaded["rule_files"] == ["alerts.yml"], config


def relabel(rules: list[dict[str, Any]], labels: dict[str, str]) -> dict[str, str] | None:
    """Prometheus relabelling (keep and replace, the actions the config uses)."""
    labels = dict(labels)
    for rule in rules:
        source = ";".join(labels.get(name, "") for name in rule.get("source_labels", []))
        regex = re.compile(rule.get("regex", "(.*)"))
        match = regex.fullmatch(source)
        action = rule.get("action", "replace")
        if action == "keep":
            if not match:
                return None
        elif action == "replace":
            if match:
                labels[rule["target_label"]] = match.expand(
                    rule.get("replacement", "$1").replace("$1", r"\1")
                )
        else:
            raise AssertionError(f"unexpected action {action}")
    return labels


def test_kubernetes_scrape_config_keeps_the_http_ports_of_sllm_pods() -> None:
    """Pod discovery, emulated on our manifests: one target per pod, on its HTTP port."""
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus-kubernetes.yml").read_text())
    rules = config["scrape_configs"][0]["relabel_configs"]
    docs = all_documents()  # the overlay's nodes included
    kept = []
    for workload in workloads(docs):
        template = workload["spec"]["template"]
        for container in template["spec"]["containers"]:
            for port in container["ports"]:
                meta = {
                    "__address__": f"127.0.0.9:{port['containerPort']}",
                    "__meta_kubernetes_pod_container_port_name": port["name"],
                    "__meta_kubernetes_pod_label_app": template["metadata"]["labels"]["app"],
                    "__meta_kubernetes_pod_name": f"{workload['metadata']['name']}-0",
                    "__meta_kubernetes_namespace": "sllm-system",
                    "__metrics_path__": "/metrics",
                }
                for key, value in template["metadata"].get("annotations", {}).items():
                    name = re.sub(r"[^a-zA-Z0-9_]", "_", key)
                    meta[f"__meta_kubernetes_pod_annotation_{name}"] = value
                target = relabel(rules, meta)
                if target is not None:
                    kept.append((target["app"], target["__address__"], target["__metrics_path__"]))
    assert sorted(set(kept)) == [  # the GPU overlay's copies find the same pods
        ("central-coordinator", "127.0.0.9:8080", "/metrics"),
        ("node", "127.0.0.9:8080", "/metrics"),
        ("worker", "127.0.0.9:8081", "/metrics"),
    ]


# -- the cluster secret: the operator's, required, never shipped -------------------------

OPERATOR_SECRET = "a-secret-the-operator-created-0123"


def test_no_secret_is_shipped_so_apply_never_overwrites_the_operators() -> None:
    for path in manifest_files():
        kinds = [doc["kind"] for doc in documents(path)]
        assert "Secret" not in kinds, path
    for directory in (K8S, OVERLAY):
        listed = yaml.safe_load((directory / "kustomization.yaml").read_text())["resources"]
        assert all("secret" not in name for name in listed), directory


def test_every_pod_requires_the_cluster_secret_from_the_operators_secret() -> None:
    for workload in workloads(all_documents()):
        for container in containers(workload):
            name = workload["metadata"]["name"]
            variables = {variable["name"]: variable for variable in container["env"]}
            reference = variables["CLUSTER_SECRET"]["valueFrom"]["secretKeyRef"]
            assert reference["name"] == "sllm-secrets", name
            assert reference["key"] == "CLUSTER_SECRET", name
            assert reference.get("optional", False) is False, name  # no secret: no pod
