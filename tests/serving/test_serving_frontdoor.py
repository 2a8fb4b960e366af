"""The front door's contract: keys, errors in OpenAI's shape, request ids, the OpenAPI document.

Against the session's live sim cluster, whose coordinator has API_KEYS set. Raw `httpx`
requests check status codes, bodies and headers exactly; the `openai` client checks that
it raises the error class a real client expects.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import openai
import pytest

from sllm.api.body import MAX_BODY_BYTES
from sllm.api.frontdoor import shipped_openapi

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SIM_MODEL = "llama-3.2-1b"
API_KEY = "serving-test-key-1"  # the `sim_cluster` fixture's key
AUTH = {"Authorization": f"Bearer {API_KEY}"}
CHAT = {"model": SIM_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


@pytest.fixture
def http(sim_cluster) -> httpx.Client:
    with httpx.Client(base_url=sim_cluster.base_url, timeout=30) as client:
        yield client


def _error(response: httpx.Response, status: int, kind: str) -> dict:
    """`response` is OpenAI's error JSON with `status`; returns its ``error`` object."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == kind
    assert error["message"]
    return error


# -- authentication ------------------------------------------------------------------------


def test_no_key_is_401_and_a_key_is_200(http) -> None:
    _error(http.post("/v1/chat/completions", json=CHAT), 401, "authentication_error")
    _error(http.get("/v1/models"), 401, "authentication_error")
    wrong = {"Authorization": "Bearer serving-test-key-2"}
    _error(http.post("/v1/chat/completions", json=CHAT, headers=wrong), 401, "authentication_error")
    basic = {"Authorization": f"Basic {API_KEY}"}
    _error(http.post("/v1/chat/completions", json=CHAT, headers=basic), 401, "authentication_error")

    ok = http.post("/v1/chat/completions", json=CHAT, headers=AUTH)
    assert ok.status_code == 200, ok.text
    assert ok.json()["usage"]["completion_tokens"] == 2
    assert http.get("/v1/models", headers=AUTH).status_code == 200


def test_the_openai_client_raises_authentication_error(sim_cluster) -> None:
    client = openai.OpenAI(base_url=sim_cluster.api_url, api_key="not-the-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as raised:
        client.chat.completions.create(**CHAT)
    assert raised.value.status_code == 401


def test_health_and_metrics_need_no_key(http) -> None:
    assert http.get("/healthz").status_code == 200
    assert http.get("/readyz").json()["status"] == "ready"
    assert "sllm_" in http.get("/metrics").text


# -- bad requests --------------------------------------------------------------------------


def test_unknown_model_is_404(http, sim_cluster) -> None:
    body = {**CHAT, "model": "no-such-model"}
    response = http.post("/v1/chat/completions", json=body, headers=AUTH)
    error = _error(response, 404, "not_found_error")
    assert error["code"] == "model_not_found"
    assert error["param"] == "model"

    client = openai.OpenAI(base_url=sim_cluster.api_url, api_key=API_KEY, max_retries=0)
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="no-such-model", prompt="x")


def test_invalid_json_is_400(http) -> None:
    response = http.post(
        "/v1/chat/completions",
        content=b'{"model": "llama-3.2-1b", "messages": [',
        headers={**AUTH, "content-type": "application/json"},
    )
    error = _error(response, 400, "invalid_request_error")
    assert "JSON" in error["message"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"temperature": 5}, "temperature"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"top_p": 0}, "top_p"),
        ({"n": 2}, "n"),
        ({"messages": []}, "messages"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ],
)
def test_a_bad_parameter_is_400_naming_the_field(http, change, field) -> None:
    response = http.post("/v1/chat/completions", json={**CHAT, **change}, headers=AUTH)
    error = _error(response, 400, "invalid_request_error")
    assert error["param"] == field, error


def test_a_missing_field_is_400_naming_it(http) -> None:
    response = http.post("/v1/completions", json={"model": SIM_MODEL}, headers=AUTH)
    assert _error(response, 400, "invalid_request_error")["param"] == "prompt"


def test_a_body_that_is_not_an_object_is_400(http) -> None:
    response = http.post("/v1/completions", json=["not", "an", "object"], headers=AUTH)
    _error(response, 400, "invalid_request_error")


def test_a_body_over_the_limit_is_413_before_it_is_parsed(http) -> None:
    oversized = b"{" + b" " * MAX_BODY_BYTES + b"}"
    response = http.post("/v1/completions", content=oversized, headers=AUTH)
    error = _error(response, 413, "invalid_request_error")
    assert error["code"] == "request_too_large" and "bytes" in error["message"]


def test_a_completion_route_takes_only_post(http) -> None:
    _error(http.get("/v1/chat/completions", headers=AUTH), 405, "invalid_request_error")


def test_the_openai_client_raises_bad_request_error(sim_cluster) -> None:
    client = openai.OpenAI(base_url=sim_cluster.api_url, api_key=API_KEY, max_retries=0)
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(**{**CHAT, "temperature": 5})
    assert raised.value.status_code == 400
    assert "temperature" in json.dumps(raised.value.body)


# -- request ids ---------------------------------------------------------------------------


def test_every_response_carries_a_request_id(http) -> None:
    responses = [
        http.post("/v1/chat/completions", json=CHAT, headers=AUTH),
        http.post("/v1/chat/completions", json={**CHAT, "stream": True}, headers=AUTH),
        http.post("/v1/chat/completions", json=CHAT),  # 401
        http.post("/v1/chat/completions", content=b"{", headers=AUTH),  # 400
        http.post("/v1/chat/completions", json={**CHAT, "model": "nope"}, headers=AUTH),  # 404
        http.get("/v1/models", headers=AUTH),
        http.get("/healthz"),
        http.get("/metrics"),
        http.get("/openapi.json"),
        http.get("/no/such/path"),
    ]
    ids = [response.headers.get("x-request-id") for response in responses]
    assert all(ids), ids
    assert len(set(ids)) == len(ids)  # a fresh one each time


def test_the_request_id_is_in_the_coordinators_logs(http, sim_cluster) -> None:
    response = http.post("/v1/chat/completions", json=CHAT, headers=AUTH)
    request_id = response.headers["x-request-id"]
    assert response.json()["id"] == request_id
    routed = sim_cluster.logged_now("request_routed", request_id)
    assert len(routed) == 1
    assert routed[0]["worker"] in {"w1", "w2"}
    finished = sim_cluster.logged_now("request_finished", request_id)
    assert [event["status"] for event in finished] == [200]


def test_a_clients_request_id_is_kept_and_a_bad_one_replaced(http, sim_cluster) -> None:
    mine = "client-chosen.id:42"
    response = http.post(
        "/v1/chat/completions",
        json={**CHAT, "stream": True},
        headers={**AUTH, "x-request-id": mine},
    )
    assert response.headers["x-request-id"] == mine
    assert f'"id":"{mine}"' in response.text
    assert sim_cluster.logged_now("request_finished", mine)[0]["status"] == 200

    rejected = http.post("/v1/chat/completions", headers={**AUTH, "x-request-id": "x" * 200})
    assert rejected.status_code == 400
    assert rejected.headers["x-request-id"].startswith("req-")


def test_concurrent_requests_with_one_client_id_are_all_served(sim_cluster) -> None:
    """Each attempt reaches its worker under an id of its own: a client's id may repeat."""
    shared = "client-repeats-this-id"
    # Long enough (about half a second of decoding) that the six overlap on each worker.
    body = {**CHAT, "max_tokens": 40}

    async def send_all() -> list[httpx.Response]:
        headers = {**AUTH, "x-request-id": shared}
        async with httpx.AsyncClient(base_url=sim_cluster.base_url, timeout=30) as client:
            sends = [client.post("/v1/chat/completions", json=body, headers=headers)]
            sends += [
                client.post("/v1/chat/completions", json={**body, "stream": True}, headers=headers)
                for _ in range(5)
            ]
            return await asyncio.gather(*sends)

    responses = asyncio.run(send_all())
    assert [response.status_code for response in responses] == [200] * 6, [
        response.text for response in responses
    ]
    assert all(response.headers["x-request-id"] == shared for response in responses)
    assert responses[0].json()["id"] == shared
    assert all(f'"id":"{shared}"' in response.text for response in responses[1:])
    routed = sim_cluster.logged_now("request_routed", shared, count=6)
    upstream_ids = {event["upstream_id"] for event in routed}
    assert len(upstream_ids) == 6 and shared not in upstream_ids


# -- the OpenAPI document ------------------------------------------------------------------


def test_the_shipped_openapi_document_is_current() -> None:
    shipped = json.loads((ROOT / "docs" / "openapi.json").read_text(encoding="utf-8"))
    assert shipped == shipped_openapi(), "regenerate: python -m sllm openapi > docs/openapi.json"


def test_the_coordinator_serves_the_openapi_document(http) -> None:
    served = http.get("/openapi.json")
    assert served.status_code == 200
    document = served.json()
    assert document == shipped_openapi()
    assert {"/v1/chat/completions", "/v1/completions", "/v1/models"} <= set(document["paths"])
