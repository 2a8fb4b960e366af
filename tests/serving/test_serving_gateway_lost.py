"""The gateway's requests in flight by worker: a worker declared lost ends their waits.

The gateway is driven straight through its ASGI entry (`Gateway.serve`) against fake
workers on 127.0.0.1 (asyncio servers on port 0) that read a request and then answer
nothing, one event, or a whole stream. No process is started, so these run in a blink;
`test_serving_frozen.py` does the same with real processes frozen by SIGSTOP.

Also here: a decentralized node tells its front door about ``member_dead`` only, not about
mere suspicion.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from sllm.api import sse
from sllm.api.gateway import READ_TIMEOUT_S, Gateway, InFlight
from sllm.api.worker_client import WorkerClient
from sllm.core.coordinator import Notice
from sllm.core.cost import CostModel
from sllm.core.node import NodeConfig
from sllm.core.worker import WorkerResources
from sllm.runtime.node import NodeServer
from sllm.wire import Codec, ScheduleRequest, ScheduleResponse

MODEL = "m"
# Every wait here ends within this, or the behaviour under test is missing.
DEADLINE_S = 5.0


class FakeWorker:
    """An HTTP worker on 127.0.0.1 that reads one request per connection, then answers as
    its `mode` says: ``silent`` (nothing), ``one_event`` (headers and one event, then
    nothing), ``whole`` (a whole stream ending with [DONE]) or ``failing`` (503, as a
    worker whose model failed to load)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.requests = 0
        self.closed_by_peer = 0  # connections the front door closed on us
        self.received = asyncio.Event()
        self.server: asyncio.Server | None = None
        self.port = 0  # once it listens; kept after it stops

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        await reader.readexactly(length)
        self.requests += 1
        self.received.set()
        if self.mode == "failing":
            error = b'{"error": {"message": "oom", "code": "load_failed"}}'
            writer.write(
                b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\n\r\n%s" % (len(error), error)
            )
            await writer.drain()
        elif self.mode != "silent":
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"transfer-encoding: chunked\r\n\r\n"
            )
            events = [sse.chunk("completion", "up", MODEL, "hello")]
            if self.mode == "whole":
                events += [
                    sse.chunk("completion", "up", MODEL, "", "stop"),
                    sse.usage_chunk("completion", "up", MODEL, sse.usage(1, 1)),
                ]
                events.append(sse.DONE)
            for event in events:
                writer.write(b"%x\r\n%s\r\n" % (len(event), event))
            if self.mode == "whole":
                writer.write(b"0\r\n\r\n")
            await writer.drain()
        if await reader.read() == b"":  # held until the front door lets go
            self.closed_by_peer += 1
        writer.close()


@asynccontextmanager
async def workers(*modes: str) -> AsyncIterator[list[FakeWorker]]:
    fakes = [FakeWorker(mode) for mode in modes]
    for fake in fakes:
        fake.server = await asyncio.start_server(fake.serve, "127.0.0.1", 0)
        fake.port = int(fake.server.sockets[0].getsockname()[1])
    try:
        yield fakes
    finally:
        for fake in fakes:
            assert fake.server is not None
            fake.server.close()


def placing_in_turn(fakes: list[FakeWorker]) -> Any:
    """A scheduler that places each try on the next fake worker, w0 first."""
    tries = iter(range(len(fakes)))

    async def place(request: ScheduleRequest) -> ScheduleResponse:
        index = next(tries)
        return ScheduleResponse(
            request_id=request.request_id,
            worker_id=f"w{index}",
            host="127.0.0.1",
            port=9,
            http_port=fakes[index].port,
            action="serve",
            estimated_wait_s=0.0,
            reason="",
        )

    return place


class Exchange:
    """One request to `Gateway.serve`, and what it sent back."""

    def __init__(self, gateway: Gateway, stream: bool) -> None:
        body = {"model": MODEL, "prompt": "hi", "max_tokens": 4, "stream": stream}
        self.body = json.dumps(body).encode()
        self.sent: list[dict[str, Any]] = []
        self.first_chunk = asyncio.Event()
        self._read = False
        scope = {
            "type": "http",
            "method": "POST",
            "path": "/v1/completions",
            "headers": [],
            "state": {"request_id": "lost-test"},
        }
        self.task = asyncio.ensure_future(gateway.serve(scope, self.receive, self.send))

    async def receive(self) -> dict[str, Any]:
        if not self._read:
            self._read = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        await asyncio.Event().wait()  # the client stays
        raise AssertionError("unreachable")

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)
        if message["type"] == "http.response.body" and message.get("more_body"):
            self.first_chunk.set()

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])

    @property
    def body_sent(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")


def gateway_for(
    fakes: list[FakeWorker], client: WorkerClient
) -> tuple[Gateway, list[tuple[str, str]]]:
    """A gateway placing on `fakes` in turn; the workers it forgot, and why."""
    forgotten: list[tuple[str, str]] = []
    gateway = Gateway(
        place=placing_in_turn(fakes),
        forget_worker=lambda worker_id, why: forgotten.append((worker_id, why)),
        model_names=lambda: (MODEL,),
        client=client,
    )
    return gateway, forgotten


async def test_a_request_waiting_on_a_lost_worker_is_placed_again_and_its_connection_closed(
    eventually,
) -> None:
    async with workers("silent", "whole") as fakes:
        client = WorkerClient()
        gateway, forgotten = gateway_for(fakes, client)
        exchange = Exchange(gateway, stream=False)
        await asyncio.wait_for(fakes[0].received.wait(), DEADLINE_S)
        assert gateway.in_flight.on("w0") == 1

        assert gateway.worker_lost("w1") == 0  # another worker: nothing to do
        assert gateway.worker_lost("w0") == 1
        await asyncio.wait_for(exchange.task, DEADLINE_S)

        assert exchange.status == 200
        assert json.loads(exchange.body_sent)["choices"][0]["text"] == "hello"
        assert fakes[1].requests == 1
        assert gateway.retries == {"worker_failed": 0, "worker_busy": 0, "worker_lost": 1}
        assert not any(gateway.failed.values())
        assert forgotten == []  # the scheduler dropped it already
        assert len(gateway.in_flight) == 0 and client.streams == 0
        await eventually(lambda: fakes[0].closed_by_peer == 1, DEADLINE_S, "w0's connection closed")
        await client.close()


async def test_a_worker_that_failed_is_forgotten_saying_how() -> None:
    async with workers("failing", "gone", "whole") as fakes:
        gone = fakes[1].server
        assert gone is not None
        gone.close()  # nothing listens on its port any more
        await gone.wait_closed()
        client = WorkerClient()
        gateway, forgotten = gateway_for(fakes, client)
        exchange = Exchange(gateway, stream=False)
        await asyncio.wait_for(exchange.task, DEADLINE_S)

        assert exchange.status == 200
        assert forgotten == [("w0", "answered 503"), ("w1", "unreachable")]
        assert gateway.retries["worker_failed"] == 2
        await client.close()


async def test_a_stream_from_a_lost_worker_ends_with_an_error_event_at_once() -> None:
    async with workers("one_event") as fakes:
        client = WorkerClient()
        gateway, _ = gateway_for(fakes, client)
        exchange = Exchange(gateway, stream=True)
        await asyncio.wait_for(exchange.first_chunk.wait(), DEADLINE_S)

        assert gateway.worker_lost("w0") == 1
        await asyncio.wait_for(exchange.task, DEADLINE_S)

        assert exchange.status == 200
        assert exchange.sent[-1]["more_body"] is False
        last = sse.parse(exchange.sent[-1]["body"])
        assert last is not None
        assert last["error"]["code"] == "worker_lost"
        assert "worker w0 was lost" in last["error"]["message"]
        assert gateway.failed["worker_lost"] == 1
        assert len(gateway.in_flight) == 0 and client.streams == 0
        await client.close()


async def test_a_folded_request_on_a_lost_worker_gets_a_502_worker_lost(eventually) -> None:
    async with workers("one_event") as fakes:
        client = WorkerClient()
        gateway, _ = gateway_for(fakes, client)
        exchange = Exchange(gateway, stream=False)

        def relaying() -> bool:
            """Past the first event: the attempt waits between events, not for the first."""
            attempts = gateway.in_flight._by_worker.get("w0", set())
            deadline = next(iter(attempts)).deadline if attempts else None
            if deadline is None:
                return False
            when = deadline.when()
            return when is not None and when - asyncio.get_running_loop().time() <= READ_TIMEOUT_S

        await eventually(relaying, DEADLINE_S, "the gateway folding w0's stream")
        assert gateway.worker_lost("w0") == 1
        await asyncio.wait_for(exchange.task, DEADLINE_S)

        assert exchange.status == 502
        error = json.loads(exchange.body_sent)["error"]
        assert error["code"] == "worker_lost"
        assert "worker w0 was lost" in error["message"]
        assert gateway.failed["worker_lost"] == 1
        assert len(gateway.in_flight) == 0 and client.streams == 0
        await client.close()


def test_in_flight_keeps_attempts_by_worker_and_forgets_empty_workers() -> None:
    in_flight = InFlight()
    first, second = in_flight.start("w0"), in_flight.start("w0")
    other = in_flight.start("w1")
    assert (in_flight.on("w0"), in_flight.on("w1"), len(in_flight)) == (2, 1, 3)
    in_flight.end(first)
    assert in_flight.lose("w0") == 1 and second.lost and not first.lost
    in_flight.end(second)  # ended after its worker was lost: nothing left to remove
    in_flight.end(other)
    assert len(in_flight) == 0 and in_flight._by_worker == {}


class RecordingFrontDoor:
    def __init__(self) -> None:
        self.lost: list[str] = []
        self.retries: dict[str, int] = {}
        self.failed: dict[str, int] = {}

    def worker_lost(self, worker_id: str) -> int:
        self.lost.append(worker_id)
        return 0


@pytest.mark.parametrize(
    ("event", "told"), [("member_dead", ["n1"]), ("member_suspect", []), ("member_left", [])]
)
def test_a_node_tells_its_front_door_of_dead_members_only(event: str, told: list[str]) -> None:
    node = NodeServer(
        "n0", "127.0.0.1", 0, Codec(), {}, CostModel(), WorkerResources(), NodeConfig()
    )
    front_door = RecordingFrontDoor()
    node.front_door = front_door
    node.log_notices([Notice(event=event, fields={"member": "n1"})])
    assert front_door.lost == told
