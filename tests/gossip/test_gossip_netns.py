"""Multi-host: four nodes in four Linux network namespaces, joined by a bridge.

Topology, all created here and deleted on the way out, whatever happens:

- a "switch" namespace holding a bridge (so the host's own firewall, bridge-netfilter
  settings and routes never apply: a fresh namespace has none);
- one namespace per node, linked to the bridge by a veth pair, addressed in the private
  test subnet 10.213.0.0/24 (which exists only inside these namespaces);
- a "client" namespace on the same bridge, from which the test asks the nodes what
  they see (`sllm.experiments.decentralized.watch`).

No traffic leaves the namespaces. The scenario: the nodes converge; node 2's link is set
down (it is cut off, alive); the three others declare it dead within the detection bound;
the link comes back up; node 2 rejoins (it refutes the verdict with a higher incarnation)
and all four views reconverge.

Needs root and iproute2 (``ip``); skipped with the reason otherwise. On Debian/Ubuntu:
``apt-get install -y iproute2``.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from sllm.core.membership import GossipConfig
from sllm.experiments.launcher import ServiceProcess, child_environment

NODES = 4
SUBNET = "10.213.0"
PORT = 7946
GOSSIP = GossipConfig(
    probe_interval_s=0.2, probe_timeout_s=0.1, gossip_interval_s=0.1, sync_interval_s=1.0
)
CUT = 2  # the node whose link goes down (not the seed)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=20)


def _unavailable() -> str | None:
    if sys.platform != "linux":
        return "network namespaces are Linux only"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    if shutil.which("ip") is None:
        return "no `ip` command (apt-get install -y iproute2)"
    probe = f"sllm-probe-{uuid.uuid4().hex[:6]}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


class Namespaces:
    """The switch, node and client namespaces of one test, and their links."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.switch = f"sllm-{tag}-sw"
        self.client = f"sllm-{tag}-cl"
        self.nodes = [f"sllm-{tag}-n{i}" for i in range(NODES)]
        self.created: list[str] = []

    def address(self, index: int) -> str:
        return f"{SUBNET}.{index + 1}"

    def create(self) -> None:
        self._add(self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        for port, (name, address) in enumerate(
            [
                *((ns, self.address(i)) for i, ns in enumerate(self.nodes)),
                (self.client, f"{SUBNET}.200"),
            ]
        ):
            self._add(name)
            _ip(
                "-n",
                self.switch,
                "link",
                "add",
                f"p{port}",
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                name,
            )
            _ip("-n", self.switch, "link", "set", f"p{port}", "master", "br0", "up")
            _ip("-n", name, "addr", "add", f"{address}/24", "dev", "eth0")
            _ip("-n", name, "link", "set", "eth0", "up")
            _ip("-n", name, "link", "set", "lo", "up")  # fmt: skip

    def _add(self, name: str) -> None:
        _ip("netns", "add", name)
        self.created.append(name)

    def link(self, index: int, up: bool) -> None:
        _ip("-n", self.nodes[index], "link", "set", "eth0", "up" if up else "down")

    def delete(self) -> None:
        for name in reversed(self.created):  # the veth pairs go with their namespaces
            _ip("netns", "del", name, check=False)
        self.created.clear()


@pytest.fixture
def namespaces() -> Iterator[Namespaces]:
    reason = _unavailable()
    if reason is not None:
        pytest.skip(reason)
    spaces = Namespaces()
    try:
        spaces.create()
        yield spaces
    finally:
        spaces.delete()


def node_args(name: str, address: str, seed: str) -> list[str]:
    return [
        "node",
        "--node-id",
        name,
        "--host",
        address,
        "--port",
        str(PORT),
        "--seed-nodes",
        f"{seed}:{PORT}",
        "--policy",
        "least-loaded",
        "--probe-interval",
        str(GOSSIP.probe_interval_s),
        "--probe-timeout",
        str(GOSSIP.probe_timeout_s),
        "--gossip-interval",
        str(GOSSIP.gossip_interval_s),
        "--sync-interval",
        str(GOSSIP.sync_interval_s),
    ]


async def watch(
    spaces: Namespaces, nodes: list[int], want: dict[str, str | None], timeout: float
) -> float | None:
    """From the client namespace: seconds until every node in `nodes` sees `want`."""
    targets = ",".join(f"{spaces.address(i)}:{PORT}" for i in nodes)
    code = (
        "import sys; from sllm.experiments.decentralized import watch; "
        "sys.exit(watch(sys.argv[1:]))"
    )
    process = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", spaces.client, sys.executable, "-c", code,
        targets, json.dumps(want), str(timeout),
        env=child_environment({"CLUSTER_SECRET": ""}),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout + 30)
    assert process.returncode in (0, 1), err.decode()
    result: float | None = json.loads(out.decode().strip().splitlines()[-1])
    return result


@pytest.mark.integration
async def test_a_node_cut_off_by_its_link_is_detected_and_rejoins(namespaces, live_env) -> None:
    live_env.update({"SEED_NODES": "", "BIND_HOST": ""})
    names = [f"node-{i}" for i in range(NODES)]
    services: list[ServiceProcess] = []
    try:
        for i, name in enumerate(names):
            services.append(
                await ServiceProcess.start(
                    name,
                    node_args(name, namespaces.address(i), namespaces.address(0)),
                    live_env,
                    command_prefix=["ip", "netns", "exec", namespaces.nodes[i]],
                )
            )
        everyone = list(range(NODES))
        joined = await watch(namespaces, everyone, dict.fromkeys(names, "alive"), 20.0)
        assert joined is not None, "the four namespaces never converged"

        namespaces.link(CUT, up=False)
        others = [i for i in everyone if i != CUT]
        bound = GOSSIP.detection_bound(NODES)
        detected = await watch(namespaces, others, {names[CUT]: None}, bound + 5.0)
        print(f"\ncut-off node detected by the other three in {detected}s (bound {bound:.2f}s)")
        assert detected is not None and detected <= bound + 1.0  # + one client poll cycle
        assert services[CUT].running  # it was cut off, not killed

        namespaces.link(CUT, up=True)
        rejoined = await watch(namespaces, everyone, dict.fromkeys(names, "alive"), 20.0)
        print(f"rejoined and reconverged in {rejoined}s")
        assert rejoined is not None
        assert services[CUT].events("suspicion_refuted"), "it refuted the verdict"
    finally:
        await asyncio.gather(*(service.kill() for service in services))
