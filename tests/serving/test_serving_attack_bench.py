"""`sllm bench fuzz` and `sllm bench chaos` run end to end on a small scale, and judge.

The fuzzer's own safety is checked too: nothing it sends that a target would accept names
a host outside loopback (the target would send there).
"""

from __future__ import annotations

import dataclasses
import random

import pytest

from sllm.bench import chaos, fuzz
from sllm.wire import Codec, DecodeError, GossipPush, WorkerReport
from sllm.wire.messages import MemberUpdate

pytestmark = pytest.mark.integration


def test_a_host_that_is_not_loopback_is_caught_nested_too() -> None:
    rng = random.Random(1)
    report: WorkerReport = fuzz._instance(rng, WorkerReport)
    member: MemberUpdate = fuzz._instance(rng, MemberUpdate)
    assert fuzz.stays_on_loopback(report)
    assert fuzz.stays_on_loopback(dataclasses.replace(report, host=""))
    assert not fuzz.stays_on_loopback(dataclasses.replace(report, host="0.0.0.0"))
    away = dataclasses.replace(member, host="attacker.invalid")  # a name could be anywhere
    assert not fuzz.stays_on_loopback(GossipPush(source="n", members=(away,), reports=()))


@pytest.mark.parametrize("signed", [True, False])
def test_every_datagram_a_target_would_accept_stays_on_loopback(signed: bool) -> None:
    fuzzer = fuzz.Fuzzer(random.Random(7), signed)
    target = Codec(fuzz.SECRET.encode() if signed else None)
    accepted = 0
    for datagram in fuzzer.batch(3_000):
        try:
            message = target.decode(datagram, fuzz.time.time())
        except DecodeError:
            continue
        accepted += 1
        assert fuzz.stays_on_loopback(message), message
    assert accepted > 0  # some damaged ones are still valid: the check had work to do
    kinds = {*fuzz.KINDS_SIGNED, "replay_source"} if signed else set(fuzz.KINDS_UNSIGNED)
    assert set(fuzzer.made) == kinds


def test_the_fuzz_benchmark_finds_a_signed_coordinator_unharmed(tmp_path: object) -> None:
    outcome = fuzz.fuzz_target("coordinator", True, 1.0, 3, tmp_path)  # type: ignore[arg-type]
    assert outcome.passed, outcome
    assert outcome.sent > 1_000
    # Each must-refuse kind reached the target and was refused for its own reason.
    for reason in ("bad_signature", "replayed", "stale", "unsigned"):
        assert outcome.rejected.get(reason, 0) > 0, outcome.rejected
    assert outcome.forged_in_view == 0


def test_the_chaos_benchmark_kills_workers_and_loses_no_request() -> None:
    outcome = chaos.run(seconds=8.0, kill_every=1.5, seed=1, say=lambda line: None)
    assert outcome.kills >= 2
    assert outcome.outcomes.get("completed", 0) > 50
    assert outcome.passed, outcome.outcomes
