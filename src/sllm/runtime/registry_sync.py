"""The live side of the model registry: describing deployed sources, and workers following it.

A worker follows the coordinator's model registry (`sllm.registry`), so that a model
deployed at runtime is served without a catalog file naming it, and a deleted one is freed.

The worker reads ``GET /internal/v1/models`` on the coordinator's HTTP port
(COORDINATOR_HTTP_PORT): at start, then every `interval_s` with the last ETag (an unchanged
registry costs a 304), and at once when it is asked for a model it does not know (one read
at a time: callers meanwhile wait on the same read). With a cluster secret the read carries
the front door's credential (`sllm.api.credential`), the key proxied requests use.

A coordinator that cannot be reached leaves the worker's models as they are: it keeps
serving its catalog, and logs the failure once per `FAILURE_LOG_PERIOD_S`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

from sllm.api.credential import HEADER as CREDENTIAL_HEADER
from sllm.api.credential import sign
from sllm.api.request_id import HEADER as REQUEST_ID_HEADER
from sllm.catalog import CatalogError, CatalogModel, EngineRules, parse_model
from sllm.logs import log_event
from sllm.registry import INTERNAL_MODELS_PATH, ModelRegistry, describe

log = logging.getLogger("sllm.worker")

# A read of the registry is one small JSON document on the cluster's network.
READ_TIMEOUT_S = 5.0
# A request for an unknown model reads the registry at most this often: a deploy is
# found within it, and a flood of requests for made-up names costs one read per period.
ON_DEMAND_GAP_S = 0.5
# At most one warning this often while the coordinator cannot be read.
FAILURE_LOG_PERIOD_S = 30.0

Apply = Callable[[dict[str, CatalogModel]], None]


class RegistryFollower:
    """Reads the registry at `url` and hands every new version to `apply`, by model name."""

    def __init__(
        self,
        *,
        url: str,
        credential_key: bytes | None,
        engines: EngineRules,
        apply: Apply,
        interval_s: float,
    ) -> None:
        self.url = url
        self.path = INTERNAL_MODELS_PATH
        self.credential_key = credential_key
        self.engines = engines
        self.apply = apply
        self.interval_s = interval_s
        self.version: int | None = None  # the last version applied
        self._etag = ""
        self._read: asyncio.Task[bool] | None = None
        self._on_demand_at = -ON_DEMAND_GAP_S
        self._failure_logged_at = -FAILURE_LOG_PERIOD_S

    async def follow(self) -> None:
        """Read now, then every `interval_s`, until cancelled."""
        while True:
            await self.refresh()
            await asyncio.sleep(self.interval_s)

    async def refresh(self) -> bool:
        """Read the registry now (or join the read under way); True if a new version was
        applied."""
        if self._read is None or self._read.done():
            self._read = asyncio.create_task(self._read_once())
        return await asyncio.shield(self._read)

    async def refresh_on_demand(self) -> None:
        """`refresh` for a request naming a model the worker does not serve, unless the
        last such read started less than `ON_DEMAND_GAP_S` ago (then the periodic read
        finds a new model soon enough)."""
        now = time.monotonic()
        if now - self._on_demand_at < ON_DEMAND_GAP_S:
            return
        self._on_demand_at = now
        if self._read is not None and not self._read.done():
            # A read under way may have started before the model was deployed.
            await asyncio.shield(self._read)
        await self.refresh()

    async def _read_once(self) -> bool:
        try:
            document = await asyncio.to_thread(self._get)
        except (OSError, ValueError) as error:
            now = time.monotonic()
            if now - self._failure_logged_at >= FAILURE_LOG_PERIOD_S:
                self._failure_logged_at = now
                log_event(
                    log, logging.WARNING, "registry_unreachable", url=self.url, error=str(error)
                )
            return False
        if document is None:
            return False  # unchanged
        models, problems = self._models_of(document)
        for problem in problems:
            log_event(log, logging.WARNING, "registry_model_refused", problem=problem)
        self.version = int(document.get("version", 0))
        try:
            self.apply(models)
        except Exception as error:  # logged; the next version is applied all the same
            log_event(
                log,
                logging.ERROR,
                "registry_apply_failed",
                error=f"{type(error).__name__}: {error}",
            )
            self._etag = ""  # read it again whole next time
            return False
        log_event(log, logging.INFO, "registry_applied", version=self.version, models=len(models))
        return True

    def _models_of(self, document: dict[str, Any]) -> tuple[dict[str, CatalogModel], list[str]]:
        """The document's models, each checked as a catalog entry is; a model this worker
        cannot run (an engine it lacks) is left out and named."""
        models: dict[str, CatalogModel] = {}
        problems: list[str] = []
        for entry in document.get("models", []):
            try:
                model = parse_model(entry, engines=self.engines)
            except CatalogError as error:
                problems.append(str(error))
                continue
            models[model.name] = model
        return models, problems

    def _get(self) -> dict[str, Any] | None:
        """The registry document, or None when it has not changed since the last read."""
        request = urllib.request.Request(self.url + self.path, method="GET")
        request_id = uuid.uuid4().hex
        request.add_header(REQUEST_ID_HEADER, request_id)
        if self._etag:
            request.add_header("If-None-Match", self._etag)
        if self.credential_key is not None:
            credential = sign(
                key=self.credential_key,
                method="GET",
                path=self.path,
                request_id=request_id,
                body=b"",
                now=time.time(),
            )
            request.add_header(CREDENTIAL_HEADER, credential)
        try:
            with urllib.request.urlopen(request, timeout=READ_TIMEOUT_S) as response:
                document = json.loads(response.read())
                self._etag = response.headers.get("etag", "")
        except urllib.error.HTTPError as error:
            if error.code == 304:
                return None
            raise
        if not isinstance(document, dict):
            raise ValueError("the registry answered something other than a JSON object")
        return document


class SourceDescriber:
    """Describes the sources of newly deployed models in the background, for the
    coordinator and a decentralized node alike: one task at a time, which takes every
    pending model (so a model deployed while it runs is taken by it)."""

    def __init__(self, registry: ModelRegistry, logger: logging.Logger) -> None:
        self.registry = registry
        self.logger = logger
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Describe whatever is pending, unless a task doing so runs already."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(describe_pending(self.registry, self.logger))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


async def describe_pending(registry: ModelRegistry, logger: logging.Logger) -> None:
    """Describe the sources of every model deployed and not yet described (in a thread:
    hashing a directory reads every byte), until none is left; log each outcome."""
    while pending := registry.pending():
        for model in pending:
            if not registry.start_describing(model):
                continue
            log_event(
                logger, logging.INFO, "model_describing", model=model.name, source=model.source
            )
            found = await asyncio.to_thread(describe, model)
            outcome = registry.described(model.name, found)
            if outcome is not None:
                log_event(
                    logger,
                    logging.WARNING if found.error else logging.INFO,
                    "model_" + outcome.status.value,
                    model=model.name,
                    source=found.source or model.source,
                    files=len(found.files),
                    error=found.error or None,
                )
