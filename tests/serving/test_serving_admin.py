"""The admin API (`sllm.api.admin`) on a live coordinator, and a worker that follows it.

A coordinator (registry in memory, ADMIN_KEY set, a cluster secret) and one worker that
follows the registry run in this event loop on 127.0.0.1 with ports 0. The worker starts
with the default simulated catalog; a model deployed through the API reaches it through the
registry alone. httpx sends the admin calls; the official `openai` client the completions.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
import openai
import pytest

from sllm.catalog import served_catalog
from sllm.core.cost import CostModel
from sllm.core.tiers import Tier
from sllm.core.worker import WorkerResources
from sllm.runtime.coordinator import CoordinatorServer
from sllm.runtime.worker import WorkerServer
from sllm.wire import Codec

CATALOG = served_catalog(4)
ADMIN_KEY = "admin-key-for-tests"
SECRET = b"cluster-secret-for-admin-tests"
REPORT_INTERVAL_S = 0.1
JOIN_TIMEOUT_S = 10.0


@contextlib.asynccontextmanager
async def _cluster(
    admin_key: str | None = ADMIN_KEY,
) -> AsyncIterator[tuple[CoordinatorServer, WorkerServer, httpx.AsyncClient]]:
    cost = CostModel()
    coordinator = CoordinatorServer(
        "127.0.0.1",
        0,
        Codec(secret=SECRET),
        "least-loaded",
        CATALOG,
        cost,
        30.0,
        http_port=0,
        admin_key=admin_key,
    )
    await coordinator.start()
    assert coordinator.http is not None
    base = f"http://127.0.0.1:{coordinator.http.port}"
    worker = WorkerServer(
        "w1",
        "127.0.0.1",
        0,
        coordinator.address,
        Codec(secret=SECRET),
        CATALOG,
        cost,
        WorkerResources(),
        REPORT_INTERVAL_S,
        prestage=Tier.HOST,
        http_port=0,
        registry_url=base,
    )
    await worker.start()
    headers = {"authorization": f"Bearer {ADMIN_KEY}"}
    try:
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as http:
            deadline = asyncio.get_running_loop().time() + JOIN_TIMEOUT_S
            while not coordinator.core.view.entries():
                assert asyncio.get_running_loop().time() < deadline, "the worker never joined"
                await asyncio.sleep(0.02)
            yield coordinator, worker, http
    finally:
        await worker.stop()
        await coordinator.stop()


def _openai(http: httpx.AsyncClient) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=str(http.base_url).rstrip("/") + "/v1", api_key="unused", max_retries=0
    )


async def _eventually(check, what: str, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.02)


async def test_without_an_admin_key_the_routes_say_the_api_is_disabled() -> None:
    async with _cluster(admin_key=None) as (_, _, http):
        answer = await http.get("/admin/v1/models")
        assert answer.status_code == 403
        assert "ADMIN_KEY" in answer.json()["error"]["message"]


async def test_a_wrong_admin_key_is_refused_and_api_keys_are_not_admin_keys() -> None:
    async with _cluster() as (_, _, http):
        answer = await http.get("/admin/v1/models", headers={"authorization": "Bearer nope"})
        assert answer.status_code == 401
        assert answer.json()["error"]["code"] == "invalid_admin_key"


async def test_a_deployed_sim_model_is_listed_and_served_by_a_worker_that_never_knew_it() -> None:
    async with _cluster() as (_, worker, http):
        assert "extra-sim" not in worker.catalog
        answer = await http.post(
            "/admin/v1/models", json={"name": "extra-sim", "size_bytes": 2_000_000_000}
        )
        assert answer.status_code == 201, answer.text
        assert answer.json()["status"] == "ready"
        client = _openai(http)
        listed = {model.id for model in (await client.models.list()).data}
        assert "extra-sim" in listed
        completion = await client.completions.create(
            model="extra-sim", prompt="hello", max_tokens=2
        )
        assert completion.usage.completion_tokens == 2
        assert "extra-sim" in worker.catalog
        entries = {e["name"]: e for e in (await http.get("/admin/v1/models")).json()["data"]}
        assert entries["extra-sim"]["status"] == "ready"
        # its own keep-alive reaches the worker's state machine through the registry
        answer = await http.patch("/admin/v1/models/extra-sim", json={"keep_alive_s": 0.2})
        assert answer.status_code == 200, answer.text

        async def unloaded() -> bool:
            return worker.state.tier_of("extra-sim") is not Tier.GPU

        await _eventually(unloaded, "the model left the GPU after its own 0.2 s keep-alive")


async def test_bad_deploys_get_openai_shaped_errors_and_change_nothing() -> None:
    async with _cluster() as (coordinator, _, http):
        before = coordinator.registry.version
        cases = [
            ({"name": "bad name!", "size_bytes": 10}, 400, "name"),
            ({"name": "llama-3.2-1b", "size_bytes": 10}, 409, "already deployed"),
            ({"name": "x", "engine": "warp", "size_bytes": 10}, 400, "warp"),
            ({"name": "x", "engine": "transformers", "source": "/no/such/dir"}, 400, "exist"),
            ({"name": "x", "size_bytes": 10, "colour": "red"}, 400, "colour"),
        ]
        for body, status, words in cases:
            answer = await http.post("/admin/v1/models", json=body)
            assert answer.status_code == status, (body, answer.text)
            error = answer.json()["error"]
            assert words in error["message"], (body, error)
            assert set(error) == {"message", "type", "param", "code"}
        assert coordinator.registry.version == before


async def test_a_model_whose_source_fails_is_listed_failed_and_answered_503(tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    async with _cluster() as (_, _, http):
        body = {"name": "broken", "engine": "transformers", "source": str(tmp_path / "empty")}
        assert (await http.post("/admin/v1/models", json=body)).status_code == 201

        async def failed() -> bool:
            entries = (await http.get("/admin/v1/models")).json()["data"]
            return any(e["name"] == "broken" and e["status"] == "failed" for e in entries)

        await _eventually(failed, "the empty source failed")
        with pytest.raises(openai.APIStatusError) as refused:
            await _openai(http).completions.create(model="broken", prompt="hi", max_tokens=1)
        assert refused.value.status_code == 503
        assert refused.value.body["code"] == "model_failed"
        assert "holds no files" in refused.value.message
        assert "retry-after" not in refused.value.response.headers  # retrying will not help


async def test_a_delete_waits_for_running_requests_only_when_asked_to_drain() -> None:
    async with _cluster() as (coordinator, worker, http):
        model = "llama-3.2-1b"
        client = _openai(http)
        stream = await client.completions.create(
            model=model, prompt="hi", max_tokens=400, stream=True
        )
        chunks = stream.__aiter__()
        await chunks.__anext__()  # running now

        answer = await http.delete(f"/admin/v1/models/{model}")
        assert answer.status_code == 409
        assert answer.json()["error"]["code"] == "model_in_use"

        drained = asyncio.create_task(http.delete(f"/admin/v1/models/{model}?drain=true"))
        await _eventually(
            lambda: _async(model not in coordinator.registry.served), "new requests refused"
        )
        with pytest.raises(openai.APIStatusError) as refused:
            await client.completions.create(model=model, prompt="hi", max_tokens=1)
        assert refused.value.status_code == 503
        assert not drained.done()  # the running stream is still going
        async for _ in chunks:
            pass
        answer = await drained
        assert answer.status_code == 200, answer.text
        with pytest.raises(openai.NotFoundError):
            await client.completions.create(model=model, prompt="hi", max_tokens=1)
        await _eventually(lambda: _async(model not in worker.known_models), "worker freed it")


async def test_the_workers_registry_route_needs_the_cluster_credential() -> None:
    async with _cluster() as (_, _, http):
        answer = await http.get("/internal/v1/models")
        assert answer.status_code == 401
        assert answer.json()["error"]["code"] == "invalid_credential"


async def _async(value: bool) -> bool:
    return value


async def test_in_decentralized_mode_a_model_deployed_on_one_node_is_served_by_every_node() -> None:
    from sllm.core.node import NodeConfig
    from sllm.runtime.node import NodeServer

    def node(name: str, seeds=()) -> NodeServer:
        return NodeServer(
            name,
            "127.0.0.1",
            0,
            Codec(secret=SECRET),
            CATALOG,
            CostModel(),
            WorkerResources(),
            NodeConfig(report_interval_s=REPORT_INTERVAL_S),
            seeds=seeds,
            prestage=Tier.HOST,
            seed=1,
            http_port=0,
            admin_key=ADMIN_KEY,
        )

    first = node("n1")
    await first.start()
    second = node("n2", seeds=[first.address])
    await second.start()
    headers = {"authorization": f"Bearer {ADMIN_KEY}"}
    try:
        assert first.http is not None and second.http is not None
        first_url = f"http://127.0.0.1:{first.http.port}"
        second_url = f"http://127.0.0.1:{second.http.port}"
        async with httpx.AsyncClient(headers=headers, timeout=30) as http:
            answer = await http.post(
                first_url + "/admin/v1/models", json={"name": "everywhere", "size_bytes": 10**9}
            )
            assert answer.status_code == 201, answer.text

            async def listed_on_second() -> bool:
                models = (await http.get(second_url + "/v1/models")).json()["data"]
                return any(model["id"] == "everywhere" for model in models)

            await _eventually(listed_on_second, "the second node learned the model by gossip")
            client = openai.AsyncOpenAI(
                base_url=second_url + "/v1", api_key="unused", max_retries=0
            )
            completion = await client.completions.create(
                model="everywhere", prompt="hi", max_tokens=2
            )
            assert completion.usage.completion_tokens == 2

            assert (
                await http.delete(second_url + "/admin/v1/models/everywhere")
            ).status_code == 200

            async def gone_from_first() -> bool:
                models = (await http.get(first_url + "/v1/models")).json()["data"]
                return all(model["id"] != "everywhere" for model in models)

            await _eventually(gone_from_first, "the delete reached the first node")
    finally:
        await second.stop()
        await first.stop()


async def test_a_worker_reads_the_registry_once_per_version() -> None:
    from sllm.api.credential import worker_http_key
    from sllm.engines.registry import REGISTERED
    from sllm.runtime.registry_sync import RegistryFollower

    async with _cluster() as (_, _, http):
        applied: list[set[str]] = []
        follower = RegistryFollower(
            url=str(http.base_url).rstrip("/"),
            credential_key=worker_http_key(SECRET),
            engines=REGISTERED,
            apply=lambda models: applied.append(set(models)),
            interval_s=60.0,
        )
        assert await follower.refresh()
        assert not await follower.refresh()  # 304: nothing new
        assert await http.post("/admin/v1/models", json={"name": "v2", "size_bytes": 10**9})
        assert await follower.refresh()
        assert applied[-1] - applied[0] == {"v2"}


async def test_an_unreachable_hub_fails_the_model_instead_of_leaving_it_downloading(
    monkeypatch,
) -> None:
    import socket

    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    async with _cluster() as (_, _, http):
        body = {"name": "offline", "engine": "transformers", "source": "hf://acme/offline"}
        assert (await http.post("/admin/v1/models", json=body)).status_code == 201

        async def failed() -> bool:
            entries = (await http.get("/admin/v1/models")).json()["data"]
            return any(e["name"] == "offline" and e["status"] == "failed" for e in entries)

        await _eventually(failed, "the model failed", timeout=60.0)
