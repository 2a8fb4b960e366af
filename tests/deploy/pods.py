"""What a rendered Kubernetes object asks of the code, for the deployment checks.

A pod's environment is what its container would see: the ConfigMaps it reads with
``envFrom`` (those in the same rendering), then its ``env`` with ``$(VAR)`` expanded, a
Secret's key standing for the operator's value and the downward API's pod name for the
first pod. `environment_problems` then says, one line each, what the code would refuse or
never read:

- a variable that `sllm.config` does not read (`Settings`' table), unless it is one of
  `FOREIGN_VARIABLES`, each with the reason it is there;
- a value `Settings.from_env` refuses (the process would stop at start);
- a Secret other than the operator's ``sllm-secrets``, or a key of it no setting reads;
- a file setting (MODEL_CATALOG, COST_MODEL) that no volume provides, or a model cache
  (MODEL_CACHE_DIR) that is not on a writable volume: the root filesystem is read-only.

`quantity` reads Kubernetes quantities (``500Gi``, ``2G``, ``250m``) for the checks that
compare sizes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from sllm.config import _VARIABLES, ConfigError, Settings

# Every variable `Settings` reads.
SETTINGS_VARIABLES = frozenset(var.env for var in _VARIABLES)
# Variables a manifest may set that `Settings` does not read, and why each is there.
FOREIGN_VARIABLES = {
    "POD_NAME": "the downward API's pod name, expanded into WORKER_ID and --node-id",
}
# The operator's Secret, and what a pod may take from it.
SECRET_NAME = "sllm-secrets"
SECRET_KEYS = frozenset({"CLUSTER_SECRET", "API_KEYS", "ADMIN_KEY"})
OPERATOR_SECRET = "a-secret-the-operator-created-0123"
# Settings that name a file the process reads at start, and the one folder it writes.
FILE_SETTINGS = ("MODEL_CATALOG", "COST_MODEL")
CACHE_SETTING = "MODEL_CACHE_DIR"

_SUFFIXES = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
}
_QUANTITY = re.compile(r"^([0-9.]+)(m|Ki|Mi|Gi|Ti|k|M|G|T)?$")
_REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def quantity(text: str | int) -> Decimal:
    """A Kubernetes quantity as a number: bytes for memory and storage, cores for CPU."""
    match = _QUANTITY.fullmatch(str(text))
    assert match, f"not a quantity: {text!r}"
    number, suffix = Decimal(match.group(1)), match.group(2)
    if suffix == "m":
        return number / 1000
    return number * _SUFFIXES.get(suffix or "", 1)


def workloads(docs: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    return (doc for doc in docs if doc["kind"] in ("Deployment", "StatefulSet"))


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def environment(
    docs: list[dict[str, Any]], workload: dict[str, Any], container: dict[str, Any]
) -> dict[str, str]:
    """The variables `container` of `workload` starts with, as described above."""
    config_maps = {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == "ConfigMap"}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        reference = source.get("configMapRef")
        if reference and reference["name"] in config_maps:
            env.update(config_maps[reference["name"]].get("data", {}))
    pod_name = f"{workload['metadata']['name']}-0"
    for variable in container.get("env", []):
        value = variable.get("value", "")
        origin = variable.get("valueFrom", {})
        if "secretKeyRef" in origin:
            value = OPERATOR_SECRET
        elif "fieldRef" in origin:
            assert origin["fieldRef"]["fieldPath"] == "metadata.name", variable
            value = pod_name
        env[variable["name"]] = _REFERENCE.sub(lambda m: env.get(m.group(1), m.group(0)), value)
    return env


def _mounts(workload: dict[str, Any], container: dict[str, Any]) -> dict[str, bool]:
    """Each mount path of `container`, and whether it is writable."""
    volumes = {volume["name"]: volume for volume in pod_spec(workload).get("volumes", [])}
    claims = {
        claim["metadata"]["name"] for claim in workload["spec"].get("volumeClaimTemplates", [])
    }
    mounts = {}
    for mount in container.get("volumeMounts", []):
        volume = volumes.get(mount["name"], {})
        assert volume or mount["name"] in claims, f"no volume {mount['name']}"
        read_only_kind = "configMap" in volume or "secret" in volume
        mounts[mount["mountPath"]] = not (mount.get("readOnly", False) or read_only_kind)
    return mounts


def _under(path: str, mounts: dict[str, bool]) -> tuple[str, bool] | None:
    """The mount that holds `path`, deepest first, and whether it is writable."""
    for mount in sorted(mounts, key=len, reverse=True):
        if path == mount or path.startswith(mount.rstrip("/") + "/"):
            return mount, mounts[mount]
    return None


def environment_problems(docs: list[dict[str, Any]], where: str) -> list[str]:
    """Every way the pods of `docs` would not start, or set what nothing reads."""
    problems = []
    for workload in workloads(docs):
        for container in pod_spec(workload)["containers"]:
            name = f"{where}: {workload['kind']} {workload['metadata']['name']}"
            env = environment(docs, workload, container)
            for variable in sorted(set(env) - SETTINGS_VARIABLES - set(FOREIGN_VARIABLES)):
                problems.append(f"{name}: {variable} is read by no setting of sllm.config")
            for variable in container.get("env", []):
                secret = variable.get("valueFrom", {}).get("secretKeyRef")
                if secret and (secret["name"] != SECRET_NAME or secret["key"] not in SECRET_KEYS):
                    problems.append(f"{name}: {variable['name']} from an unknown {secret}")
            try:
                Settings.from_env({k: v for k, v in env.items() if k in SETTINGS_VARIABLES})
            except ConfigError as error:
                problems.append(f"{name}: {error}")
            mounts = _mounts(workload, container)
            for setting in FILE_SETTINGS:
                if env.get(setting) and _under(env[setting], mounts) is None:
                    problems.append(f"{name}: {setting}={env[setting]} is on no volume")
            cache = env.get(CACHE_SETTING)
            if cache:
                holder = _under(cache, mounts)
                if holder is None or not holder[1]:
                    problems.append(f"{name}: {CACHE_SETTING}={cache} is on no writable volume")
    return problems
