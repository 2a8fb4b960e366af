"""`sllm bench fuzz`: hostile datagrams at live services; none may crash one or get in forged.

**Targets.** A coordinator and a decentralized node, each a child process on 127.0.0.1,
each run twice: with a CLUSTER_SECRET (signed datagrams) and without. For `--seconds`
per run, this process sends them datagrams as fast as it makes them, in batches of
`BATCH` drawn from the kinds below, and then checks the target.

**Kinds of datagram** (`Fuzzer`):

- ``random``: random bytes of random length, up to a little over the datagram cap;
- ``mutated``: a valid message of a random type, encoded as the target expects, then
  damaged at the byte level (bits flipped, bytes cut, inserted or repeated);
- ``malformed``: a valid message's JSON document with one value swapped for a hostile one
  (wrong type, huge number, long string, lone surrogate, deep nesting), a field dropped
  or added, or the version or type changed; signed with the right key when the target
  has one, so what the parser behind the HMAC does is fuzzed too;
- with a secret, four kinds that must never get in: ``forged`` (signed with another key),
  ``replayed`` (a valid datagram sent before, as ``replay_source``, sent again),
  ``stale`` (signed with the right key, timestamped an hour away), ``unsigned`` (no
  envelope). Each forged, stale or unsigned one carries an identity of its own (a worker
  report, or a gossip push with a member, named ``forged-N``), so one that got in would
  show in the target's view.

**What is checked** after each run: the process is still running; it answers a status
request (the coordinator's cluster state, the node's members); no handler raised (the
``handler_failed`` log event, which the endpoint logs when it catches one); with a secret,
no ``forged-`` identity is in the target's view; and the target's own counts of rejected
datagrams by reason (its ``/metrics``, when the ``serve`` extra is installed).

**Traffic stays on loopback.** Every message this process makes names only 127.0.0.1 as
a host, and every datagram the target could accept is decoded here first: one whose host
fields (a report's ``host``, a member's ``host``, a ping-req's ``target_host``) are not a
loopback address or empty is not sent (counted as ``withheld``), since the target would
send to such an address.

Not covered: the HTTP front door (the gateway benchmark and the serving tests drive it),
and datagrams a target sends itself (what the fuzzed ones make it send is not inspected).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import ipaddress
import json
import math
import random
import re
import socket
import tempfile
import time
import urllib.request
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

from sllm.bench.gateway import Service, start
from sllm.runtime.client import get_cluster_state, get_members
from sllm.runtime.udp import Endpoint
from sllm.wire import Codec, DecodeError, Message, WorkerReport
from sllm.wire.codec import MAX_DATAGRAM_BYTES, EncodeError
from sllm.wire.messages import HEX_PATTERN, MESSAGE_TYPES, GossipPush, MemberUpdate

DEFAULT_SECONDS = 10.0
# Datagrams made per batch, then sent back to back; small enough that the kinds mix
# within a fraction of a second, large enough that making a batch is not per-datagram work.
BATCH = 2_000
# Valid messages made once per target, then encoded afresh (new timestamp and nonce) and
# damaged: making one from its type hints costs far more than sending it.
POOL = 4_000
SECRET = "fuzz-cluster-secret-0123456789abcdef"
WRONG_SECRET = "not-the-cluster-secret-0123456789abcd"
LOOPBACK = "127.0.0.1"
# A signed datagram this far from the receiver's clock is outside any skew window.
STALE_OFFSET_S = 3600.0
# Replays copy one of the last REPLAY_SOURCES valid datagrams sent; one replay draw in
# REPLAY_SOURCE_SHARE sends a new one instead, so the copies stay inside the skew window
# (where only the replay cache can refuse them) rather than ageing into ``stale``.
REPLAY_SOURCES = 64
REPLAY_SOURCE_SHARE = 1 / 32
START_TIMEOUT_S = 30.0
STATUS_TIMEOUT_S = 2.0
STATUS_TRIES = 3
# Values a hostile peer puts where a field expects something else.
HOSTILE_VALUES: tuple[Any, ...] = (
    None,
    True,
    -1,
    0,
    2**64,
    -(2**63) - 1,
    1e308,
    -1e308,
    0.5,
    "",
    "x" * 2_000,
    "\ud800",
    "127.0.0.1",
    [],
    {},
    [[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]],
    {"a": {"b": {"c": {"d": None}}}},
)
KINDS_UNSIGNED = ("random", "mutated", "malformed")
KINDS_SIGNED = (*KINDS_UNSIGNED, "forged", "replayed", "stale", "unsigned")
# The kinds whose every datagram the target must refuse (with a secret).
MUST_REFUSE = frozenset({"forged", "replayed", "stale", "unsigned"})


# -- making valid messages -------------------------------------------------------------------


def _value(rng: random.Random, name: str, kind: Any, meta: dict[str, Any]) -> Any:
    """A random value of type `kind` within the field's bounds (`meta`)."""
    origin = get_origin(kind)
    if name.endswith("host"):
        return LOOPBACK
    if "choices" in meta:
        return rng.choice(meta["choices"])
    if kind is bool:
        return rng.random() < 0.5
    if kind is int:
        low, high = meta.get("min", 0), meta.get("max", 2**31)
        return rng.randint(int(low), int(min(high, 2**31)))
    if kind is float:
        low, high = meta.get("min", 0.0), meta.get("max", 1e6)
        return rng.uniform(float(low), float(min(high, 1e6)))
    if kind is str and meta.get("pattern") == HEX_PATTERN:
        return rng.randbytes(rng.randint(0, meta.get("max_len", 64) // 2)).hex()
    if kind is str:
        return f"{name}-{rng.randrange(10**6)}"[: meta.get("max_len", 32)]
    if origin is dict:
        count = rng.randint(0, min(3, meta.get("max_len", 3)))
        high = int(meta.get("max", 3))
        return {f"model-{rng.randrange(100)}": rng.randint(0, high) for _ in range(count)}
    if origin is tuple:
        (item,) = get_args(kind)[:1]
        count = rng.randint(0, min(2, meta.get("max_len", 2)))
        return tuple(_instance(rng, item) for _ in range(count))
    if origin is Union or origin is UnionType:
        return _value(rng, name, get_args(kind)[0], meta)
    raise TypeError(f"no generator for {name}: {kind!r}")


@functools.cache
def _fields_of(cls: Any) -> tuple[tuple[str, Any, dict[str, Any]], ...]:
    """Each field of `cls` as (name, type, bounds)."""
    hints = get_type_hints(cls)
    return tuple(
        (spec.name, hints[spec.name], dict(spec.metadata)) for spec in dataclasses.fields(cls)
    )


def _instance(rng: random.Random, cls: Any) -> Any:
    """A random instance of the wire dataclass `cls`, every field within its bounds."""
    return cls(**{name: _value(rng, name, kind, meta) for name, kind, meta in _fields_of(cls)})


def _hosts(value: Any) -> Iterator[str]:
    """Every host a decoded message names (fields ending in ``host``), nested ones too."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for spec in dataclasses.fields(value):
            inner = getattr(value, spec.name)
            if spec.name.endswith("host") and isinstance(inner, str):
                yield inner
            else:
                yield from _hosts(inner)
    elif isinstance(value, tuple | list):
        for item in value:
            yield from _hosts(item)


def stays_on_loopback(message: Message) -> bool:
    """Whether every host `message` names is empty or a loopback address."""
    for host in _hosts(message):
        if not host:
            continue
        try:
            if not ipaddress.ip_address(host).is_loopback:
                return False
        except ValueError:  # a name: the target would resolve it, so it might be anywhere
            return False
    return True


# -- the fuzzer --------------------------------------------------------------------------------


@dataclass
class Fuzzer:
    """Makes batches of hostile datagrams for one target; counts what it made, by kind."""

    rng: random.Random
    signed: bool
    made: Counter[str] = field(default_factory=Counter)
    withheld: int = 0
    forged_ids: int = 0

    def __post_init__(self) -> None:
        secret = SECRET.encode() if self.signed else None
        self.codec = Codec(secret)
        self.checker = Codec(secret)  # decodes what we send: its own replay cache
        self.forger = Codec(WRONG_SECRET.encode())
        self.plain = Codec(None)
        types = sorted(MESSAGE_TYPES.values(), key=lambda cls: cls.TYPE)
        self.pool = [self._fitting(types) for _ in range(POOL)]
        self.reports: list[WorkerReport] = [
            _instance(self.rng, WorkerReport) for _ in range(POOL // 8)
        ]
        self.members: list[MemberUpdate] = [
            _instance(self.rng, MemberUpdate) for _ in range(POOL // 8)
        ]
        # Valid signed datagrams sent once, the newest last, to be sent again.
        self.replay_sources: deque[bytes] = deque(maxlen=REPLAY_SOURCES)
        self.kinds = KINDS_SIGNED if self.signed else KINDS_UNSIGNED

    def batch(self, size: int = BATCH) -> list[bytes]:
        out = []
        for _ in range(size):
            kind = self.rng.choice(self.kinds)
            if kind == "replayed" and (
                not self.replay_sources or self.rng.random() < REPLAY_SOURCE_SHARE
            ):
                kind = "replay_source"
            data = self._make(kind)
            if data is None:
                continue
            self.made[kind] += 1
            out.append(data)
        return out

    def _make(self, kind: str) -> bytes | None:
        now = time.time()
        if kind == "random":
            length = self.rng.randint(0, MAX_DATAGRAM_BYTES + 64)
            return self.rng.randbytes(length)
        if kind == "mutated":
            return self._checked(self._damage(self._valid(now)), now)
        if kind == "malformed":
            return self._checked(self._malformed(now), now)
        if kind == "replay_source":  # valid, sent once as itself; then replayed
            valid = self._checked(self._valid(now), now)
            if valid is not None:
                self.replay_sources.append(valid)
            return valid
        if kind == "replayed":
            return self.rng.choice(self.replay_sources)
        message = self._intruder()
        if kind == "forged":
            return self.forger.encode(message, now, self.rng.getrandbits(64))
        if kind == "stale":
            offset = STALE_OFFSET_S if self.rng.random() < 0.5 else -STALE_OFFSET_S
            return self.codec.encode(message, now + offset, self.rng.getrandbits(64))
        return self.plain.encode(message, now, self.rng.getrandbits(64))  # unsigned

    def _fitting(self, types: list[type[Message]]) -> Message:
        """A random message of a random type that fits one datagram, signed: a random
        one may not (a gossip page of reports with their loads), and every use of the
        pool must be able to encode it."""
        while True:
            message: Message = _instance(self.rng, self.rng.choice(types))
            with contextlib.suppress(EncodeError):  # over the size cap: draw again
                self.forger.encode(message, 0.0, 0)
                return message

    def _valid(self, now: float) -> bytes:
        """A valid datagram of a random type, as the target expects it (signed or not)."""
        message = self.rng.choice(self.pool)
        return self.codec.encode(message, now, self.rng.getrandbits(64))

    def _intruder(self) -> Message:
        """A message that would add an identity of its own if it got in."""
        self.forged_ids += 1
        name = f"forged-{self.forged_ids}"
        report: WorkerReport = dataclasses.replace(
            self.rng.choice(self.reports), node_id=name, host=LOOPBACK, ready=True
        )
        if self.rng.random() < 0.5:
            return report
        member = dataclasses.replace(
            self.rng.choice(self.members), node_id=name, host=LOOPBACK, state=0
        )
        return GossipPush(source=name, members=(member,), reports=(report,))

    def _damage(self, data: bytes) -> bytes:
        raw = bytearray(data)
        for _ in range(self.rng.randint(1, 4)):
            where = self.rng.randrange(max(1, len(raw)))
            how = self.rng.randrange(4)
            if how == 0 and raw:
                raw[where % len(raw)] ^= 1 << self.rng.randrange(8)
            elif how == 1:
                del raw[where : where + self.rng.randint(1, 16)]
            elif how == 2:
                raw[where:where] = self.rng.randbytes(self.rng.randint(1, 16))
            else:
                raw[where:where] = raw[where : where + self.rng.randint(1, 64)]
        return bytes(raw)

    def _malformed(self, now: float) -> bytes:
        message = self.rng.choice(self.pool)
        document = json.loads(self.plain.encode(message, now, 0))
        target = document
        how = self.rng.randrange(6)
        if how == 0:
            document["v"] = self.rng.choice(HOSTILE_VALUES)
        elif how == 1:
            document["t"] = self.rng.choice([*HOSTILE_VALUES, "worker_report", "nope"])
        else:
            # Walk down to a random nested object, then break one of its fields.
            while True:
                inner = target.get("b", target) if isinstance(target, dict) else target
                objects = [v for v in _children(inner) if isinstance(v, dict) and v]
                if not objects or self.rng.random() < 0.5:
                    target = inner
                    break
                target = self.rng.choice(objects)
            if not isinstance(target, dict) or not target:
                target = document
            key = self.rng.choice(sorted(target))
            if how == 2:
                del target[key]
            elif how == 3:
                target[f"extra_{self.rng.randrange(100)}"] = 1
            else:
                target[key] = self.rng.choice(HOSTILE_VALUES)
        try:
            payload = json.dumps(document, separators=(",", ":")).encode("utf-8", "surrogatepass")
        except (TypeError, ValueError):
            payload = b'{"v":1}'
        if not self.signed:
            return payload
        return self.codec.seal(payload, now, self.rng.getrandbits(64))

    def _checked(self, data: bytes, now: float) -> bytes | None:
        """`data`, unless the target would accept it and then send beyond loopback."""
        try:
            message = self.checker.decode(data, now)
        except DecodeError:
            return data  # the target refuses it too
        except Exception:  # the codec itself failed: exactly what the fuzzer is for
            return data
        if stays_on_loopback(message):
            return data
        self.withheld += 1
        return None


def _children(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return list(value.values())
    if isinstance(value, list):
        return [item for item in value]
    return []


# -- running one target -------------------------------------------------------------------------


@dataclass
class Outcome:
    """One target's run: what was sent, and what the target did with it."""

    target: str
    signed: bool
    seconds: float
    sent: int
    made: dict[str, int]
    withheld: int
    running: bool
    answered_status: bool
    handler_failures: int
    forged_in_view: int
    identities_in_view: int
    rejected: dict[str, int]

    @property
    def passed(self) -> bool:
        return (
            self.running
            and self.answered_status
            and self.handler_failures == 0
            and self.forged_in_view == 0
        )


def _environment(signed: bool) -> dict[str, str]:
    return {
        "LOG_LEVEL": "INFO",
        "BIND_HOST": LOOPBACK,
        "COORDINATOR_HOST": LOOPBACK,
        "CLUSTER_SECRET": SECRET if signed else "",
        "API_KEYS": "",
        "MODEL_CATALOG": "",
        "REPORT_INTERVAL": "1.0",
        "WORKER_TIMEOUT": "60",
    }


def _rejected(service: Service) -> dict[str, int]:
    """The target's rejected datagrams by reason, from its /metrics; {} without HTTP."""
    listening = service.events("http_listening")
    if not listening:
        return {}
    url = f"http://{LOOPBACK}:{listening[0]['port']}/metrics"
    with urllib.request.urlopen(url, timeout=STATUS_TIMEOUT_S) as response:
        text = response.read().decode()
    counts = {}
    for match in re.finditer(
        r'^sllm_datagrams_rejected_total\{reason="(\w+)"\} (\S+)$', text, re.M
    ):
        value = int(float(match.group(2)))
        if value:
            counts[match.group(1)] = value
    return counts


async def _view(target: str, address: tuple[str, int], signed: bool) -> tuple[bool, list[str]]:
    """Whether the target answered a status request, and the identities in its view.

    When the flood stops, the target's socket buffer is still full of it, and a status
    request arriving then is dropped by the kernel: the request is tried `STATUS_TRIES`
    times, as an operator would.
    """
    endpoint = await Endpoint.bind(Codec(SECRET.encode() if signed else None), LOOPBACK, 0)
    try:
        for _ in range(STATUS_TRIES):
            with contextlib.suppress(TimeoutError):
                if target == "coordinator":
                    state = await get_cluster_state(endpoint, address, STATUS_TIMEOUT_S)
                    return True, list(state["queue_depth"]["per_worker"])
                _, members = await get_members(endpoint, address, STATUS_TIMEOUT_S)
                return True, [member.node_id for member in members]
        return False, []
    finally:
        endpoint.close()


def fuzz_target(target: str, signed: bool, seconds: float, seed: int, folder: Path) -> Outcome:
    tag = f"{target}-{'signed' if signed else 'unsigned'}"
    args = [target, "--port", "0", "--http-port", "0"]
    if target == "node":
        args += ["--node-id", "fuzzed-node"]
    service = start(tag, args, _environment(signed), folder)
    try:
        address = (LOOPBACK, service.port("listening"))
        fuzzer = Fuzzer(random.Random(seed), signed)
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sent = 0
        began = time.monotonic()
        try:
            while time.monotonic() - began < seconds and service.process.poll() is None:
                for datagram in fuzzer.batch():
                    with contextlib.suppress(OSError):  # ENOBUFS under load: try the next
                        sender.sendto(datagram, address)
                        sent += 1
        finally:
            sender.close()
        elapsed = time.monotonic() - began
        running = service.process.poll() is None
        answered, identities = (
            asyncio.run(_view(target, address, signed)) if running else (False, [])
        )
        rejected = _rejected(service) if running else {}
        return Outcome(
            target=target,
            signed=signed,
            seconds=round(elapsed, 2),
            sent=sent,
            made=dict(fuzzer.made),
            withheld=fuzzer.withheld,
            running=running,
            answered_status=answered,
            handler_failures=len(service.events("handler_failed")),
            forged_in_view=sum(1 for name in identities if name.startswith("forged-")),
            identities_in_view=len(identities),
            rejected=rejected,
        )
    finally:
        service.stop()


def run(
    seconds: float, seed: int, targets: tuple[str, ...], progress: Callable[[str], None]
) -> list[Outcome]:
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="sllm-fuzz-") as folder:
        for target in targets:
            for signed in (True, False):
                progress(
                    f"fuzzing the {target} ({'signed' if signed else 'unsigned'}) for {seconds:g} s"
                )
                outcome = fuzz_target(target, signed, seconds, seed, Path(folder))
                outcomes.append(outcome)
                progress("  " + describe_one(outcome))
    return outcomes


def describe_one(outcome: Outcome) -> str:
    rate = outcome.sent / outcome.seconds if outcome.seconds else math.nan
    verdict = "ok" if outcome.passed else "FAILED"
    return (
        f"{outcome.target:<11} {'signed' if outcome.signed else 'unsigned':<8} "
        f"{outcome.sent:>11,} datagrams ({rate:,.0f}/s)  running={outcome.running} "
        f"status={outcome.answered_status} handler_failures={outcome.handler_failures} "
        f"forged_in_view={outcome.forged_in_view} "
        f"identities={outcome.identities_in_view}  {verdict}"
    )


def describe(outcomes: list[Outcome]) -> list[str]:
    lines = [describe_one(outcome) for outcome in outcomes]
    total = sum(outcome.sent for outcome in outcomes)
    refused_kinds = sum(
        count for o in outcomes if o.signed for kind, count in o.made.items() if kind in MUST_REFUSE
    )
    lines.append(
        f"total: {total:,} datagrams; crashed targets: "
        f"{sum(1 for o in outcomes if not o.running)}; forged, replayed, stale or unsigned "
        f"datagrams sent to signed targets: {refused_kinds:,}, identities of them in a view: "
        f"{sum(o.forged_in_view for o in outcomes)}"
    )
    for outcome in outcomes:
        if outcome.rejected:
            counted = ", ".join(f"{k} {v:,}" for k, v in sorted(outcome.rejected.items()))
            mode = "signed" if outcome.signed else "unsigned"
            lines.append(f"  {outcome.target} {mode} rejected: {counted}")
    return lines


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "fuzz",
        help="hostile datagrams at a live coordinator and node: no crash, no forgery gets in",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--seconds", type=float, default=DEFAULT_SECONDS, help="per target and mode (10)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--target", choices=("coordinator", "node", "both"), default="both", help="(both)"
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    parser.set_defaults(run=main)


def main(args: argparse.Namespace) -> int:
    if not args.seconds > 0:
        print("sllm bench fuzz: --seconds must be > 0")
        return 2
    targets = ("coordinator", "node") if args.target == "both" else (args.target,)
    quiet = args.json
    outcomes = run(
        args.seconds, args.seed, targets, lambda line: None if quiet else print(line, flush=True)
    )
    if args.json:
        print(json.dumps([dataclasses.asdict(o) | {"passed": o.passed} for o in outcomes]))
    else:
        print("\n".join(describe(outcomes)))
    return 0 if all(outcome.passed for outcome in outcomes) else 1
