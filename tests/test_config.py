"""Settings: defaults, parsing, precedence, one error for every bad variable, worker id."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import sllm
from sllm import config as config_module
from sllm.config import (
    ConfigError,
    LazySettings,
    Settings,
    default_worker_id,
    load_settings,
)

FULL_ENV = {
    "DEPLOYMENT_MODE": "docker",
    "LOG_LEVEL": "debug",
    "BIND_HOST": "127.0.0.1",
    "COORDINATOR_HOST": "coord.example",
    "COORDINATOR_PORT": "9100",
    "WORKER_PORT": "8100",
    "REPORT_INTERVAL": "0.5",
    "WORKER_TIMEOUT": "3",
    "WORKER_ID": "gpu-7",
    "LOG_FORMAT": "json",
    "CLUSTER_SECRET": "s3cret-value",
    "PLACEMENT_POLICY": "least-loaded",
    "HTTP_PORT": "18080",
    "WORKER_HTTP_PORT": "18081",
    "KEEP_ALIVE": "0",
    "QUEUE_CAPACITY": "5",
    "WORKER_SLOTS": "2",
}


def problems_of(env: dict[str, str], overrides: dict[str, object] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env, overrides)
    return info.value.problems


def test_defaults() -> None:
    s = Settings.from_env({})
    assert s.deployment_mode == "local"
    assert s.log_level == "INFO"
    assert s.bind_host == "0.0.0.0"
    assert s.coordinator_host == "central-coordinator"
    assert s.coordinator_port == 9000
    assert s.worker_port == 8000
    assert s.report_interval == 1.0
    assert s.worker_timeout == 10.0
    assert s.log_format == "text"
    assert s.cluster_secret is None
    assert s.placement_policy == "startup-aware"
    assert s.http_port == 8080
    assert s.worker_http_port is None  # no HTTP of its own unless set
    assert s.keep_alive == 600.0
    assert s.queue_capacity == 64
    assert s.worker_slots == 8
    assert s.worker_id  # derived, never empty


def test_every_variable_parsed() -> None:
    s = Settings.from_env(FULL_ENV)
    assert s == Settings(
        deployment_mode="docker",
        log_level="DEBUG",
        bind_host="127.0.0.1",
        coordinator_host="coord.example",
        coordinator_port=9100,
        worker_port=8100,
        report_interval=0.5,
        worker_timeout=3.0,
        worker_id="gpu-7",
        log_format="json",
        cluster_secret="s3cret-value",
        placement_policy="least-loaded",
        http_port=18080,
        worker_http_port=18081,
        keep_alive=0.0,
        queue_capacity=5,
        worker_slots=2,
    )
    assert isinstance(s.coordinator_port, int)
    assert isinstance(s.worker_timeout, float)


def test_choices_are_case_insensitive_and_normalized() -> None:
    s = Settings.from_env(
        {
            "DEPLOYMENT_MODE": "Kubernetes",
            "LOG_LEVEL": "warning",
            "LOG_FORMAT": "JSON",
            "ALLOW_UNAUTHENTICATED": "TRUE",
        }
    )
    assert (s.deployment_mode, s.log_level, s.log_format) == ("kubernetes", "WARNING", "json")


def test_empty_variable_counts_as_unset() -> None:
    s = Settings.from_env({"WORKER_PORT": "", "CLUSTER_SECRET": "", "WORKER_ID": " "})
    assert s.worker_port == 8000
    assert s.cluster_secret is None
    assert s.worker_id == default_worker_id("local")


def test_port_zero_allowed() -> None:
    s = Settings.from_env({"COORDINATOR_PORT": "0", "WORKER_PORT": "0", "HTTP_PORT": "0"})
    assert (s.coordinator_port, s.worker_port, s.http_port) == (0, 0, 0)


def test_override_beats_env_beats_default() -> None:
    env = {"COORDINATOR_PORT": "9100", "REPORT_INTERVAL": "2"}
    s = Settings.from_env(env, {"coordinator_port": 9200, "worker_port": "8200"})
    assert s.coordinator_port == 9200  # flag over env
    assert s.worker_port == 8200  # flag over default, parsed from a string
    assert s.report_interval == 2.0  # env over default
    assert s.bind_host == "0.0.0.0"  # default


def test_none_override_is_ignored() -> None:
    s = Settings.from_env({"COORDINATOR_PORT": "9100"}, {"coordinator_port": None})
    assert s.coordinator_port == 9100


def test_unknown_override_key_is_a_caller_bug() -> None:
    with pytest.raises(TypeError, match="no_such_flag"):
        Settings.from_env({}, {"no_such_flag": 1})


def test_one_error_lists_every_bad_variable() -> None:
    env = {
        "REPORT_INTERVAL": "abc",
        "COORDINATOR_PORT": "70000",
        "DEPLOYMENT_MODE": "mainframe",
        "LOG_LEVEL": "loud",
        "QUEUE_CAPACITY": "0",
    }
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env, {"worker_port": -1})
    problems = info.value.problems
    assert "REPORT_INTERVAL='abc': not a number" in problems
    assert len(problems) == 6
    text = str(info.value)
    lines = text.splitlines()
    for name in (
        "REPORT_INTERVAL=",
        "COORDINATOR_PORT='70000'",
        "DEPLOYMENT_MODE='mainframe'",
        "LOG_LEVEL='loud'",
        "QUEUE_CAPACITY='0'",
        "--worker-port=-1",
    ):
        assert sum(name in line for line in lines) == 1, name


def test_timeout_must_exceed_interval() -> None:
    problems = problems_of({"REPORT_INTERVAL": "5", "WORKER_TIMEOUT": "5"})
    assert problems == ["WORKER_TIMEOUT=5.0: must exceed REPORT_INTERVAL=5.0"]
    # Against the default timeout, and reported alongside other problems.
    problems = problems_of({"REPORT_INTERVAL": "20", "LOG_FORMAT": "xml"})
    assert len(problems) == 2
    assert any("WORKER_TIMEOUT (default)=10.0: must exceed" in p for p in problems)


def test_timeout_rule_skipped_when_a_side_is_unparseable() -> None:
    assert problems_of({"REPORT_INTERVAL": "x", "WORKER_TIMEOUT": "0.1"}) == [
        "REPORT_INTERVAL='x': not a number"
    ]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("REPORT_INTERVAL", "0"),
        ("REPORT_INTERVAL", "-1"),
        ("REPORT_INTERVAL", "nan"),
        ("WORKER_TIMEOUT", "inf"),
        ("KEEP_ALIVE", "-0.5"),
        ("WORKER_SLOTS", "0"),
        ("WORKER_SLOTS", "2.5"),
        ("HTTP_PORT", "-1"),
        ("WORKER_HTTP_PORT", "65536"),
        ("BIND_HOST", "two words"),
        ("WORKER_ID", "x" * 129),
        ("WORKER_ID", "gpu/7"),
        ("WORKER_ID", "gpu\u00e9"),
        ("PLACEMENT_POLICY", "fastest"),
    ],
)
def test_bad_values_rejected(name: str, value: str) -> None:
    problems = problems_of({name: value})
    assert len(problems) == 1
    assert problems[0].startswith(f"{name}={value!r}: ")


def test_policy_names_can_be_passed_in() -> None:
    s = Settings.from_env({"PLACEMENT_POLICY": "mine"}, policy_names=("mine", "startup-aware"))
    assert s.placement_policy == "mine"
    with pytest.raises(ConfigError, match="PLACEMENT_POLICY \\(default\\)"):
        Settings.from_env({}, policy_names=("mine",))


def test_override_values_are_validated_too() -> None:
    problems = problems_of({}, {"report_interval": "soon", "keep_alive": True})
    assert problems == [
        "--report-interval='soon': not a number",
        "--keep-alive=True: not a number",
    ]


def test_direct_construction_validates() -> None:
    with pytest.raises(ConfigError) as info:
        Settings(coordinator_port=70000, report_interval=2.0, worker_timeout=1.0)
    assert len(info.value.problems) == 2


def test_worker_id_from_env_and_stable() -> None:
    s = Settings.from_env({"WORKER_ID": "gpu-7"})
    assert s.worker_id == s.get_worker_id() == "gpu-7"
    auto = Settings.from_env({})
    assert auto.get_worker_id() == auto.get_worker_id() == auto.worker_id
    assert auto.worker_id == Settings.from_env({}).worker_id
    assert auto.worker_id.startswith("worker-")
    assert auto.worker_id.endswith(f"-{os.getpid()}")


def test_worker_id_override_beats_env() -> None:
    s = Settings.from_env({"WORKER_ID": "gpu-7"}, {"worker_id": "gpu-8"})
    assert s.get_worker_id() == "gpu-8"


def test_kubernetes_mode_uses_the_hostname(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "sllm-worker-3")
    s = Settings.from_env({"DEPLOYMENT_MODE": "kubernetes", "CLUSTER_SECRET": "s3cret-value"})
    assert s.get_worker_id() == "sllm-worker-3"
    local = Settings.from_env({})
    assert local.get_worker_id() == f"worker-sllm-worker-3-{os.getpid()}"
    pinned = Settings.from_env(
        {"DEPLOYMENT_MODE": "kubernetes", "WORKER_ID": "w1", "CLUSTER_SECRET": "s3cret-value"}
    )
    assert pinned.get_worker_id() == "w1"


@pytest.mark.parametrize(
    ("mode", "expected"), [("local", False), ("docker", True), ("kubernetes", True)]
)
def test_is_containerized(mode: str, expected: bool) -> None:
    env = {"DEPLOYMENT_MODE": mode, "CLUSTER_SECRET": "s3cret-value"}
    assert Settings.from_env(env).is_containerized() is expected


def test_get_coordinator_address() -> None:
    assert Settings.from_env({}).get_coordinator_address() == ("central-coordinator", 9000)
    s = Settings.from_env({"COORDINATOR_HOST": "127.0.0.5"}, {"coordinator_port": 9999})
    assert s.get_coordinator_address() == ("127.0.0.5", 9999)


def test_secret_never_shown() -> None:
    s = Settings.from_env({"CLUSTER_SECRET": "s3cret-value"})
    assert s.cluster_secret == "s3cret-value"
    assert "s3cret-value" not in repr(s)
    assert "cluster_secret" not in repr(s)
    with pytest.raises(ConfigError) as info:
        Settings.from_env({}, {"cluster_secret": 12345})
    assert "12345" not in str(info.value)
    assert "CLUSTER_SECRET" not in str(info.value)
    assert "--cluster-secret=<hidden>" in str(info.value)


def test_lazy_settings_raise_on_use_not_on_creation() -> None:
    lazy = LazySettings(lambda: Settings.from_env({"REPORT_INTERVAL": "abc"}))
    with pytest.raises(ConfigError):
        _ = lazy.coordinator_port
    with pytest.raises(ConfigError):  # not cached: raises again
        lazy.get_worker_id()


def test_lazy_settings_build_once() -> None:
    calls: list[int] = []

    def load() -> Settings:
        calls.append(1)
        return Settings.from_env({"DEPLOYMENT_MODE": "docker", "CLUSTER_SECRET": "s3cret-value"})

    lazy = LazySettings(load)
    assert lazy.is_containerized()
    assert lazy.get_worker_id() == lazy.get_worker_id()
    assert lazy.get_coordinator_address() == ("central-coordinator", 9000)
    assert calls == [1]
    assert lazy.resolve() is lazy.resolve()


def test_load_settings_reads_environ_and_installs_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config_module._lazy, "_settings", None)
    monkeypatch.setenv("COORDINATOR_HOST", "coord-from-env")
    monkeypatch.setenv("WORKER_PORT", "8123")
    s = load_settings({"worker_port": 8124})
    assert s.coordinator_host == "coord-from-env"
    assert s.worker_port == 8124
    assert config_module.config.worker_port == 8124
    assert config_module.config.get_worker_id() == s.get_worker_id()


def test_import_never_raises_on_a_bad_environment() -> None:
    src = str(Path(sllm.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": src, "REPORT_INTERVAL": "abc", "COORDINATOR_PORT": "x"}
    code = (
        "from sllm.config import config, ConfigError\n"
        "try:\n"
        "    config.coordinator_port\n"
        "except ConfigError as e:\n"
        "    print(len(e.problems))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "2"


@pytest.mark.parametrize("mode", ["docker", "kubernetes"])
def test_a_container_mode_needs_a_cluster_secret_unless_told_otherwise(mode: str) -> None:
    """An orchestrated cluster with an empty secret (an old manifest's Secret, an unset
    variable) would run unauthenticated with only a warning: it stops at startup instead."""
    for env in ({"DEPLOYMENT_MODE": mode}, {"DEPLOYMENT_MODE": mode, "CLUSTER_SECRET": ""}):
        with pytest.raises(ConfigError) as raised:
            Settings.from_env(env)
        assert "CLUSTER_SECRET" in str(raised.value)
        assert "ALLOW_UNAUTHENTICATED" in str(raised.value)
    allowed = Settings.from_env({"DEPLOYMENT_MODE": mode, "ALLOW_UNAUTHENTICATED": "yes"})
    assert allowed.cluster_secret is None and allowed.allow_unauthenticated
    with pytest.raises(ConfigError, match="ALLOW_UNAUTHENTICATED='maybe': not true or false"):
        Settings.from_env({"ALLOW_UNAUTHENTICATED": "maybe"})
    assert Settings.from_env({}).cluster_secret is None  # local mode: a warning only


def test_a_hostname_outside_the_id_characters_still_makes_a_valid_worker_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "Johns MacBook Pro")
    assert default_worker_id("local") == f"worker-Johns-MacBook-Pro-{os.getpid()}"
    assert default_worker_id("kubernetes") == "Johns-MacBook-Pro"


def test_the_model_cache_limits_size_the_workers_disk_and_host_tiers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """MODEL_CACHE_GB and MODEL_HOST_GB are what a worker's state machine evicts against,
    so a cache volume and a memory limit of known sizes can be respected (the Kubernetes
    GPU worker sets both)."""
    from sllm import cli
    from sllm.core.worker import GB, WorkerResources

    assert Settings.from_env({}).model_cache_gb == WorkerResources().disk_bytes // GB
    assert Settings.from_env({"MODEL_CACHE_GB": "450"}).model_cache_gb == 450
    for bad in ("0", "1.5", "lots"):
        [problem] = problems_of({"MODEL_CACHE_GB": bad})
        assert problem.startswith(f"MODEL_CACHE_GB={bad!r}: ")

    built: list[WorkerResources] = []

    def server(**arguments: object) -> object:
        resources = arguments["resources"]
        assert isinstance(resources, WorkerResources)
        built.append(resources)
        return object()

    monkeypatch.setattr(cli, "WorkerServer", server)
    monkeypatch.setattr(cli, "run_service", lambda _server: 0)
    for name in list(os.environ):
        if name in config_module.ENVIRONMENT_VARIABLES:
            monkeypatch.delenv(name)
    monkeypatch.setenv("MODEL_CACHE_GB", "450")
    monkeypatch.setenv("MODEL_HOST_GB", "32")
    assert cli.main(["worker", "--port", "0"]) == 0
    assert [(r.disk_bytes, r.host_bytes) for r in built] == [(450 * GB, 32 * GB)]
    assert Settings.from_env({}).model_host_gb == WorkerResources().host_bytes // GB
    [problem] = problems_of({"MODEL_HOST_GB": "0"})
    assert problem.startswith("MODEL_HOST_GB='0': ")
