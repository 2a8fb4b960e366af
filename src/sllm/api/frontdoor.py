"""Mounting the OpenAI front door on a coordinator's or a decentralized node's HTTP app.

The gateway places requests with the process's own scheduler (the coordinator's core, or a
node's local scheduler: same process, same event loop, no locks, no extra hop) and proxies
them with one pooled HTTP client (`WorkerClient`), closed when the listener stops; with
a cluster secret, the client signs every request for the workers (`sllm.api.credential`).
On a node, its own worker routes move under `WORKER_PREFIX`, and the gateway proxies there
on every node.
Before each placement the scheduler's view is expired with its notices logged, so that a
worker expired by a placement is announced as ``worker_lost`` like one expired by the
coordinator's timer (the service then tells the gateway, `Gateway.worker_lost`).
The OpenAPI document of the API is served at ``/openapi.json`` and shipped as
``docs/openapi.json`` (`sllm openapi` writes it; a test keeps them equal). It lists, for
each route, exactly the statuses the server can answer, each with OpenAI's error body
(`tests/serving/test_serving_openapi.py` sends requests built from it to check that).
Before placing a request, the gateway checks its parameters against the engine the
catalog names for its model (`sllm.api.params`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, FastAPI
from fastapi.openapi.utils import get_openapi

from sllm.api.credential import worker_http_key
from sllm.api.decisions import PendingDecisions
from sllm.api.gateway import CompletionLane, Gateway, GatewayConfig, NotReady, Place
from sllm.api.request_id import RequestIdMiddleware
from sllm.api.worker_client import WorkerClient
from sllm.catalog import DEFAULT_ENGINE, CatalogModel
from sllm.wire import ScheduleRequest, ScheduleResponse

if TYPE_CHECKING:
    from sllm.core.coordinator import Coordinator, Notice

API_TITLE = "sllm OpenAI-compatible API"
# A decentralized node's own worker routes, under its front door's /v1.
WORKER_PREFIX = "/worker"


def install_front_door(
    app: FastAPI,
    scheduler: Coordinator,
    log_notices: Callable[[list[Notice]], None],
    api_keys: frozenset[str],
    upstream_prefix: str = "",
    cluster_secret: bytes | None = None,
    not_ready: NotReady = lambda model: None,
    place: Place | None = None,
    held: PendingDecisions | None = None,
) -> Gateway:
    """Add the `/v1` routes and `/openapi.json` to `app`; return the gateway (close its
    `client` when the listener stops).

    With `cluster_secret`, requests to workers carry the credential it derives. `place`
    decides where a request runs; by default `scheduler.place`, at once (a node that
    probes passes its own, which waits for its candidates' replies), or, where the
    scheduler holds requests (`held`: the host delivers their decisions there), once a
    held one's decision comes.
    """
    client = WorkerClient(
        credential_key=worker_http_key(cluster_secret) if cluster_secret else None
    )

    def forget_worker(worker_id: str, why: str) -> None:
        log_notices(scheduler.forget(worker_id, time.monotonic(), why))

    async def place_at_once(request: ScheduleRequest) -> ScheduleResponse:
        now = time.monotonic()
        expired = scheduler.expire(now)  # `place` would drop them unannounced
        if expired:
            log_notices(list(expired))
        if held is None:
            return scheduler.place(request, now)

        async def first_answer(keyed: ScheduleRequest) -> ScheduleResponse:
            return scheduler.place(keyed, now)

        return await held.decide(request, first_answer)

    def engine_of(model: str) -> str:
        """The engine the catalog names for `model` (a simulator's catalog names none)."""
        entry = scheduler.catalog.get(model)
        return entry.engine if isinstance(entry, CatalogModel) else DEFAULT_ENGINE

    gateway = Gateway(
        place=place or place_at_once,
        forget_worker=forget_worker,
        model_names=lambda: scheduler.catalog.keys(),
        client=client,
        config=GatewayConfig(api_keys=api_keys, upstream_prefix=upstream_prefix),
        engine_of=engine_of,
        not_ready=not_ready,
    )
    app.add_middleware(CompletionLane, gateway=gateway)
    app.add_middleware(RequestIdMiddleware)  # added last: outside the lane
    app.include_router(gateway.router)
    document = openapi_document(gateway.documented())
    app.add_api_route("/openapi.json", lambda: document, methods=["GET"])
    return gateway


async def _not_serving(request: ScheduleRequest) -> ScheduleResponse:
    raise RuntimeError("not serving")


def openapi_document(router: APIRouter) -> dict[str, Any]:
    """The document of `router`'s routes, stating only what the server does.

    FastAPI lists a 422 on every route with a body, but the front door answers a bad body
    with a 400 in OpenAI's shape (`sllm.api.errors`), so the 422 and its schemas go. The
    `/v1` routes take a bearer key (required only when the server sets ``API_KEYS``).
    """
    document = get_openapi(title=API_TITLE, version="1", routes=router.routes)
    for path, operations in document["paths"].items():
        for operation in operations.values():
            operation["responses"].pop(_UNSENT_STATUS, None)
            if path.startswith("/v1/"):
                operation["security"] = [{_KEY_SCHEME: []}]
    components = document.setdefault("components", {})
    schemas = components.get("schemas", {})
    for name in _UNSENT_SCHEMAS:
        schemas.pop(name, None)
    components["securitySchemes"] = {
        _KEY_SCHEME: {
            "type": "http",
            "scheme": "bearer",
            "description": "One of the server's API_KEYS; any key, or none, when it sets none.",
        }
    }
    return document


# FastAPI's validation error, never sent: the error handlers answer 400 instead.
_UNSENT_STATUS = "422"
_UNSENT_SCHEMAS = ("HTTPValidationError", "ValidationError")
_KEY_SCHEME = "apiKey"


def shipped_openapi() -> dict[str, Any]:
    """The document `docs/openapi.json` must hold, built without a running server."""
    gateway = Gateway(
        place=_not_serving,
        forget_worker=lambda worker_id, why: None,
        model_names=lambda: (),
        client=WorkerClient(),
    )
    return openapi_document(gateway.documented())
