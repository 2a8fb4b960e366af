"""The Helm chart (deploy/helm/sllm), linted and rendered by Helm's own engine.

No helm binary is packaged for these machines (Debian has none, and downloads outside the
package registries are closed), so the checks use `helm-python-sdk` from PyPI: Helm's Go
SDK (v4) built as a C library behind ``ctypes``. ``helm.lint`` and ``Chart.render`` are
``helm lint`` and ``helm template``. For every variant (both architectures, CPU and GPU,
and the autoscaler choices):

- lint reports nothing above INFO; every rendered object validates strictly against the
  oldest and newest Kubernetes schemas known (KEDA's ScaledObject, a custom resource, is
  checked by hand: its target, its bounds, and queries that name metrics the code
  exports);
- every pod sets only variables the code reads, with values it accepts (`pods.py`), and
  the chart's values cover every setting of `sllm.config`;
- no Secret is ever rendered (an upgrade never overwrites the operator's), and a bad
  choice stops the rendering with a message.
"""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pods import environment, environment_problems, pod_spec, quantity

from sllm.config import ENVIRONMENT_VARIABLES
from sllm.core.worker import GB

helm = pytest.importorskip(
    "helm_python", reason="helm-python-sdk is not installed (the dev extra installs it)"
)

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "sllm"
NAMESPACE = "sllm-system"
KUBERNETES_VERSIONS = ("1.25.0", kubernetes_validate.latest_version())
GPU_VALUES: dict[str, Any] = yaml.safe_load((CHART / "values-gpu.yaml").read_text())
VARIANTS: dict[str, dict[str, Any]] = {
    "centralized-cpu": {},
    "decentralized-cpu": {"architecture": "decentralized"},
    "centralized-gpu": GPU_VALUES,
    "centralized-gpu-hpa": {**GPU_VALUES, "autoscaling": {"mode": "external", "minReplicas": 1}},
    "decentralized-gpu": {
        **GPU_VALUES,
        "architecture": "decentralized",
        "autoscaling": {"mode": "none"},
    },
}
# Settings the chart sets from its structure rather than from `config`, and the value that
# decides each.
STRUCTURAL_SETTINGS = {
    "DEPLOYMENT_MODE": "always kubernetes",
    "COORDINATOR_HOST": "the coordinator's Service name",
    "COORDINATOR_PORT": "ports.coordinatorUdp",
    "WORKER_PORT": "ports.workerUdp",
    "HTTP_PORT": "ports.http",
    "WORKER_HTTP_PORT": "ports.workerHttp (ports.http on a node)",
    "WORKER_ID": "the pod name",
    "SEED_NODES": "workers.seeds, from the nodes' headless Service",
    "MODEL_CATALOG": "catalog.configMap and catalog.key",
    "MODEL_CACHE_DIR": "workers.modelCache.mountPath",
    "MODEL_CACHE_GB": "workers.modelCache.sizeGiB * cacheShare",
    "CLUSTER_SECRET": "the operator's Secret (secret.name)",
    "API_KEYS": "the operator's Secret (secret.name), optional",
    "ADMIN_KEY": "the operator's Secret (secret.name), optional",
    "REGISTRY_PATH": "the coordinator's registry volume (coordinator.registry)",
    "COORDINATOR_HTTP_PORT": "ports.http, on centralized workers",
}
# The share of the cache volume MODEL_CACHE_GB may take (as for the GPU overlay).
CACHE_VOLUME_SHARE = Decimal("0.9")
METRICS_SOURCE = (ROOT / "src/sllm/runtime/metrics.py").read_text()
# The share of a GPU worker's memory limit the host tier and /dev/shm may take together.
HOST_MEMORY_SHARE = Decimal("0.6")
# Helm lint's severities: 1 INFO ("icon is recommended"), 2 WARNING, 3 ERROR.
LINT_INFO = 1


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    with helm.Chart.load(str(CHART)) as chart:
        manifests = chart.render(values, name="sllm", namespace=NAMESPACE)
    return [doc for text in manifests.values() for doc in yaml.safe_load_all(text) if doc]


def find(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_the_chart_lints_clean(variant: str) -> None:
    report = helm.lint(str(CHART), values=VARIANTS[variant])
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] > LINT_INFO] == []


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_rendering_validates(variant: str, version: str) -> None:
    docs = render(VARIANTS[variant])
    assert docs
    for doc in docs:
        assert doc["kind"] != "Secret", "the operator's Secret is never rendered"
        if doc["kind"] == "ScaledObject":
            continue  # a custom resource: test_the_keda_scaled_object
        kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_rendered_pod_sets_only_what_the_code_reads(variant: str) -> None:
    docs = render(VARIANTS[variant])
    assert environment_problems(docs, variant) == []
    pools = find(docs, "StatefulSet")
    assert [pool["metadata"]["name"] for pool in pools] == [
        "node" if "decentralized" in variant else "worker"
    ]
    has_coordinator = bool(find(docs, "Deployment"))
    assert has_coordinator == variant.startswith("centralized")


def test_the_values_cover_every_setting() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    covered = set(values["config"]) | set(STRUCTURAL_SETTINGS)
    assert covered == set(ENVIRONMENT_VARIABLES)
    assert not set(values["config"]) & set(STRUCTURAL_SETTINGS)


def test_a_config_value_reaches_every_pod() -> None:
    docs = render({"config": {"KEEP_ALIVE": "42", "PLACEMENT_POLICY": "least-loaded"}})
    for workload in find(docs, "Deployment") + find(docs, "StatefulSet"):
        [container] = pod_spec(workload)["containers"]
        env = environment(docs, workload, container)
        assert (env["KEEP_ALIVE"], env["PLACEMENT_POLICY"]) == ("42", "least-loaded")


def test_an_unknown_or_bad_value_fails_the_checks() -> None:
    """A misspelt setting in `config` reaches the pods and the environment check fails."""
    docs = render({"config": {"KEEP_ALIVE_S": "42", "WORKER_SLOTS": "0"}})
    problems = "\n".join(environment_problems(docs, "chart"))
    assert "KEEP_ALIVE_S is read by no setting" in problems
    assert "WORKER_SLOTS='0'" in problems
    with pytest.raises(Exception, match="architecture must be centralized or decentralized"):
        render({"architecture": "mesh"})
    with pytest.raises(Exception, match=r"gpu.enabled needs catalog.configMap"):
        render({"gpu": {"enabled": True}, "autoscaling": {"mode": "none"}})
    with pytest.raises(Exception, match="cannot scale to zero"):
        render({"autoscaling": {"mode": "external", "minReplicas": 0}})


def test_the_gpu_workers() -> None:
    docs = render(GPU_VALUES)
    [worker] = find(docs, "StatefulSet")
    spec = pod_spec(worker)
    [container] = spec["containers"]
    assert container["image"] == "sllm/worker-gpu:latest"
    limits, requests = container["resources"]["limits"], container["resources"]["requests"]
    assert limits["nvidia.com/gpu"] == requests["nvidia.com/gpu"] == "1"
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert spec["tolerations"][0]["key"] == "nvidia.com/gpu"
    env = environment(docs, worker, container)
    [claim] = worker["spec"]["volumeClaimTemplates"]
    volume_bytes = quantity(claim["spec"]["resources"]["requests"]["storage"])
    cache_gb = int(env["MODEL_CACHE_GB"])
    assert cache_gb * GB <= volume_bytes * CACHE_VOLUME_SHARE
    assert cache_gb * GB >= volume_bytes * (CACHE_VOLUME_SHARE - Decimal("0.01"))
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
    assert quantity(volumes["dshm"]["emptyDir"]["sizeLimit"]) * 4 <= quantity(limits["memory"])
    [budget] = find(docs, "PodDisruptionBudget")
    assert budget["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "worker"}}}
    egress = {doc["metadata"]["name"] for doc in find(docs, "NetworkPolicy")}
    assert "worker-model-sources" in egress
    assert "worker-model-sources" not in {
        doc["metadata"]["name"] for doc in find(render({}), "NetworkPolicy")
    }


def exported(metric: str) -> bool:
    """Whether the code exports `metric` (a family or a name built from one)."""
    return metric in METRICS_SOURCE or metric.removeprefix("sllm_frontdoor_") in METRICS_SOURCE


def test_the_keda_scaled_object() -> None:
    docs = render(GPU_VALUES)
    [scaled] = find(docs, "ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "name": "worker",
    }
    assert spec["minReplicaCount"] == 0 < spec["maxReplicaCount"]
    # Idle longer than a model's keep-alive before the last worker goes.
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert spec["cooldownPeriod"] > float(values["config"]["KEEP_ALIVE"])
    triggers = {trigger["name"]: trigger for trigger in spec["triggers"]}
    assert set(triggers) == {"waiting-requests", "demand"}
    for trigger in triggers.values():
        assert trigger["type"] == "prometheus"
        query = trigger["metadata"]["query"]
        for metric in re.findall(r"\b(sllm_[a-z_]+)\{", query):
            assert exported(metric), metric
        assert f'namespace="{NAMESPACE}"' in query
    waiting = triggers["waiting-requests"]["metadata"]
    assert "sllm_worker_queue_depth" in waiting["query"]
    assert int(waiting["threshold"]) * 4 == int(values["config"]["QUEUE_CAPACITY"])
    assert "sllm_frontdoor_requests_total" in triggers["demand"]["metadata"]["query"]
    assert not find(docs, "HorizontalPodAutoscaler")  # KEDA makes its own


def test_the_external_metrics_hpa_alternative() -> None:
    docs = render(VARIANTS["centralized-gpu-hpa"])
    [hpa] = find(docs, "HorizontalPodAutoscaler")
    [metric] = hpa["spec"]["metrics"]
    assert metric["type"] == "External"
    assert metric["external"]["metric"]["name"] == "sllm_waiting_requests"
    assert hpa["spec"]["minReplicas"] >= 1
    adapter = yaml.safe_load((ROOT / "deploy/prometheus/adapter-rules.yml").read_text())
    names = [rule["name"]["as"] for rule in adapter["rules"]["external"]]
    assert names == ["sllm_waiting_requests"]
    assert not find(docs, "ScaledObject")


@pytest.mark.parametrize(
    ("path", "autoscaling"),
    [
        ("keda-scaledobject.yaml", {"mode": "keda", "minReplicas": 0, "maxReplicas": 8}),
        ("hpa-external.yaml", {"mode": "external", "minReplicas": 1, "maxReplicas": 8}),
    ],
)
def test_the_gpu_overlays_autoscalers_are_the_charts(
    path: str, autoscaling: dict[str, Any]
) -> None:
    """One autoscaler in two forms: the overlay's file is what the chart renders."""
    [shipped] = yaml.safe_load_all((ROOT / "k8s/overlays/gpu/autoscaling" / path).read_text())
    [rendered] = [
        doc
        for doc in render({**GPU_VALUES, "autoscaling": autoscaling})
        if doc["kind"] == shipped["kind"]
    ]
    assert shipped["spec"] == rendered["spec"]
    assert shipped["metadata"]["name"] == rendered["metadata"]["name"]


def test_a_file_setting_needs_a_volume_the_chart_mounts() -> None:
    path = "/etc/sllm/cost-model/cost-model.json"
    bare = render({"config": {"COST_MODEL": path}})
    assert any(f"COST_MODEL={path} is on no volume" in p for p in environment_problems(bare, "x"))
    mounted = render(
        {
            "config": {"COST_MODEL": path},
            "extraVolumes": [{"name": "cost-model", "configMap": {"name": "sllm-cost-model"}}],
            "extraVolumeMounts": [
                {"name": "cost-model", "mountPath": "/etc/sllm/cost-model", "readOnly": True}
            ],
        }
    )
    assert environment_problems(mounted, "chart") == []


@pytest.mark.parametrize("variant", ["centralized-gpu", "decentralized-gpu"])
def test_the_gpu_host_tier_fits_the_memory_limit(variant: str) -> None:
    """Models put to sleep hold their weights in host memory, as does /dev/shm: both within
    the limit, with room left for the engine's own processes."""
    docs = render(VARIANTS[variant])
    [worker] = find(docs, "StatefulSet")
    spec = pod_spec(worker)
    [container] = spec["containers"]
    env = environment(docs, worker, container)
    shm = next(v for v in spec["volumes"] if v["name"] == "dshm")["emptyDir"]["sizeLimit"]
    limit = quantity(container["resources"]["limits"]["memory"])
    assert int(env["MODEL_HOST_GB"]) * GB + quantity(shm) <= limit * HOST_MEMORY_SHARE
