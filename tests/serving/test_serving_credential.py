"""Only the front door reaches a model: workers check its credential, or bind narrowly.

- The credential itself (`sllm.api.credential`): pure checks, with a fixed `now`.
- A worker and a decentralized node with a cluster secret, on 127.0.0.1 port 0 in the
  test's own event loop, with a coordinator whose front door proxies to the worker: a
  direct request that is unsigned, forged, stale, signed for another body or with the
  datagram key is 401 in OpenAI's error shape; the front door's requests are served;
  health, readiness and metrics stay open.
- Without a secret: the addresses a worker's or a node's listener binds (`http_hosts`),
  and a worker bound to every interface that listens for HTTP only where its coordinator
  reaches it, with one ``cluster_unauthenticated`` warning.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import openai
import pytest

from sllm.api import credential
from sllm.api.credential import CredentialRefused, check, sign, worker_http_key
from sllm.catalog import served_catalog
from sllm.core.cost import CostModel
from sllm.core.node import NodeConfig
from sllm.core.tiers import Tier
from sllm.core.worker import WorkerResources
from sllm.runtime.coordinator import CoordinatorServer
from sllm.runtime.node import NodeServer
from sllm.runtime.udp import Endpoint
from sllm.runtime.worker import LOOPBACK, WorkerServer, http_hosts, local_address_towards
from sllm.wire import Codec

SECRET = b"serving-credential-test-secret"
KEY = worker_http_key(SECRET)
MODEL = "llama-3.2-1b"
PATH = "/v1/completions"
BODY = json.dumps({"model": MODEL, "prompt": "hi", "max_tokens": 2}).encode()
NOW = 1_800_000_000.0
JOIN_TIMEOUT_S = 10.0


# -- the credential ------------------------------------------------------------------------


def _sign(key: bytes = KEY) -> str:
    return sign(key=key, method="POST", path=PATH, request_id="req-1", body=BODY, now=NOW)


def _refusal(
    given: str,
    *,
    now: float = NOW,
    method: str = "POST",
    path: str = PATH,
    request_id: str = "req-1",
    body: bytes = BODY,
) -> str:
    """Why `check` refuses `given` for this request (the one `_sign` signs, unless changed)."""
    with pytest.raises(CredentialRefused) as refused:
        check(
            key=KEY,
            credential=given,
            method=method,
            path=path,
            request_id=request_id,
            body=body,
            now=now,
        )
    return refused.value.reason


def test_a_credential_passes_for_its_request_only() -> None:
    given = _sign()
    check(
        key=KEY,
        credential=given,
        method="POST",
        path=PATH,
        request_id="req-1",
        body=BODY,
        now=NOW + credential.MAX_SKEW_S - 1,
    )
    assert _refusal(given, body=BODY + b" ") == "bad_signature"
    assert _refusal(given, path="/v1/chat/completions") == "bad_signature"
    assert _refusal(given, request_id="req-2") == "bad_signature"
    assert _refusal(given, method="GET") == "bad_signature"


def test_stale_forged_and_malformed_credentials_are_refused() -> None:
    given = _sign()
    assert _refusal(given, now=NOW + credential.MAX_SKEW_S + 1) == "stale"
    assert _refusal(given, now=NOW - credential.MAX_SKEW_S - 1) == "stale"
    version, timestamp, mac = given.split(" ")
    assert _refusal(f"{version} {timestamp} {'0' * len(mac)}") == "bad_signature"
    assert _refusal(f"{version} {NOW + 1:.3f} {mac}") == "bad_signature"  # moved in time
    assert _refusal("") == "missing"
    for malformed in ("v1", f"v2 {timestamp} {mac}", f"v1 nan {mac}", f"v1 soon {mac}"):
        assert _refusal(malformed) == "malformed", malformed


def test_the_http_key_is_not_the_datagram_key() -> None:
    assert KEY != SECRET
    assert worker_http_key(b"another secret") != KEY
    assert _refusal(_sign(key=SECRET)) == "bad_signature"
    with pytest.raises(ValueError):
        worker_http_key(b"")


# -- a signed cluster in this event loop ---------------------------------------------------


@dataclass
class SignedCluster:
    coordinator: CoordinatorServer
    worker: WorkerServer

    @property
    def front_door(self) -> str:
        assert self.coordinator.http is not None
        return f"http://127.0.0.1:{self.coordinator.http.port}"

    @property
    def worker_url(self) -> str:
        assert self.worker.http is not None
        return f"http://127.0.0.1:{self.worker.http.port}"


@contextlib.asynccontextmanager
async def _signed_cluster(eventually) -> AsyncIterator[SignedCluster]:
    cost = CostModel()
    catalog = served_catalog()
    coordinator = CoordinatorServer(
        "127.0.0.1", 0, Codec(SECRET), "least-loaded", catalog, cost, 2.0, seed=1, http_port=0
    )
    await coordinator.start()
    worker = WorkerServer(
        "w1",
        "127.0.0.1",
        0,
        coordinator.address,
        Codec(SECRET),
        catalog,
        cost,
        WorkerResources(),
        0.1,
        prestage=Tier.HOST,
        http_port=0,
    )
    try:
        await worker.start()
        await eventually(lambda: coordinator.core.view.entries(), JOIN_TIMEOUT_S, "w1 joined")
        yield SignedCluster(coordinator, worker)
    finally:
        await worker.stop()
        await coordinator.stop()


def _unauthorized(response: httpx.Response) -> str:
    """`response` is a 401 in OpenAI's error shape; returns its message."""
    assert response.status_code == 401, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "authentication_error"
    assert error["code"] == "invalid_credential"
    return str(error["message"])


def _headers(request_id: str, given: str | None) -> dict[str, str]:
    headers = {"content-type": "application/json", "x-request-id": request_id}
    if given is not None:
        headers[credential.HEADER] = given
    return headers


async def _refused_and_signed(http: httpx.AsyncClient, url: str, path: str) -> None:
    """Every bad credential on `url` + `path` is 401; a good one is served."""

    def signed(request_id: str, body: bytes = BODY, now: float | None = None) -> str:
        when = time.time() if now is None else now
        return sign(key=KEY, method="POST", path=path, request_id=request_id, body=body, now=when)

    unsigned = await http.post(url + path, content=BODY, headers=_headers("req-a", None))
    assert "missing" in _unauthorized(unsigned)
    assert unsigned.headers["x-request-id"] == "req-a"
    forged = f"{credential.VERSION} {time.time():.3f} {'ab' * 32}"
    response = await http.post(url + path, content=BODY, headers=_headers("req-b", forged))
    assert "bad_signature" in _unauthorized(response)
    stale = signed("req-c", now=time.time() - 2 * credential.MAX_SKEW_S)
    response = await http.post(url + path, content=BODY, headers=_headers("req-c", stale))
    assert "stale" in _unauthorized(response)
    other_body = signed("req-d", body=BODY.replace(b'"hi"', b'"ho"'))
    response = await http.post(url + path, content=BODY, headers=_headers("req-d", other_body))
    assert "bad_signature" in _unauthorized(response)
    other_id = signed("req-e")
    response = await http.post(url + path, content=BODY, headers=_headers("req-f", other_id))
    assert "bad_signature" in _unauthorized(response)
    datagram_key = sign(
        key=SECRET, method="POST", path=path, request_id="req-g", body=BODY, now=time.time()
    )
    response = await http.post(url + path, content=BODY, headers=_headers("req-g", datagram_key))
    assert "bad_signature" in _unauthorized(response)

    served = await http.post(url + path, content=BODY, headers=_headers("req-h", signed("req-h")))
    assert served.status_code == 200, served.text
    assert served.text.rstrip().endswith("data: [DONE]")


async def test_a_signed_worker_serves_only_the_front_doors_requests(eventually) -> None:
    async with _signed_cluster(eventually) as cluster, httpx.AsyncClient(timeout=10) as http:
        await _refused_and_signed(http, cluster.worker_url, PATH)
        models = await http.get(cluster.worker_url + "/v1/models")
        _unauthorized(models)
        for path in ("/healthz", "/readyz", "/metrics"):  # open to probes and scrapers
            assert (await http.get(cluster.worker_url + path)).status_code == 200, path

        client = openai.AsyncOpenAI(
            base_url=cluster.front_door + "/v1", api_key="unused", max_retries=0
        )
        completion = await client.completions.create(model=MODEL, prompt="hi", max_tokens=3)
        assert completion.usage is not None and completion.usage.completion_tokens == 3
        chat = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2, stream=True
        )
        chunks = [chunk async for chunk in chat]
        assert chunks and chunks[-1].choices[0].finish_reason == "length"


async def test_a_signed_nodes_worker_routes_serve_only_the_front_doors_requests(
    eventually,
) -> None:
    config = NodeConfig(policy="least-loaded", report_interval_s=0.1)
    node = NodeServer(
        "n1",
        "127.0.0.1",
        0,
        Codec(SECRET),
        served_catalog(),
        CostModel(),
        WorkerResources(),
        config,
        prestage=Tier.HOST,
        seed=1,
        http_port=0,
    )
    await node.start()
    try:
        assert node.http is not None
        url = f"http://127.0.0.1:{node.http.port}"
        async with httpx.AsyncClient(timeout=10) as http:
            await _refused_and_signed(http, url, "/worker" + PATH)

            async def served_by_the_front_door() -> bool:
                reply = await http.post(url + PATH, content=BODY, headers=_headers("req-i", None))
                assert reply.status_code in (200, 503), reply.text  # 503 until it knows itself
                return reply.status_code == 200

            await eventually(served_by_the_front_door, JOIN_TIMEOUT_S, "the front door serves")
            assert (await http.get(url + "/metrics")).status_code == 200
    finally:
        await node.stop()


# -- without a secret: where the listener binds -------------------------------------------


def test_http_binds_every_interface_only_with_a_secret() -> None:
    assert http_hosts("0.0.0.0", signed=True, reached_at="10.1.2.3") == ("0.0.0.0",)
    assert http_hosts("0.0.0.0", signed=False, reached_at="10.1.2.3") == ("10.1.2.3", LOOPBACK)
    assert http_hosts("::", signed=False, reached_at="10.1.2.3") == ("10.1.2.3", LOOPBACK)
    assert http_hosts("", signed=False, reached_at="10.1.2.3") == ("10.1.2.3", LOOPBACK)
    assert http_hosts("0.0.0.0", signed=False, reached_at=LOOPBACK) == (LOOPBACK,)
    # An address the operator chose is kept, signed or not.
    assert http_hosts("10.9.9.9", signed=False, reached_at="10.1.2.3") == ("10.9.9.9",)
    assert http_hosts("127.0.0.1", signed=True, reached_at="10.1.2.3") == ("127.0.0.1",)


def test_the_local_address_towards_a_loopback_peer_is_loopback() -> None:
    assert local_address_towards(("127.0.0.1", 9)) == "127.0.0.1"


async def test_an_unsigned_worker_binds_http_where_its_coordinator_reaches_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    coordinator = await Endpoint.bind(Codec(), "127.0.0.1", 0)  # only receives reports
    worker = WorkerServer(
        "w1",
        "0.0.0.0",
        0,
        coordinator.address,
        Codec(),
        served_catalog(),
        CostModel(),
        WorkerResources(),
        0.1,
        http_port=0,
    )
    caplog.set_level(logging.WARNING, logger="sllm.worker")
    try:
        await worker.start()
        assert worker.http is not None
        assert getattr(worker.http, "host", None) == "127.0.0.1"
        assert getattr(worker.http, "also_on", None) == []  # loopback already
    finally:
        await worker.stop()
        coordinator.close()
    warnings = [r for r in caplog.records if r.getMessage() == "cluster_unauthenticated"]
    assert len(warnings) == 1
    assert warnings[0].__dict__["fields"]["http_hosts"] == "127.0.0.1"


def test_a_worker_refusing_the_front_doors_credential_is_not_the_clients_401() -> None:
    """A worker's 401 means the cluster disagrees on its secret (or a clock is off): the
    front door tries elsewhere and, failing that, answers 503, never 401 for a good key."""
    from sllm.api.gateway import _refusal as refusal_of_worker
    from sllm.api.gateway import _UpstreamFailed

    body = b'{"error": {"message": "missing or invalid credential", "code": "invalid_credential"}}'
    assert isinstance(refusal_of_worker(401, body), _UpstreamFailed)
    assert not isinstance(refusal_of_worker(400, body), _UpstreamFailed)  # the request's fault
