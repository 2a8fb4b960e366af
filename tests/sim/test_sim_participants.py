"""Hosting sans-I/O participants on the simulator's kernel and network (`sllm.sim.participants`)."""

from __future__ import annotations

import pytest

from sllm.core.membership import Address, Send
from sllm.sim.kernel import Kernel
from sllm.sim.network import LinkModel
from sllm.sim.participants import Participants
from sllm.wire import Codec, Message, ScheduleRequest

HOST = "127.0.0.5"
LINK = LinkModel(latency_s=0.001, jitter_s=0.0)  # exactly 1 ms, no chance involved


class Scripted:
    """Ticks at the deadlines it is given; records what it receives; echoes if asked."""

    def __init__(self, deadlines: list[float], echo: bool = False) -> None:
        self.deadlines = sorted(deadlines)
        self.echo = echo
        self.ticks: list[float] = []
        self.received: list[tuple[float, Message, Address]] = []

    def handle(self, message: Message, sender: Address, now: float) -> list[Send]:
        self.received.append((now, message, sender))
        if isinstance(message, ScheduleRequest) and message.request_id == "sooner":
            self.deadlines = sorted([now + 1.0, *self.deadlines])
        return [Send(to=sender, message=message)] if self.echo else []

    def tick(self, now: float) -> list[Send]:
        self.ticks.append(now)
        self.deadlines = [at for at in self.deadlines if at > now]
        return []

    def next_deadline(self) -> float | None:
        return self.deadlines[0] if self.deadlines else None


def request(request_id: str) -> ScheduleRequest:
    return ScheduleRequest(
        request_id=request_id, model="llama-3.2-1b", priority=0, prompt_tokens=10, output_tokens=10
    )


def test_a_restarted_participant_gets_no_ticks_from_the_old_processes_timers() -> None:
    stage = Participants(seed=1, link=LINK)
    address = (HOST, 7946)
    old, new = Scripted([5.0]), Scripted([10.0])
    stage.add(address, old)
    stage.run_for(1.0)
    stage.crash(address)
    stage.add(address, new)
    stage.run_for(20.0)
    assert old.ticks == []
    assert new.ticks == [10.0]


def test_the_one_timer_moves_earlier_and_the_superseded_one_is_ignored() -> None:
    stage = Participants(seed=1, link=LINK)
    sender, target = Scripted([]), Scripted([10.0])
    stage.add((HOST, 1), sender)
    stage.add((HOST, 2), target)
    stage.kernel.run(1.0)
    stage.send((HOST, 1), [Send(to=(HOST, 2), message=request("sooner"))])  # arrives at 1.001
    stage.run_for(20.0)
    assert target.ticks == [pytest.approx(2.001), 10.0]  # once each, not twice at 10


def test_datagrams_go_to_the_host_and_port_and_replies_to_the_sender() -> None:
    stage = Participants(seed=1, link=LINK)
    client, server = Scripted([]), Scripted([], echo=True)
    stage.add((HOST, 5000), client)
    stage.add((HOST, 7000), server)
    stage.send((HOST, 5000), [Send(to=(HOST, 7946), message=request("old-port"))])
    stage.send((HOST, 5000), [Send(to=(HOST, 7000), message=request("new-port"))])
    stage.run_for(1.0)
    assert [(message, sender) for _, message, sender in server.received] == [
        (request("new-port"), (HOST, 5000))
    ]
    assert stage.network.unroutable == 1  # nothing listens on the old port
    assert [sender for _, _, sender in client.received] == [(HOST, 7000)]


def test_the_drop_hook_and_a_slow_sender() -> None:
    stage = Participants(seed=1, link=LINK)
    a, b = Scripted([]), Scripted([])
    stage.add((HOST, 1), a)
    stage.add((HOST, 2), b)
    stage.drop_hook = lambda source, to, message: getattr(message, "request_id", "") == "x"
    stage.slow[(HOST, 1)] = 0.5
    stage.send(
        (HOST, 1),
        [Send(to=(HOST, 2), message=request("x")), Send(to=(HOST, 2), message=request("y"))],
    )
    stage.run_for(2.0)
    assert stage.dropped_by_hook == 1
    [(arrived, message, _)] = b.received
    assert message == request("y")
    assert arrived == pytest.approx(0.501)


def test_byte_counts_are_exact_and_signed() -> None:
    stage = Participants(seed=1, link=LINK, signed=True)
    stage.add((HOST, 1), Scripted([]))
    stage.add((HOST, 2), Scripted([]))
    stage.send((HOST, 1), [Send(to=(HOST, 2), message=request(f"r{i}")) for i in range(50)])
    stage.run_for(1.0)
    exact = sum(len(Codec(b"k").encode(request(f"r{i}"), 0.0, 0)) for i in range(50))
    assert stage.bytes_sent() == {(HOST, 1): exact, (HOST, 2): 0}


def test_a_participant_stuck_in_the_past_stops_the_run() -> None:
    class Stuck(Scripted):
        def next_deadline(self) -> float | None:
            return 0.0

    stage = Participants(seed=1, link=LINK)
    stage.add((HOST, 1), Stuck([]))
    with pytest.raises(RuntimeError, match="no progress"):
        stage.run_for(1.0)


def test_run_until_true_returns_the_time_it_took_or_none() -> None:
    kernel = Kernel()
    fired: list[float] = []
    kernel.at(2.5, lambda _: fired.append(kernel.now), None)
    assert kernel.run_until_true(lambda: bool(fired), timeout=10.0, step=1.0) == 3.0
    assert kernel.run_until_true(lambda: False, timeout=2.0, step=0.5) is None
    assert kernel.now == 5.0
    with pytest.raises(ValueError, match="step"):
        kernel.run_until_true(lambda: True, timeout=1.0, step=0.0)
