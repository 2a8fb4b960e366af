"""docker-compose.yml's topology without a container engine: one network namespace per service.

There is no Docker engine on these machines, so the compose network is rebuilt from the
file itself: a bridge (in a namespace of its own) on the network's subnet (172.28.0.0/16),
one namespace per service with an address on it, and ``/etc/netns/NAME/hosts`` in each
naming every service, as Docker's DNS does. Each service runs the entrypoint of its
Dockerfile with the environment its container would get (the image's ENV, then the
compose ``environment:``, with a CLUSTER_SECRET interpolated in, so every datagram is
signed). So the test breaks when docker-compose.yml or a Dockerfile does.

It checks that workers find ``central-coordinator`` by name, that the compose health
checks pass, and that a coordinator recreated at a new address (as a recreated container
gets one) has every worker back in its view, without restarting them.

Addresses exist only inside the namespaces created here; nothing is added to the host's
own network namespace. Names start with ``sllmc-``, and everything is removed at the end,
also on failure. Skipped, with the reason, where namespaces cannot be created (not root,
no ``ip``, no CAP_SYS_ADMIN).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sllm.experiments.launcher import SOURCE_ROOT, ServiceProcess

NETNS_ETC = Path("/etc/netns")
PREFIX = "sllmc-"
NETWORK = "sllm-network"
COORDINATOR = "central-coordinator"
# Compose's REPORT_INTERVAL is 1 s: a worker shows up within a report or two.
JOIN_TIMEOUT_S = 10.0
COMMAND_TIMEOUT_S = 10.0

pytestmark = pytest.mark.integration


def ip(*args: str) -> None:
    done = subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


class ComposeNetwork:
    """A compose network emulated with namespaces: a bridge, and a namespace per container.

    The bridge lives in a namespace of its own, so the host's namespace gets no address,
    route or interface. Names resolve through each namespace's hosts file, which `publish`
    rewrites in place (``ip netns exec`` bind-mounts the file, so running processes see
    the new contents, as containers see Docker's DNS change).
    """

    def __init__(self, subnet: ipaddress.IPv4Network) -> None:
        self.subnet = subnet
        self.tag = secrets.token_hex(3)
        self.bridge_ns = f"{PREFIX}{self.tag}-net"
        self.names: dict[str, ipaddress.IPv4Address] = {}
        self.namespaces: list[str] = []
        self._addresses = subnet.hosts()
        next(self._addresses)  # .1 is a Docker network's gateway; keep it free

    def create(self) -> None:
        self._add_namespace(self.bridge_ns)
        ip("-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
        ip("-n", self.bridge_ns, "link", "set", "br0", "up")

    def _add_namespace(self, namespace: str) -> None:
        ip("netns", "add", namespace)
        self.namespaces.append(namespace)
        (NETNS_ETC / namespace).mkdir(parents=True, exist_ok=True)
        (NETNS_ETC / namespace / "hosts").write_text("127.0.0.1 localhost\n")

    def attach(self, role: str) -> tuple[str, str]:
        """A new namespace on the bridge with the next free address; returns both."""
        namespace = f"{PREFIX}{self.tag}-{role}"
        address = str(next(self._addresses))
        port = f"veth{len(self.namespaces)}"
        self._add_namespace(namespace)
        # Both ends are made in place: nothing appears in the host's namespace.
        pair = f"link add {port} netns {self.bridge_ns} type veth peer name eth0 netns {namespace}"
        ip(*pair.split())
        ip("-n", self.bridge_ns, "link", "set", port, "master", "br0", "up")
        ip("-n", namespace, "addr", "add", f"{address}/{self.subnet.prefixlen}", "dev", "eth0")
        ip("-n", namespace, "link", "set", "eth0", "up")
        ip("-n", namespace, "link", "set", "lo", "up")
        return namespace, address

    def publish(self, names: dict[str, str]) -> None:
        """Make `names` (service name -> address) resolve in every namespace."""
        lines = ["127.0.0.1 localhost", *(f"{addr} {name}" for name, addr in names.items())]
        for namespace in self.namespaces[1:]:
            # In place (same inode): processes already running read the new names.
            (NETNS_ETC / namespace / "hosts").write_text("\n".join(lines) + "\n")

    def remove(self) -> None:
        for namespace in reversed(self.namespaces):
            with contextlib.suppress(RuntimeError):
                ip("netns", "del", namespace)
            shutil.rmtree(NETNS_ETC / namespace, ignore_errors=True)
        self.namespaces.clear()


def compose_subnet(compose_file: dict[str, Any]) -> ipaddress.IPv4Network:
    config = compose_file["networks"][NETWORK]["ipam"]["config"]
    subnet = ipaddress.ip_network(config[0]["subnet"])
    assert isinstance(subnet, ipaddress.IPv4Network)
    return subnet


@pytest.fixture
def network(compose_file: dict[str, Any]) -> Iterator[ComposeNetwork]:
    """The compose file's network, emulated; removed after the test, pass or fail."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if shutil.which("ip") is None:
        pytest.skip("iproute2's `ip` is not installed (apt-get install iproute2)")
    emulated = ComposeNetwork(compose_subnet(compose_file))
    try:
        emulated.create()
    except (RuntimeError, OSError) as error:
        emulated.remove()
        pytest.skip(f"cannot create network namespaces here: {error}")
    try:
        yield emulated
    finally:
        emulated.remove()


def container_environment(environment: dict[str, str], marker: str) -> dict[str, str]:
    """What a container sees: its image's and compose's variables, and no host variables."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": SOURCE_ROOT,  # stands in for the image's `pip install .`
        # The image's PATH leads to its virtual environment, which here is this interpreter.
        **{name: value for name, value in environment.items() if name != "PATH"},
        "SLLM_TEST_MARKER": marker,
    }


def host_argv(command: list[str]) -> list[str]:
    """A container command run here: the image's `python` is this interpreter."""
    assert command, "no command"
    program = sys.executable if command[0] in ("python", "python3") else command[0]
    return [program, *command[1:]]


async def in_namespace(
    namespace: str, argv: list[str], env: dict[str, str]
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        "ip",
        "netns",
        "exec",
        namespace,  # `ip netns exec` execs: the process is the service itself
        *argv,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )


async def run_once(namespace: str, argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    process = await in_namespace(namespace, argv, env)
    try:
        out, _ = await asyncio.wait_for(process.communicate(), COMMAND_TIMEOUT_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        return -1, "timed out"
    return process.returncode or 0, out.decode(errors="replace")


async def test_compose_services_find_the_coordinator_by_name_and_outlive_it(
    network: ComposeNetwork, compose, eventually
) -> None:
    secret = secrets.token_hex(16)
    services = compose({"CLUSTER_SECRET": secret})
    # What `docker-compose up` starts: every service outside a profile.
    default = {name: spec for name, spec in services.items() if not spec.spec.get("profiles")}
    assert COORDINATOR in default
    worker_names = [name for name in default if name != COORDINATOR]
    assert {"worker-1", "worker"} <= set(worker_names)
    marker = secrets.token_hex(8)

    places = {name: network.attach(f"s{index}") for index, name in enumerate(default)}
    client_ns, _ = network.attach("client")
    network.publish({name: address for name, (_, address) in places.items()})
    running: list[ServiceProcess] = []

    async def start(name: str, namespace: str) -> ServiceProcess:
        service = default[name]
        env = container_environment(service.environment, marker)
        process = await in_namespace(namespace, host_argv(service.command), env)
        started = ServiceProcess(name, process, echo=False)
        running.append(started)

        def listening() -> dict[str, Any] | None:
            if not started.running:
                pytest.fail(f"{name} exited {process.returncode}:\n" + "\n".join(started.lines))
            events = started.events("listening")
            return events[0] if events else None

        await eventually(listening, 15.0, f"{name} listening")
        return started

    async def healthy(name: str, namespace: str) -> None:
        service = default[name]
        env = container_environment(service.environment, marker)
        code, out = await run_once(namespace, host_argv(service.healthcheck), env)
        assert code == 0, f"{name} health check failed: {out}"

    async def view() -> dict[str, Any] | None:
        """`sllm status --json` run on the network, addressing the coordinator by name."""
        port = default[COORDINATOR].environment["COORDINATOR_PORT"]
        argv = [sys.executable, "-m", "sllm", "status", "--json", "--timeout", "1"]
        argv += ["--coordinator", f"{COORDINATOR}:{port}"]
        env = container_environment({"CLUSTER_SECRET": secret, "LOG_FORMAT": "json"}, marker)
        code, out = await run_once(client_ns, argv, env)
        if code != 0:
            return None
        state: dict[str, Any] = json.loads(out)
        return state

    try:
        coordinator = await start(COORDINATOR, places[COORDINATOR][0])
        assert coordinator.events("listening")[0]["signed"] is True  # the secret got through
        workers = await asyncio.gather(*(start(name, places[name][0]) for name in worker_names))
        worker_ids = {worker.events("listening")[0]["worker"] for worker in workers}
        for name, (namespace, _) in places.items():
            await healthy(name, namespace)

        async def sees_every_worker() -> dict[str, Any] | None:
            state = await view()
            if state is None or {w["id"] for w in state["workers"]} != worker_ids:
                return None
            return state

        state = await eventually(sees_every_worker, JOIN_TIMEOUT_S, "coordinator sees workers")
        worker_hosts = {w["address"].rpartition(":")[0] for w in state["workers"]}
        assert worker_hosts == {places[name][1] for name in worker_names}
        for worker in workers:  # they found `central-coordinator` through its name
            assert worker.events("listening")[0]["coordinator"].startswith(f"{COORDINATOR}:")
            assert not worker.events("coordinator_unresolved")

        # Recreate the coordinator at a new address, as `docker-compose up` recreating the
        # container does, and point the name at it.
        assert await coordinator.stop() == 0
        running.remove(coordinator)
        places[COORDINATOR] = network.attach("s-new")
        network.publish({name: address for name, (_, address) in places.items()})
        coordinator = await start(COORDINATOR, places[COORDINATOR][0])
        await healthy(COORDINATOR, places[COORDINATOR][0])
        state = await eventually(sees_every_worker, JOIN_TIMEOUT_S, "workers back")
        assert all(worker.running for worker in workers), "a worker restarted or died"
        assert {w["address"].rpartition(":")[0] for w in state["workers"]} == worker_hosts
    finally:
        await asyncio.gather(*(service.stop() for service in running))
