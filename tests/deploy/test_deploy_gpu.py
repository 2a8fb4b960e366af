"""The GPU overlay (k8s/overlays/gpu), as ``kubectl kustomize`` renders it.

- It validates strictly against the oldest and newest Kubernetes schemas known, and its
  copies of the base's files are the base's, byte for byte.
- Each worker asks for a GPU on a GPU node, keeps its model cache on its own volume with
  MODEL_CACHE_GB under the volume's size, has shared memory in RAM within its memory
  limit, reads the operator's catalog, and may reach HTTPS outside the cluster but no
  private address.
- Every rendering of the kustomizations (base, decentralized, GPU) sets only variables
  the code reads, with values it accepts, on volumes that exist (`pods.py`); a variable
  the code does not know fails the check.
"""

from __future__ import annotations

import copy
import ipaddress
import shutil
import subprocess
from decimal import Decimal
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pods import environment, environment_problems, pod_spec, quantity

from sllm.core.worker import GB

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
GPU = K8S / "overlays" / "gpu"
KUSTOMIZATIONS = {
    "base": K8S,
    "decentralized": K8S / "overlays" / "decentralized",
    "gpu": GPU,
}
KUBERNETES_VERSIONS = ("1.25.0", kubernetes_validate.latest_version())
TOOL_TIMEOUT_S = 60
# The share of the cache volume MODEL_CACHE_GB may take: a checkpoint file downloads
# under a temporary name beside the cache before it counts, and the filesystem keeps some.
CACHE_VOLUME_SHARE = Decimal("0.9")
# The share of the memory limit the host tier and /dev/shm may take together.
HOST_MEMORY_SHARE = Decimal("0.6")
# One GPU's engine needs at least this much shared memory (vLLM's request queues).
SHM_MIN_BYTES = 2**30


def kustomize(directory: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (install kubectl)")
    built = subprocess.run(
        [kubectl, "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT_S,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    return [doc for doc in yaml.safe_load_all(built.stdout) if doc]


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    for doc in docs:
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    raise AssertionError(f"no {kind} {name}")


@pytest.fixture(scope="module")
def gpu() -> list[dict[str, Any]]:
    return kustomize(GPU)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_gpu_overlay_validates(gpu: list[dict[str, Any]], version: str) -> None:
    for doc in gpu:
        kubernetes_validate.validate(doc, version, strict=True)
    kinds = {(doc["kind"], doc["metadata"]["name"]) for doc in gpu}
    assert {("Deployment", "central-coordinator"), ("StatefulSet", "worker")} <= kinds
    assert not any(kind == "Secret" for kind, _ in kinds)  # the operator's, never applied
    assert not any(kind == "HorizontalPodAutoscaler" for kind, _ in kinds)  # not on CPU


def test_the_gpu_overlays_copies_are_the_bases() -> None:
    listed = yaml.safe_load((GPU / "kustomization.yaml").read_text())["resources"]
    copies = [name for name in listed if (K8S / name).exists()]
    assert len(copies) >= 6, copies
    for name in copies:
        assert (GPU / name).read_text() == (K8S / name).read_text(), name


def test_each_gpu_worker_asks_for_a_gpu_a_cache_volume_and_shared_memory(
    gpu: list[dict[str, Any]],
) -> None:
    worker = find(gpu, "StatefulSet", "worker")
    spec = pod_spec(worker)
    [container] = spec["containers"]
    resources = container["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"]
    assert int(resources["limits"]["nvidia.com/gpu"]) >= 1
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec[
        "tolerations"
    ]
    assert container["image"] == "sllm/worker-gpu:latest"

    env = environment(gpu, worker, container)
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    [claim] = worker["spec"]["volumeClaimTemplates"]
    cache_mount = next(path for path, name in mounts.items() if name == claim["metadata"]["name"])
    assert env["MODEL_CACHE_DIR"].startswith(cache_mount + "/")
    volume_bytes = quantity(claim["spec"]["resources"]["requests"]["storage"])
    assert int(env["MODEL_CACHE_GB"]) * GB <= volume_bytes * CACHE_VOLUME_SHARE
    # Not so far under that most of the volume is wasted either.
    assert int(env["MODEL_CACHE_GB"]) * GB >= volume_bytes * (CACHE_VOLUME_SHARE - Decimal("0.1"))

    shm = volumes[mounts["/dev/shm"]]["emptyDir"]
    assert shm["medium"] == "Memory"
    assert quantity(shm["sizeLimit"]) >= SHM_MIN_BYTES
    # Memory-backed volumes count against the limit, and so do models put to sleep (the
    # host tier): together within a share of it, the rest for the engine's processes.
    memory = quantity(resources["limits"]["memory"])
    assert quantity(shm["sizeLimit"]) * 4 <= memory
    host_tier = int(env["MODEL_HOST_GB"]) * GB
    assert host_tier + quantity(shm["sizeLimit"]) <= memory * HOST_MEMORY_SHARE

    catalog = volumes[mounts[str(Path(env["MODEL_CATALOG"]).parent)]]
    assert catalog["configMap"]["name"] == "sllm-catalog"
    assert "optional" not in catalog["configMap"]  # no catalog, no worker
    assert not any(
        doc["kind"] == "ConfigMap" and doc["metadata"]["name"] == "sllm-catalog" for doc in gpu
    )  # the operator's: an apply never overwrites it
    coordinator = find(gpu, "Deployment", "central-coordinator")
    [front] = pod_spec(coordinator)["containers"]
    assert environment(gpu, coordinator, front)["MODEL_CATALOG"] == env["MODEL_CATALOG"]


def test_gpu_workers_reach_https_outside_the_cluster_and_nothing_private(
    gpu: list[dict[str, Any]],
) -> None:
    policy = find(gpu, "NetworkPolicy", "worker-model-sources")
    assert policy["spec"]["podSelector"] == {"matchLabels": {"app": "worker"}}
    [rule] = policy["spec"]["egress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 443}]
    [peer] = rule["to"]
    allowed = ipaddress.ip_network(peer["ipBlock"]["cidr"])
    refused = [ipaddress.ip_network(block) for block in peer["ipBlock"]["except"]]

    def reachable(address: str) -> bool:
        """Whether the policy admits `address`: arithmetic on the rule, no packet is sent."""
        ip = ipaddress.ip_address(address)
        return ip in allowed and not any(ip in block for block in refused)

    # A public host (a documentation address stands for one) is reachable ...
    assert reachable("203.0.113.7")
    # ... private ranges, carrier-grade NAT and the cloud metadata service are not.
    for private in ("10.1.2.3", "172.20.0.5", "192.168.1.1", "100.64.0.1", "169.254.169.254"):
        assert not reachable(private), private


@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_every_rendered_pod_sets_only_what_the_code_reads(name: str) -> None:
    docs = kustomize(KUSTOMIZATIONS[name])
    assert environment_problems(docs, name) == []


def test_an_unknown_variable_or_a_cache_off_its_volume_fails_the_check(
    gpu: list[dict[str, Any]],
) -> None:
    broken = copy.deepcopy(gpu)
    worker = find(broken, "StatefulSet", "worker")
    [container] = pod_spec(worker)["containers"]
    container["env"].append({"name": "MODEL_CACHE_SIZE", "value": "480"})  # a wrong name
    for variable in container["env"]:
        if variable["name"] == "MODEL_CACHE_DIR":
            variable["value"] = "/app/models"  # the read-only root filesystem
        if variable["name"] == "MODEL_CACHE_GB":
            variable["value"] = "0"
    problems = "\n".join(environment_problems(broken, "gpu"))
    assert "MODEL_CACHE_SIZE is read by no setting" in problems
    assert "MODEL_CACHE_DIR=/app/models is on no writable volume" in problems
    assert "MODEL_CACHE_GB='0'" in problems
