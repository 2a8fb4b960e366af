"""The admin API: deploy, update, delete and list models at runtime (`sllm.registry`).

Why a separate key: API_KEYS let teams use models; ADMIN_KEY lets an operator change which
models exist. Without ADMIN_KEY the routes answer 403 saying so: a cluster whose operator
set no key has no admin API, rather than one open to everyone who reaches the front door.

Routes (under ``/admin/v1``; errors in OpenAI's shape, `sllm.api.errors`):

- ``GET /models``: every model, with its status (registered, downloading, ready, failed)
  and error;
- ``POST /models``: deploy (``{"name": ..., "source": ..., "engine": ..., "options": {}}``);
  201, then the coordinator describes its source in the background;
- ``PATCH /models/{name}``: change its engine ``options`` or its ``keep_alive_s``;
- ``DELETE /models/{name}``: 409 ``model_in_use`` while requests for it run, unless
  ``?drain=true``: then no new request is admitted for it (503 ``model_not_ready``), the
  running ones finish (within `DRAIN_TIMEOUT_S`), and it is deleted; every worker frees it
  at its next look at the registry (`sllm.runtime.registry_sync`).

Workers read the registry on ``GET /internal/v1/models`` (the ready models, with an ETag of
the registry's version); with a cluster secret only with the front door's credential
(`sllm.api.credential`), like a worker's own model routes.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from sllm.api.errors import ApiError
from sllm.catalog import DEFAULT_ENGINE, entry_of
from sllm.registry import INTERNAL_MODELS_PATH, ModelRegistry, RegistryError

ADMIN_PREFIX = "/admin/v1"
# How long a drain waits for a model's running requests: a long generation streams for a
# minute or two; past that the delete is refused (409) and the model keeps serving.
DRAIN_TIMEOUT_S = 120.0
# How often a drain looks at the running count.
DRAIN_POLL_S = 0.05


class DeployBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="the model's name, as requests will name it")
    source: str = Field(
        default="", description="a directory, an http(s):// URL or a Hugging Face id"
    )
    engine: str = Field(
        default=DEFAULT_ENGINE, description="a registered engine: sim, transformers, vllm"
    )
    options: dict[str, Any] = Field(default_factory=dict, description="the engine's settings")
    files: list[dict[str, Any]] | None = Field(
        default=None, description="path, size and sha256 of each file (required for a URL)"
    )
    params_b: float | None = None
    size_bytes: int | None = None
    keep_alive_s: float | None = Field(
        default=None, description="seconds it stays loaded once idle (default: KEEP_ALIVE)"
    )


class UpdateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    options: dict[str, Any] | None = Field(
        default=None, description="the engine's settings, replacing the old"
    )
    keep_alive_s: float | None = Field(
        default=None, description="seconds it stays loaded once idle"
    )


def install_admin(
    app: FastAPI,
    registry: ModelRegistry,
    *,
    admin_key: str | None,
    running: Callable[[str], int],
    deployed: Callable[[], None],
) -> None:
    """Add the admin routes and the workers' registry route to `app`.

    `running(model)` is how many requests for it the front door is answering; `deployed()`
    is called after each deploy, to describe the new source in the background.
    """
    withdrawn: dict[str, float] = {}  # models draining: no new requests, by start time
    router = APIRouter(prefix=ADMIN_PREFIX)

    def _not_draining(name: str) -> None:
        if name in withdrawn:
            raise ApiError(
                409,
                f"model {name!r} is being deleted (draining its requests)",
                code="model_draining",
                param="name",
            )

    def authorize(request: Request) -> None:
        if not admin_key:
            raise ApiError(
                403,
                "the admin API is disabled: set ADMIN_KEY on the coordinator to enable it",
                code="admin_disabled",
            )
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        given = token.strip().encode() if scheme.lower() == "bearer" else b""
        if not hmac.compare_digest(given, admin_key.encode()):
            raise ApiError(401, "missing or invalid admin key", code="invalid_admin_key")

    async def list_models(request: Request) -> dict[str, Any]:
        authorize(request)
        return {"object": "list", "data": [_listed(e, withdrawn) for e in registry.entries()]}

    async def deploy(body: DeployBody, request: Request, response: Response) -> dict[str, Any]:
        authorize(request)
        fields = body.model_dump(exclude={"name"}, exclude_none=True)
        entry = _registry_call(lambda: registry.deploy(body.name, fields))
        deployed()
        response.status_code = 201
        return _listed(entry, withdrawn)

    async def update(name: str, body: UpdateBody, request: Request) -> dict[str, Any]:
        authorize(request)
        _not_draining(name)
        changes = body.model_dump(exclude_none=True)
        entry = _registry_call(lambda: registry.update(name, changes))
        return _listed(entry, withdrawn)

    async def delete(name: str, request: Request, drain: bool = False) -> dict[str, Any]:
        authorize(request)
        entry = _registry_call(lambda: registry.require(name))
        if running(name) and not drain:
            raise ApiError(
                409,
                f"model {name!r} is in use: {running(name)} request(s) running; delete it "
                "with drain=true to stop new requests and wait for these",
                code="model_in_use",
                param="name",
            )
        if drain:
            _not_draining(name)
            withdrawn[name] = time.monotonic()
            model = registry.withdraw(name)
            try:
                deadline = time.monotonic() + DRAIN_TIMEOUT_S
                while running(name) and time.monotonic() < deadline:
                    await asyncio.sleep(DRAIN_POLL_S)
            finally:
                withdrawn.pop(name, None)
            still = running(name)
            if still:
                if model is not None:
                    registry.restore(name, model)  # it keeps serving
                raise ApiError(
                    409,
                    f"model {name!r} still had {still} request(s) running after "
                    f"{DRAIN_TIMEOUT_S:.0f} s of draining; it was not deleted",
                    code="model_in_use",
                    param="name",
                )
        _registry_call(lambda: registry.delete(name))
        return {"id": name, "object": "model", "deleted": True, "status": entry.status.value}

    router.add_api_route("/models", list_models, methods=["GET"])
    router.add_api_route("/models", deploy, methods=["POST"], status_code=201)
    router.add_api_route("/models/{name:path}", update, methods=["PATCH"])
    router.add_api_route("/models/{name:path}", delete, methods=["DELETE"])
    app.include_router(router)

    async def internal_models(request: Request) -> Response:
        etag = registry.etag
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers={"etag": etag})
        document = {
            "version": registry.version,
            "models": [entry_of(model) for model in registry.served.values()],
        }
        return JSONResponse(document, headers={"etag": etag})

    app.add_api_route(INTERNAL_MODELS_PATH, internal_models, methods=["GET"])


def not_ready_reason(registry: ModelRegistry, model: str) -> str | None:
    """Why `model` is not servable though the registry knows it, or None (the front door
    answers 503 for the first, 404 when the registry does not know it at all)."""
    entry = registry.not_ready(model)
    if entry is None:
        found = registry.get(model)
        return "being deleted" if found is not None and model not in registry.served else None
    return entry.status.value if not entry.error else f"{entry.status.value}: {entry.error}"


def _registry_call(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except RegistryError as error:
        raise ApiError(error.status, str(error), code=error.code, param=error.param) from None


def _listed(entry: Any, withdrawn: Mapping[str, float]) -> dict[str, Any]:
    listed: dict[str, Any] = entry.as_dict()
    if entry.name in withdrawn:
        listed["status"] = "draining"
    return listed
