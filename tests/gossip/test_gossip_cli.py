"""The decentralized mode's configuration and command line: SEED_NODES, `sllm node`,
`sllm status --node` rendering."""

from __future__ import annotations

import pytest

from sllm.cli import build_parser, main
from sllm.config import ConfigError, Settings
from sllm.runtime.client import render_gossip


def test_seed_nodes_parse_from_the_environment_and_flags() -> None:
    settings = Settings.from_env({"SEED_NODES": "node-0.sllm:7946, 10.0.0.2:7946,[::1]:9"})
    assert settings.seed_nodes == (("node-0.sllm", 7946), ("10.0.0.2", 7946), ("::1", 9))
    flagged = Settings.from_env({"SEED_NODES": "a:1"}, {"seed_nodes": "b:2"})
    assert flagged.seed_nodes == (("b", 2),)
    assert Settings.from_env({}).seed_nodes == ()
    assert Settings(seed_nodes=(("x", 5),)).seed_nodes == (("x", 5),)


@pytest.mark.parametrize("bad", ["node-0", "node-0:0", "node-0:http", ":7946", "a b:1"])
def test_bad_seed_nodes_are_reported_with_the_others(bad: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"SEED_NODES": bad, "WORKER_PORT": "-1"})
    problems = caught.value.problems
    assert any(p.startswith("SEED_NODES=") for p in problems)
    assert any(p.startswith("WORKER_PORT=") for p in problems)  # every bad value at once


def test_node_and_status_flags_parse() -> None:
    args = build_parser().parse_args(
        ["node", "--node-id", "n1", "--port", "0", "--seed-nodes", "a:1", "--probing", "2"]
    )
    assert args.run.__name__ == "run_node"
    assert (args.node_id, args.seed_nodes, args.probing) == ("n1", "a:1", 2)
    status = build_parser().parse_args(["status", "--node", "127.0.0.1:7001", "--json"])
    assert status.node == "127.0.0.1:7001"


def test_an_impossible_gossip_setting_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["node", "--port", "0", "--probe-interval", "0.1", "--probe-timeout", "0.5"])
    assert code == 2
    assert "probe_timeout_s must be shorter" in capsys.readouterr().err


def test_bad_seed_nodes_flag_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["node", "--port", "0", "--seed-nodes", "nowhere"])
    assert exited.value.code == 2
    assert "--seed-nodes" in capsys.readouterr().err


def test_the_gossip_table_shows_every_member() -> None:
    gossip = {
        "node_id": "n0",
        "incarnation": 2,
        "members": {"alive": 2, "suspect": 0, "dead": 1, "left": 0},
        "false_suspicions": 1,
        "refuted": 1,
        "local_health": 0,
        "bytes_sent_per_s": 1200.0,
        "bytes_received_per_s": 1100.0,
        "rejected_datagrams": 3,
        "member_list": [
            {"id": "n0", "address": "10.0.0.1:7946", "state": "alive", "incarnation": 2,
             "info_age_s": 0.0, "report_age_s": 0.2},
            {"id": "n1", "address": "10.0.0.2:7946", "state": "dead", "incarnation": 0,
             "info_age_s": 4.0, "report_age_s": None},
        ],
    }  # fmt: skip
    table = render_gossip(gossip)
    assert "alive 2 suspect 0 dead 1 left 0" in table
    assert "rejected datagrams 3" in table
    lines = table.splitlines()
    assert lines[-1].split()[:3] == ["n1", "10.0.0.2:7946", "dead"]
    assert lines[-1].rstrip().endswith("-")
