"""Integration: the command line as an operator uses it.

Invalid configuration, `sllm status` (JSON, table, nobody listening), and the guide's
root scripts on a bare interpreter: no PYTHONPATH and no site-packages, so `sllm` is only
found through the scripts' own path setup and only the standard library is available.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from sllm.experiments.launcher import ServiceProcess, child_environment

pytestmark = pytest.mark.integration

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
JOIN_TIMEOUT_S = 5.0
CLI_TIMEOUT_S = 15.0


def test_invalid_configuration_lists_every_bad_variable_and_exits_2(live_env) -> None:
    env = child_environment(
        {
            **live_env,
            "REPORT_INTERVAL": "abc",
            "COORDINATOR_PORT": "70000",
            "DEPLOYMENT_MODE": "cloud",
            "LOG_LEVEL": "LOUD",
        }
    )
    done = subprocess.run(
        [sys.executable, "-m", "sllm", "coordinator"],
        env=env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
    )
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    # One message: a single heading, then one line per variable.
    assert done.stderr.count("invalid configuration") == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[0] == "sllm: invalid configuration:"
    named = {line.strip().split("=")[0] for line in lines[1:]}
    assert named == {"REPORT_INTERVAL", "COORDINATOR_PORT", "DEPLOYMENT_MODE", "LOG_LEVEL"}
    assert "Traceback" not in done.stderr


async def run_cli(*args: str, timeout: float = CLI_TIMEOUT_S) -> tuple[int, str, str]:
    """Run ``python -m sllm *args`` without blocking the loop; (exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sllm",
        *args,
        env=child_environment({"LOG_FORMAT": "text", "CLUSTER_SECRET": ""}),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def free_udp_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_status_prints_json_and_a_table(live_cluster, eventually, check_status) -> None:
    async with live_cluster as cluster:
        await cluster.start_coordinator()
        await cluster.start_workers("w1", "w2")
        await eventually(
            lambda: _ids_are(cluster, {"w1", "w2"}), JOIN_TIMEOUT_S, "both workers reported"
        )
        target = f"127.0.0.1:{cluster.coordinator_port}"

        code, out, err = await run_cli("status", "--coordinator", target, "--json")
        assert code == 0, err
        check_status(json.loads(out), ["w1", "w2"])

        code, out, err = await run_cli("status", "--coordinator", target)
        assert code == 0, err
        lines = out.splitlines()
        assert "active workers 2" in lines[0]
        assert lines[2].split()[:2] == ["WORKER", "ADDRESS"]
        assert [line.split()[0] for line in lines[3:]] == ["w1", "w2"]


async def test_status_without_a_coordinator_fails_clearly() -> None:
    port = free_udp_port()
    started = time.monotonic()
    code, out, err = await run_cli(
        "status", "--coordinator", f"127.0.0.1:{port}", "--timeout", "0.5", timeout=10.0
    )
    elapsed = time.monotonic() - started
    assert code != 0
    assert out == ""
    assert err.strip() == (
        f"sllm status: no answer from coordinator 127.0.0.1:{port} (TimeoutError: timed out)"
    )
    assert elapsed < 5.0


async def start_script(
    name: str, script: str, args: list[str], env: dict[str, str]
) -> ServiceProcess:
    """Run a root script from the repository root on the bare interpreter.

    `ServiceProcess.start` runs ``python -m sllm`` with PYTHONPATH set, which is what this
    test must avoid, so the process is started here and handed to `ServiceProcess` for its
    log reading and stopping.
    """
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-S",  # no site-packages: the installed `sllm` and every third-party package are gone
        script,
        *args,
        cwd=ROOT,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    return ServiceProcess(name, process, echo=False)


async def test_root_scripts_run_on_a_bare_interpreter(live_env, eventually, live_cluster) -> None:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(live_env)
    # The cluster object lends its client endpoint and kills whatever it tracks on exit.
    async with live_cluster as cluster:
        coordinator = await start_script(
            "coordinator", "udp_central_coordinator.py", ["--host", "127.0.0.1", "--port", "0"], env
        )
        cluster.services.append(coordinator)
        cluster.coordinator_port = await eventually(
            lambda: _listening_port(coordinator), JOIN_TIMEOUT_S, "coordinator listening"
        )
        worker_args = ["--node-id", "w1", "--port", "0"]
        worker_args += ["--coordinator-port", str(cluster.coordinator_port)]
        worker_args += ["--coordinator-host", "127.0.0.1"]
        worker = await start_script("worker", "worker_node.py", worker_args, env)
        cluster.services.append(worker)
        await eventually(lambda: _listening_port(worker), JOIN_TIMEOUT_S, "worker listening")
        await eventually(lambda: _ids_are(cluster, {"w1"}), JOIN_TIMEOUT_S, "w1 joined")
        for service in (worker, coordinator):
            assert await service.stop() == 0, "\n".join(service.lines)


def _listening_port(service: ServiceProcess) -> int:
    if not service.running:
        tail = "\n".join(service.lines)
        pytest.fail(f"{service.name} exited {service.process.returncode}:\n{tail}")
    events = service.events("listening")
    return int(events[0]["port"]) if events else 0


async def _ids_are(cluster, ids: set[str]) -> bool:
    return await cluster.worker_ids() == ids
