"""Process settings: one frozen `Settings`, built from the environment and then CLI flags.

Why it exists: the deployment guide's environment variables are a contract (Docker Compose files
and Kubernetes manifests set them), and every process reads them the same way. Reading them in
one place means one set of defaults, one validation, and one error that lists every bad variable
at once, instead of a crash on the first one and another on the next restart.

Variables
---------
=================  ===========================  ====================================================
Variable           Default                      Meaning
=================  ===========================  ====================================================
DEPLOYMENT_MODE    ``local``                    ``local``, ``docker`` or ``kubernetes``
LOG_LEVEL          ``INFO``                     DEBUG, INFO, WARNING, ERROR, CRITICAL (any case)
BIND_HOST          ``0.0.0.0``                  address the UDP and HTTP servers bind to
COORDINATOR_HOST   ``central-coordinator``      where workers send reports (the Service name)
COORDINATOR_PORT   ``9000``                     coordinator UDP port
WORKER_PORT        ``8000``                     worker UDP port
REPORT_INTERVAL    ``1.0``                      seconds between worker reports, > 0
WORKER_TIMEOUT     ``10.0``                     seconds of silence before a worker is dead;
                                                must exceed REPORT_INTERVAL
WORKER_ID          auto                         see below; letters, digits and ``._:-`` only
LOG_FORMAT         ``text``                     ``text`` or ``json`` (for containers)
CLUSTER_SECRET     none                         HMAC key for datagrams and proxied requests;
                                                never shown in repr/errors; required in docker
                                                and kubernetes mode (see below)
ALLOW_UNAUTHENTICATED ``false``                 ``true``: run docker or kubernetes mode without
                                                CLUSTER_SECRET (tests, a trusted network)
PLACEMENT_POLICY   ``startup-aware``            a policy of `sllm.core.placement.POLICIES`
HTTP_PORT          ``8080``                     HTTP health, metrics (and the front door)
WORKER_HTTP_PORT   none                         a worker's own HTTP port (health, metrics);
                                                unset means none
KEEP_ALIVE         ``600.0``                    seconds an idle model stays loaded, >= 0
KEEP_ALIVE_POLICY  ``fixed``                    ``fixed`` (KEEP_ALIVE) or ``histogram``: each
                                                model's window learned from its idle times
                                                (`sllm.core.keepalive`, ATC'20)
EVICTION           ``lru``                      ``lru`` or ``expected-cost``: what leaves the GPU
                                                and host memory to make room
PREFETCH           ``false``                    ``true``: unload a model not expected back soon
                                                and load it back before its predicted arrival;
                                                needs KEEP_ALIVE_POLICY=histogram
HAND_BACK          ``false``                    ``true``: requests whose model's load found no
                                                room for as long as the load takes are handed
                                                back (429) to be placed elsewhere
MIGRATE            ``false``                    ``true``: such a load empties the GPU of the
                                                models in its way once that costs less than
                                                waiting on; their running requests migrate
                                                (datagram requests only: no engine here
                                                continues an HTTP stream elsewhere)
ADMISSION_DEADLINE ``0``                        coordinator and decentralized nodes: seconds
                                                of waiting (beyond the request's own load)
                                                past which the front door answers 429 at
                                                once, >= 0; 0: off
ADMISSION_HOLD     ``0``                        with ADMISSION_DEADLINE: seconds such a request
                                                waits in a bounded queue for the deadline to
                                                admit it before the 429, >= 0; 0: off
QUEUE_CAPACITY     ``64``                       requests queued per worker before 429, >= 1
WORKER_SLOTS       ``8``                        requests a worker runs at once, >= 1
WORKER_GPUS        auto                         GPUs a worker reports (models with a larger
                                                ``tensor_parallel_size`` are not placed there),
                                                1..1024; unset: the devices NVML sees, else 1
PRESTAGE_TIER      ``disk``                     where a worker finds the catalog's checkpoints at
                                                start: ``none`` (remote store only), ``disk``
                                                (a pre-populated local model store), ``host``
SEED_NODES         none                         decentralized mode: ``host:port,host:port`` of
                                                nodes to join through (at most 64; ports 1..65535)
API_KEYS           none                         ``team-a-key-1,team-b-key-2`` (8+ characters each):
                                                the front door's ``Bearer`` keys; unset: no auth
MODEL_CATALOG      none                         catalog file (JSON or TOML, see `sllm.catalog`);
                                                unset: the default simulated catalog
REGISTRY_PATH      none                         the coordinator's model registry, a SQLite file
                                                (`sllm.registry`); it keeps deployed models over
                                                restarts, and MODEL_CATALOG seeds it only while
                                                it is empty; unset: in memory, seeded each start
ADMIN_KEY          none                         the ``Bearer`` key of the admin API (deploy and
                                                delete models; 8+ characters); unset: no admin
                                                API (its routes answer 403)
COORDINATOR_HTTP_PORT none                      a worker follows the registry on the
                                                coordinator's HTTP port (COORDINATOR_HOST at
                                                this port); unset: it serves MODEL_CATALOG only
MODEL_CACHE_DIR    ``~/.cache/sllm/models``     a worker's local disk tier of checkpoints
MODEL_CACHE_GB     ``2000``                     gigabytes (10^9 bytes) of checkpoints that tier
                                                holds before the least recently used go, >= 1;
                                                set it below the volume's size (a download in
                                                flight needs room beside the cache)
MODEL_HOST_GB      ``512``                      gigabytes of host memory for checkpoints (the
                                                host tier: models put to sleep, the checkpoint
                                                pool), >= 1; set it within the memory limit
COST_MODEL         none                         JSON file of `CostModel` fields to override
                                                (``{"decode_overhead_s": 0.05}``); unset: the
                                                calibrated defaults
MAX_WORKERS        ``12000``                    workers a coordinator holds, >= 1; new ones
                                                beyond it are refused until others expire
MAX_MEMBERS        ``4000``                     gossip members a node holds (dead ones
                                                included until forgotten), >= 1
NEW_IDENTITY_RATE  ``10.0``                     new workers or members one source address may
                                                announce per second after its burst, >= 0
NEW_IDENTITY_BURST ``1000``                     new workers or members one source address may
                                                announce at once, >= 1
=================  ===========================  ====================================================

Every HTTP listener (coordinator, worker, node) bounds its clients (`sllm.runtime.http`):

====================  =========  =============================================================
Variable              Default    Meaning
====================  =========  =============================================================
HTTP_HEADER_TIMEOUT   ``10.0``   seconds a connection has to send a request's headers, > 0;
                                 then it is closed
HTTP_BODY_TIMEOUT     ``60.0``   seconds a request's body has to arrive once its headers are
                                 in, > 0; then 408 and closed
HTTP_MAX_CONNECTIONS  ``4096``   open connections per listener, >= 1; a new one beyond it is
                                 closed at once
====================  =========  =============================================================

Ports are integers in 0..65535; 0 asks the OS for a free port (tests use it). A worker serves
no HTTP of its own unless WORKER_HTTP_PORT is set (the container images set 8081). A variable
set to the empty string counts as unset (Compose writes ``WORKER_ID=`` for "no value").

The worker id is WORKER_ID when set; otherwise, in kubernetes mode, the pod's hostname (a
StatefulSet pod name, stable across restarts); otherwise ``worker-<hostname>-<pid>``. It is
resolved once, when `Settings` is built, so it is stable for the life of the object.

Precedence: a CLI flag (an entry of `overrides` that is not None) beats the environment, which
beats the default. Every bad value, from either source, is reported in one `ConfigError`, one
line per variable. Nothing here exits the process: only a ``main()`` does that.

`config` is the process-wide settings object for code that has no `Settings` handed to it. It is
built from ``os.environ`` on first use, so importing this module never fails; an invalid
environment raises `ConfigError` where `config` is first used. `load_settings`, which the CLI
calls once at start-up, also makes its result what `config` answers from then on.

In docker and kubernetes mode a missing or empty CLUSTER_SECRET stops startup unless
ALLOW_UNAUTHENTICATED is true: a container orchestrated with an empty secret (an old
manifest's, an unset variable) would otherwise run a cluster anyone on its network can
join, with only a warning in its log.

The last four bound what strangers can create when CLUSTER_SECRET is unset (anyone who
reaches the UDP port can announce a worker or a member); see `sllm.core.admission` for why
these defaults.

Not handled yet: configuration files, reloading on change, reading CLUSTER_SECRET from a file,
and a minimum strength for the secret.
"""

from __future__ import annotations

import math
import os
import re
import socket
import threading
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, cast

from sllm.core.admission import (
    MAX_MEMBERS_DEFAULT,
    MAX_WORKERS_DEFAULT,
    NEW_IDENTITY_BURST_DEFAULT,
    NEW_IDENTITY_RATE_DEFAULT,
)
from sllm.core.keepalive import EVICTION_POLICIES, KEEP_ALIVE_POLICIES
from sllm.core.placement import policy_names as placement_policy_names
from sllm.core.worker import GB, WorkerResources
from sllm.logs import FORMATS as LOG_FORMATS
from sllm.logs import LEVELS as LOG_LEVELS
from sllm.wire.messages import GPUS_MAX, ID_CHARACTERS, ID_PATTERN

MODES: tuple[str, ...] = ("local", "docker", "kubernetes")
PRESTAGE_TIERS: tuple[str, ...] = ("none", "disk", "host")
CONTAINER_MODES: frozenset[str] = frozenset({"docker", "kubernetes"})

# A character a worker or node id may not hold (the wire's `ID_CHARACTERS`).
_ID_OUTSIDE = re.compile(f"[^{ID_CHARACTERS}]")

PORT_MAX = 65535
# A worker id travels in every report and gossip message; 128 characters holds a hostname, a
# UUID or a pod name, and matches the wire codec's limit on ids.
WORKER_ID_MAX_LEN = 128
# The longest DNS name (RFC 1035); an IP address literal is shorter.
HOST_MAX_LEN = 253

_Parser = Callable[[object], object]


class ConfigError(Exception):
    """The settings are invalid; `problems` has one line per bad variable.

    This is the "the operator misconfigured it" error: a ``main()`` catches it, prints it to
    stderr and exits with status 2.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__(self.problems)

    def __str__(self) -> str:
        return "invalid configuration:\n" + "\n".join(f"  {p}" for p in self.problems)


# --- parsers: each takes an env string or an already-typed flag value, returns the typed value,
# --- or raises ValueError with the reason (without the value: the caller adds it, or hides it).


def _integer(low: int, high: int | None = None) -> _Parser:
    def parse(raw: object) -> int:
        if isinstance(raw, bool):
            raise ValueError("not an integer")
        if isinstance(raw, int):
            value = raw
        elif isinstance(raw, str):
            try:
                value = int(raw.strip(), 10)
            except ValueError:
                raise ValueError("not an integer") from None
        else:
            raise ValueError("not an integer")
        if high is not None and not low <= value <= high:
            raise ValueError(f"out of range {low}..{high}")
        if value < low:
            raise ValueError(f"must be >= {low}")
        return value

    return parse


_port = _integer(0, PORT_MAX)


def _optional_port(raw: object) -> int | None:
    """A port, or None for "not served" (the default of WORKER_HTTP_PORT)."""
    return None if raw is None else cast(int, _port(raw))


def _seconds(*, allow_zero: bool) -> _Parser:
    def parse(raw: object) -> float:
        if isinstance(raw, bool):
            raise ValueError("not a number")
        if isinstance(raw, int | float):
            value = float(raw)
        elif isinstance(raw, str):
            try:
                value = float(raw.strip())
            except ValueError:
                raise ValueError("not a number") from None
        else:
            raise ValueError("not a number")
        if not math.isfinite(value):
            raise ValueError("not a finite number")
        if value < 0 or (value == 0 and not allow_zero):
            raise ValueError("must be >= 0" if allow_zero else "must be > 0")
        return value

    return parse


# A rate per second: a finite number >= 0, parsed like a duration that may be zero.
_rate = _seconds(allow_zero=True)


def _choice(names: Collection[str], what: str) -> _Parser:
    """Accept one of `names`, in any case; return it spelled as in `names`."""
    canonical = {name.casefold(): name for name in names}

    def parse(raw: object) -> str:
        if not isinstance(raw, str):
            raise ValueError("not a string")
        try:
            return canonical[raw.strip().casefold()]
        except KeyError:
            raise ValueError(f"unknown {what}; expected one of {', '.join(names)}") from None

    return parse


def _token(max_len: int, *, allow_empty: bool = False) -> _Parser:
    """A name without whitespace: a host, an id, a policy."""

    def parse(raw: object) -> str:
        if not isinstance(raw, str):
            raise ValueError("not a string")
        value = raw.strip()
        if not value and not allow_empty:
            raise ValueError("must not be empty")
        if len(value) > max_len:
            raise ValueError(f"longer than {max_len} characters")
        if any(ch.isspace() or not ch.isprintable() for ch in value):
            raise ValueError("must not contain whitespace or control characters")
        return value

    return parse


def _worker_id(raw: object) -> str:
    """A worker id as the wire accepts it (`ID_PATTERN`), or "" for "derive it"."""
    value = cast(str, _token(WORKER_ID_MAX_LEN, allow_empty=True)(raw))
    if value and re.fullmatch(ID_PATTERN, value) is None:
        raise ValueError(f"only the characters {ID_CHARACTERS} may appear in an id")
    return value


def _api_keys(raw: object) -> frozenset[str]:
    """``key1,key2`` -> the keys the front door accepts (empty: no authentication)."""
    if isinstance(raw, frozenset | set | tuple | list):
        items = [str(item) for item in raw]
    elif isinstance(raw, str):
        items = raw.split(",")
    else:
        raise ValueError("not a comma-separated list of keys")
    keys = frozenset(item.strip() for item in items if item.strip())
    if any(len(key) < 8 or any(c.isspace() for c in key) for key in keys):
        raise ValueError("every key needs at least 8 characters and no spaces")
    return keys


def _admin_key(raw: object) -> str | None:
    """The admin API's key (unset: no admin API); as strict as an API key."""
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise ValueError("not a key")
    key = raw.strip()
    if not key:
        return None
    if len(key) < 8 or any(c.isspace() for c in key):
        raise ValueError("the key needs at least 8 characters and no spaces")
    return key


def _optional_integer(low: int, high: int) -> _Parser:
    """An integer in `low`..`high`, or None when unset."""
    parse = _integer(low, high)

    def optional(raw: object) -> int | None:
        return None if raw is None else cast(int, parse(raw))

    return optional


def _optional_path(raw: object) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise ValueError("not a path")
    return raw.strip() or None


# Every HTTP listener (coordinator, worker, node) bounds slow and idle-before-a-request
# clients (`sllm.runtime.http`). Headers are one small write from any real client: 10 s
# covers a congested mobile link many times over (nginx allows 60 s, Apache 20-40 s), and
# a slowloris flood holds each socket no longer than that.
HTTP_HEADER_TIMEOUT_S = 10.0
# The largest body the front door takes is 4 MiB (`sllm.api.gateway.MAX_BODY_BYTES`): 60 s
# lets it come at 560 kbit/s; a prompt of a few KB needs milliseconds.
HTTP_BODY_TIMEOUT_S = 60.0
# A streaming request holds one client connection, and on the front door one upstream to a
# worker: 4096 clients use about 8200 descriptors, far under a container's usual
# ``ulimit -n`` (1048576), and cover a front door over 50 workers of 8 slots and a queue of 64.
HTTP_MAX_CONNECTIONS = 4096
# Not a setting (and not KEEP_ALIVE, which is for models): every listener closes an idle
# kept-alive connection after this long (uvicorn's default, named), and the front door's
# client to workers (`sllm.api.worker_client.IDLE_TIMEOUT_S`) drops its idle ones before.
# Here, below both the runtime that serves and the API that connects, so both read it.
HTTP_KEEP_ALIVE_S = 5

# A node contacts every seed while it knows no peer; a few per zone is plenty.
SEED_NODES_MAX = 64
# The disk tier's default capacity is the worker model's own (2 TB of NVMe, a typical
# inference host), so a worker without MODEL_CACHE_GB behaves as the simulator assumes.
MODEL_CACHE_GB_DEFAULT = WorkerResources().disk_bytes // GB
# Likewise the host tier (512 GB, a typical inference host's memory).
MODEL_HOST_GB_DEFAULT = WorkerResources().host_bytes // GB


def _seed_nodes(raw: object) -> tuple[tuple[str, int], ...]:
    """``host:port,host:port`` (or already a sequence of pairs) -> a tuple of pairs."""
    if isinstance(raw, str):
        items: list[object] = [item.strip() for item in raw.split(",") if item.strip()]
    elif isinstance(raw, tuple | list):
        items = list(raw)
    else:
        raise ValueError("not a list of host:port")
    if len(items) > SEED_NODES_MAX:
        raise ValueError(f"more than {SEED_NODES_MAX} seeds")
    seeds: list[tuple[str, int]] = []
    host_token = _token(HOST_MAX_LEN)
    for item in items:
        if isinstance(item, str):
            host, sep, port = item.rpartition(":")
            host = host.removeprefix("[").removesuffix("]")
            if not sep or not host:
                raise ValueError(f"{item!r} is not host:port")
        elif isinstance(item, tuple | list) and len(item) == 2:
            host, port = item
        else:
            raise ValueError(f"{item!r} is not host:port")
        try:
            parsed_port = cast(int, _integer(1, PORT_MAX)(port))
            seeds.append((cast(str, host_token(host)), parsed_port))
        except ValueError as error:
            raise ValueError(f"{item!r}: {error}") from None
    return tuple(seeds)


_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def _flag(raw: object) -> bool:
    """``true``/``false`` (or 1/0, yes/no, on/off, in any case), or already a bool."""
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        word = raw.strip().casefold()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    raise ValueError("not true or false")


def _secret(raw: object) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise ValueError("not a string")
    return raw or None  # empty means "no secret"


@dataclass(frozen=True, slots=True)
class _Variable:
    field: str
    env: str
    parse: _Parser
    secret: bool = False


_VARIABLES: tuple[_Variable, ...] = (
    _Variable("deployment_mode", "DEPLOYMENT_MODE", _choice(MODES, "mode")),
    _Variable("log_level", "LOG_LEVEL", _choice(LOG_LEVELS, "level")),
    _Variable("bind_host", "BIND_HOST", _token(HOST_MAX_LEN)),
    _Variable("coordinator_host", "COORDINATOR_HOST", _token(HOST_MAX_LEN)),
    _Variable("coordinator_port", "COORDINATOR_PORT", _port),
    _Variable("worker_port", "WORKER_PORT", _port),
    _Variable("report_interval", "REPORT_INTERVAL", _seconds(allow_zero=False)),
    _Variable("worker_timeout", "WORKER_TIMEOUT", _seconds(allow_zero=False)),
    # Empty means "derive it"; `Settings.__post_init__` does.
    _Variable("worker_id", "WORKER_ID", _worker_id),
    _Variable("log_format", "LOG_FORMAT", _choice(LOG_FORMATS, "format")),
    _Variable("cluster_secret", "CLUSTER_SECRET", _secret, secret=True),
    _Variable("allow_unauthenticated", "ALLOW_UNAUTHENTICATED", _flag),
    # Membership in the policy table is checked by `from_env`, which knows the names in use.
    _Variable("placement_policy", "PLACEMENT_POLICY", _token(64)),
    _Variable("http_port", "HTTP_PORT", _port),
    _Variable("worker_http_port", "WORKER_HTTP_PORT", _optional_port),
    _Variable("keep_alive", "KEEP_ALIVE", _seconds(allow_zero=True)),
    _Variable("keep_alive_policy", "KEEP_ALIVE_POLICY", _choice(KEEP_ALIVE_POLICIES, "policy")),
    _Variable("eviction", "EVICTION", _choice(EVICTION_POLICIES, "policy")),
    _Variable("prefetch", "PREFETCH", _flag),
    _Variable("hand_back", "HAND_BACK", _flag),
    _Variable("migrate", "MIGRATE", _flag),
    _Variable("admission_deadline", "ADMISSION_DEADLINE", _seconds(allow_zero=True)),
    _Variable("admission_hold", "ADMISSION_HOLD", _seconds(allow_zero=True)),
    _Variable("queue_capacity", "QUEUE_CAPACITY", _integer(1)),
    _Variable("worker_slots", "WORKER_SLOTS", _integer(1)),
    _Variable("worker_gpus", "WORKER_GPUS", _optional_integer(1, GPUS_MAX)),
    _Variable("prestage_tier", "PRESTAGE_TIER", _choice(PRESTAGE_TIERS, "tier")),
    _Variable("seed_nodes", "SEED_NODES", _seed_nodes),
    _Variable("api_keys", "API_KEYS", _api_keys, secret=True),
    _Variable("model_catalog", "MODEL_CATALOG", _optional_path),
    _Variable("registry_path", "REGISTRY_PATH", _optional_path),
    _Variable("admin_key", "ADMIN_KEY", _admin_key, secret=True),
    _Variable("coordinator_http_port", "COORDINATOR_HTTP_PORT", _optional_port),
    _Variable("model_cache_dir", "MODEL_CACHE_DIR", _optional_path),
    _Variable("model_cache_gb", "MODEL_CACHE_GB", _integer(1)),
    _Variable("model_host_gb", "MODEL_HOST_GB", _integer(1)),
    _Variable("cost_model", "COST_MODEL", _optional_path),
    _Variable("http_header_timeout", "HTTP_HEADER_TIMEOUT", _seconds(allow_zero=False)),
    _Variable("http_body_timeout", "HTTP_BODY_TIMEOUT", _seconds(allow_zero=False)),
    _Variable("http_max_connections", "HTTP_MAX_CONNECTIONS", _integer(1)),
    _Variable("max_workers", "MAX_WORKERS", _integer(1)),
    _Variable("max_members", "MAX_MEMBERS", _integer(1)),
    _Variable("new_identity_rate", "NEW_IDENTITY_RATE", _rate),
    _Variable("new_identity_burst", "NEW_IDENTITY_BURST", _integer(1)),
)
_BY_FIELD: dict[str, _Variable] = {v.field: v for v in _VARIABLES}
# Every variable a process reads, in table order.
ENVIRONMENT_VARIABLES: tuple[str, ...] = tuple(v.env for v in _VARIABLES)


def _problem(label: str, raw: object, var: _Variable, reason: str) -> str:
    shown = "<hidden>" if var.secret else repr(raw)
    return f"{label}={shown}: {reason}"


def _check(
    given: Mapping[str, tuple[str, object]],
    defaults: Mapping[str, object],
    parsers: Mapping[str, _Parser],
) -> tuple[dict[str, object], list[str]]:
    """Parse the `given` values (field -> (label, raw)); return the parsed ones and the problems.

    Cross-field rules are checked on the effective values (given, else default), and only when
    every value they involve parsed.
    """
    values: dict[str, object] = {}
    problems: list[str] = []
    for name, (where, raw) in given.items():
        var = _BY_FIELD[name]
        try:
            values[name] = parsers.get(name, var.parse)(raw)
        except ValueError as exc:
            problems.append(_problem(where, raw, var, str(exc)))

    def effective(name: str) -> object:
        return values[name] if name in values else defaults[name]

    def label(name: str) -> str:
        return given[name][0] if name in given else f"{_BY_FIELD[name].env} (default)"

    failed = {name for name in given if name not in values}
    if not failed & {"worker_timeout", "report_interval"}:
        timeout = cast(float, effective("worker_timeout"))
        interval = cast(float, effective("report_interval"))
        if timeout <= interval:
            problems.append(
                f"{label('worker_timeout')}={timeout!r}: must exceed "
                f"{label('report_interval')}={interval!r}"
            )
    if not failed & {"deployment_mode", "cluster_secret", "allow_unauthenticated"}:
        mode = effective("deployment_mode")
        if (
            mode in CONTAINER_MODES
            and not effective("cluster_secret")
            and not effective("allow_unauthenticated")
        ):
            problems.append(
                f"{label('cluster_secret')}: required in {mode} mode (empty counts as unset); "
                "set ALLOW_UNAUTHENTICATED=true to run a cluster without one"
            )
    learned = effective("keep_alive_policy") == "histogram"
    if not failed & {"prefetch", "keep_alive_policy"} and effective("prefetch") and not learned:
        problems.append(
            f"{label('prefetch')}=True: needs KEEP_ALIVE_POLICY=histogram "
            f"(pre-warm windows are learned), got {label('keep_alive_policy')}="
            f"{effective('keep_alive_policy')!r}"
        )
    deadline = effective("admission_deadline")
    checkable = not failed & {"admission_hold", "admission_deadline"}
    if checkable and effective("admission_hold") and not deadline:
        problems.append(
            f"{label('admission_hold')}={effective('admission_hold')!r}: needs "
            f"ADMISSION_DEADLINE > 0 (it holds what the deadline would refuse), got "
            f"{label('admission_deadline')}={deadline!r}"
        )
    return values, problems


def default_worker_id(mode: str) -> str:
    """The worker id when WORKER_ID is not set: the pod name in kubernetes, else host and pid.

    A hostname may hold characters an id may not ("Johns MacBook Pro"): each becomes "-", so
    the id passes the wire's check rather than making every report fail to encode.
    """
    hostname = _ID_OUTSIDE.sub("-", socket.gethostname().strip()) or "localhost"
    if mode == "kubernetes":
        return hostname[:WORKER_ID_MAX_LEN]
    suffix = f"-{os.getpid()}"
    return f"worker-{hostname}"[: WORKER_ID_MAX_LEN - len(suffix)] + suffix


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a process is configured with. Build it with `from_env`.

    Constructing it directly (tests do, with port 0) validates and normalizes the same way, except
    that `placement_policy` is only checked to be a name: the policy table is not known here.
    An empty `worker_id` is replaced by `default_worker_id`.
    """

    deployment_mode: str = "local"
    log_level: str = "INFO"
    bind_host: str = "0.0.0.0"
    coordinator_host: str = "central-coordinator"
    coordinator_port: int = 9000
    worker_port: int = 8000
    report_interval: float = 1.0
    worker_timeout: float = 10.0
    worker_id: str = ""
    log_format: str = "text"
    cluster_secret: str | None = field(default=None, repr=False)
    allow_unauthenticated: bool = False
    placement_policy: str = "startup-aware"
    http_port: int = 8080
    worker_http_port: int | None = None
    keep_alive: float = 600.0
    keep_alive_policy: str = "fixed"
    eviction: str = "lru"
    prefetch: bool = False
    hand_back: bool = False
    migrate: bool = False
    admission_deadline: float = 0.0  # 0: off
    admission_hold: float = 0.0  # 0: off; needs admission_deadline
    queue_capacity: int = 64
    worker_slots: int = 8
    worker_gpus: int | None = None
    prestage_tier: str = "disk"
    seed_nodes: tuple[tuple[str, int], ...] = ()
    api_keys: frozenset[str] = field(default=frozenset(), repr=False)
    model_catalog: str | None = None
    registry_path: str | None = None
    admin_key: str | None = field(default=None, repr=False)
    coordinator_http_port: int | None = None
    model_cache_dir: str | None = None
    model_cache_gb: int = MODEL_CACHE_GB_DEFAULT
    model_host_gb: int = MODEL_HOST_GB_DEFAULT
    cost_model: str | None = None
    http_header_timeout: float = HTTP_HEADER_TIMEOUT_S
    http_body_timeout: float = HTTP_BODY_TIMEOUT_S
    http_max_connections: int = HTTP_MAX_CONNECTIONS
    max_workers: int = MAX_WORKERS_DEFAULT
    max_members: int = MAX_MEMBERS_DEFAULT
    new_identity_rate: float = NEW_IDENTITY_RATE_DEFAULT
    new_identity_burst: int = NEW_IDENTITY_BURST_DEFAULT

    def __post_init__(self) -> None:
        given = {var.field: (var.field, getattr(self, var.field)) for var in _VARIABLES}
        values, problems = _check(given, _DEFAULTS, {})
        if problems:
            raise ConfigError(problems)
        for name, value in values.items():
            object.__setattr__(self, name, value)
        if not self.worker_id:
            object.__setattr__(self, "worker_id", default_worker_id(self.deployment_mode))

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        overrides: Mapping[str, object] | None = None,
        *,
        policy_names: Collection[str] | None = None,
    ) -> Settings:
        """Build settings from `env` (default ``os.environ``) and then `overrides`.

        `overrides` maps field names to CLI flag values; None means the flag was not given. A
        flag value may be a string (parsed like the variable) or already typed. In errors a flag
        is named ``--field-name`` (``--report-interval``). `policy_names` are the placement
        policies PLACEMENT_POLICY may name (default: the registry's, read now). Raises
        `ConfigError` listing every bad value, and TypeError for an override key that is not a
        field (a bug in the caller, not bad input).
        """
        env = os.environ if env is None else env
        overrides = {} if overrides is None else overrides
        unknown = sorted(set(overrides) - set(_BY_FIELD))
        if unknown:
            raise TypeError(f"unknown setting(s) in overrides: {', '.join(unknown)}")

        given: dict[str, tuple[str, object]] = {}
        for var in _VARIABLES:
            flag = overrides.get(var.field)
            if flag is not None:
                given[var.field] = ("--" + var.field.replace("_", "-"), flag)
            elif env.get(var.env, "").strip():
                given[var.field] = (var.env, env[var.env])
        if "placement_policy" not in given:
            # The default must be a policy in use, too.
            given["placement_policy"] = (
                "PLACEMENT_POLICY (default)",
                _DEFAULTS["placement_policy"],
            )
        names = placement_policy_names() if policy_names is None else policy_names
        policy = _choice(names, "placement policy")
        values, problems = _check(given, _DEFAULTS, {"placement_policy": policy})
        if problems:
            raise ConfigError(problems)
        return cls(**cast(dict[str, Any], values))

    def get_coordinator_address(self) -> tuple[str, int]:
        """Where workers send their reports: ``(COORDINATOR_HOST, COORDINATOR_PORT)``."""
        return (self.coordinator_host, self.coordinator_port)

    def get_worker_id(self) -> str:
        """This process's worker id; the same on every call."""
        return self.worker_id

    def is_containerized(self) -> bool:
        """True in docker and kubernetes mode."""
        return self.deployment_mode in CONTAINER_MODES


_DEFAULTS: dict[str, object] = {f.name: f.default for f in fields(Settings)}


class LazySettings:
    """A stand-in for a `Settings` that is built on first attribute access, then kept.

    Attribute reads and method calls are forwarded to the `Settings`. If building it raises
    `ConfigError`, every use raises it again (nothing is cached until a build succeeds). It is
    not itself an instance of `Settings`; `resolve` returns the real object.
    """

    __slots__ = ("_load", "_lock", "_settings")

    def __init__(self, load: Callable[[], Settings] = Settings.from_env) -> None:
        self._load = load
        self._lock = threading.Lock()
        self._settings: Settings | None = None

    def resolve(self) -> Settings:
        """The settings, built now if this is the first use."""
        settings = self._settings
        if settings is None:
            with self._lock:
                if self._settings is None:
                    self._settings = self._load()
                settings = self._settings
        return settings

    def install(self, settings: Settings) -> None:
        """Answer from `settings` from now on."""
        with self._lock:
            self._settings = settings

    def __getattr__(self, name: str) -> Any:
        return getattr(self.resolve(), name)

    def __repr__(self) -> str:
        return repr(self._settings) if self._settings is not None else "LazySettings(<unbuilt>)"


_lazy = LazySettings()
# Typed as Settings so callers get the fields' types; at run time it forwards to one.
config: Settings = cast(Settings, _lazy)


def load_settings(
    overrides: Mapping[str, object] | None = None,
    *,
    policy_names: Collection[str] | None = None,
) -> Settings:
    """Build the process's settings from ``os.environ`` and the CLI flags in `overrides`.

    Contract with the CLI: each ``main()`` calls this once, before doing anything else, with its
    parsed flags keyed by field name (None for a flag not given). On `ConfigError` it prints
    ``str(error)`` to stderr and exits with status 2; this function never exits. The returned
    settings also become what the module-level `config` answers, so code reading `config` sees
    the flags too.
    """
    settings = Settings.from_env(os.environ, overrides, policy_names=policy_names)
    _lazy.install(settings)
    return settings
