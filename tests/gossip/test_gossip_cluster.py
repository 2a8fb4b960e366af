"""Integration: 20 real node processes on 127.0.0.1, gossiping, placing and failing.

One scenario, in order, on one cluster (starting 20 interpreters is the slow part):
join through one seed and converge; place a request from a random node and run it where
it was placed; SIGKILL a node and time how long until every live node has marked it dead,
against the stated bound (`GossipConfig.detection_bound`); SIGTERM another and check that
every live node logs its announced leave and none declares it dead (the time the leave
took is printed beside the shortest suspicion timeout, not asserted: 18 nodes polled on a
loaded machine can take longer than the protocol did); `sllm status --node` prints the
gossip section. Intervals are short (T = 0.2 s) so it finishes in ~20 s.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys

import pytest

from sllm.core.membership import GossipConfig
from sllm.experiments.decentralized import wait_for_views
from sllm.experiments.launcher import ServiceProcess, child_environment
from sllm.runtime.client import get_members
from sllm.runtime.udp import Address, Endpoint
from sllm.wire import Codec, InferenceRequest, InferenceResult, ScheduleRequest, ScheduleResponse

NODES = 20
PROBE_INTERVAL_S = 0.2
GOSSIP = GossipConfig(
    probe_interval_s=PROBE_INTERVAL_S,
    probe_timeout_s=0.1,
    gossip_interval_s=0.1,
    sync_interval_s=2.0,
)
MODEL = "llama-3.2-1b"


def node_args(name: str, seeds: list[Address]) -> list[str]:
    return [
        "node",
        "--node-id",
        name,
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--seed-nodes",
        ",".join(f"{h}:{p}" for h, p in seeds),
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
        "--prestage",
        "host",
    ]


async def wait_until(
    endpoint: Endpoint,
    nodes: dict[str, Address],
    want: dict[str, str | None],
    timeout: float,
) -> float:
    """Seconds until every node sees each member of `want` in that state (None: gone)."""
    took = await wait_for_views(endpoint, list(nodes.values()), want, timeout, poll_s=0.1)
    if took is None:
        pytest.fail(f"not converged to {want} within {timeout} s")
    return took


def not_logging(services: list[ServiceProcess], event: str, member: str) -> list[str]:
    """The services that have not logged `event` about `member` (yet)."""
    return [
        service.name
        for service in services
        if not any(e.get("member") == member for e in service.events(event))
    ]


@pytest.mark.integration
async def test_twenty_node_processes_converge_place_detect_and_leave(live_env, eventually) -> None:
    live_env["SEED_NODES"] = ""
    services: dict[str, ServiceProcess] = {}
    endpoint = await Endpoint.bind(Codec(), "127.0.0.1", 0)
    try:
        seed = await ServiceProcess.start("node-0", node_args("node-0", []), live_env)
        services["node-0"] = seed
        seeds = [("127.0.0.1", seed.port)]
        names = [f"node-{i}" for i in range(1, NODES)]
        started = await asyncio.gather(
            *(ServiceProcess.start(name, node_args(name, seeds), live_env) for name in names)
        )
        services.update(zip(names, started, strict=True))
        addresses = {name: ("127.0.0.1", service.port) for name, service in services.items()}

        joined = await wait_until(endpoint, addresses, dict.fromkeys(addresses, "alive"), 20.0)
        print(f"\n{NODES} nodes converged {joined:.2f}s after the last one started")

        # Place from a random node, run where it says.
        rng = random.Random(1)
        scheduler = addresses[rng.choice(list(addresses))]
        decision = await endpoint.request(
            ScheduleRequest(
                request_id="it-1", model=MODEL, priority=0, prompt_tokens=64, output_tokens=8
            ),
            scheduler,
            ScheduleResponse,
            2.0,
        )
        assert decision.action in ("serve", "cold_start"), decision
        result = await endpoint.request(
            InferenceRequest(request_id="it-1", model=MODEL, prompt_tokens=64, output_tokens=8),
            (decision.host, decision.port),
            InferenceResult,
            10.0,
        )
        assert result.ok and result.worker_id == decision.worker_id

        # A crash, with no goodbye: every live node declares it dead within the bound.
        victim = "node-7"
        await services[victim].kill()
        live = {name: address for name, address in addresses.items() if name != victim}
        bound = GOSSIP.detection_bound(NODES)
        detected = await wait_until(endpoint, live, {victim: None}, bound + 5.0)
        print(
            f"crash detected by all {len(live)} live nodes in {detected:.2f}s (bound {bound:.2f}s)"
        )
        assert detected <= bound

        # A graceful stop: every node learns the announced leave, none suspects the leaver.
        leaver = "node-3"
        await services[leaver].stop()
        live.pop(leaver)
        left = await wait_until(endpoint, live, {leaver: None}, 5.0)
        low, _ = GOSSIP.suspicion_timeouts(NODES)
        print(
            f"leave known to all {len(live)} live nodes in {left:.2f}s "
            f"(the shortest suspicion timeout is {low:.2f}s)"
        )
        watching = [services[name] for name in live]
        await eventually(
            lambda: not not_logging(watching, "member_left", leaver),
            5.0,
            "every live node logged member_left for the leaver",
        )
        assert not any(
            event.get("member") == leaver
            for service in watching
            for event in service.events("member_dead")
        ), "a node declared the leaver dead instead of hearing its leave"

        # Nobody alive was declared dead along the way.
        await wait_until(endpoint, live, dict.fromkeys(live, "alive"), 10.0)

        # `sllm status --node` shows the gossip section, once node-0 holds every live
        # member's report (a report dropped with a false death comes back with the refutation,
        # and anti-entropy repairs the rest within a sync interval).
        host, port = addresses["node-0"]

        async def node_0_holds_every_live_report() -> bool:
            _, members = await get_members(endpoint, (host, port))
            return set(live) <= {m.node_id for m in members if m.reported}

        await eventually(
            node_0_holds_every_live_report,
            2 * GOSSIP.sync_interval_s + 2.0,
            "node-0 holds a report from every live member",
        )
        status = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "sllm", "status", "--node", f"{host}:{port}", "--json"],
            capture_output=True,
            text=True,
            timeout=20,
            env=child_environment({"CLUSTER_SECRET": ""}),
        )
        assert status.returncode == 0, status.stderr
        state = json.loads(status.stdout)
        assert state["active_workers"] == NODES - 2
        gossip = state["gossip"]
        assert gossip["members"]["alive"] == NODES - 2
        assert gossip["members"]["dead"] + gossip["members"]["left"] == 2
        assert gossip["rejected_datagrams"] == 0
    finally:
        endpoint.close()
        await asyncio.gather(*(service.kill() for service in services.values()))
