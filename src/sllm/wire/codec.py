"""Bytes <-> messages for the UDP control plane, with no I/O of its own.

Why it exists: every datagram the runtime sends or receives goes through one `Codec`, so
that framing, size caps, validation and authentication live in one place and the runtime
only moves bytes. Like h11, the codec is fed bytes and a time and hands back messages;
the socket, the clock and the random nonce source belong to the caller.

Theory of operation
-------------------
Framing. One message is one datagram; nothing is ever split or reassembled. A datagram is
at most `MAX_DATAGRAM_BYTES`, envelope included, so it never needs IP fragmentation (a lost
fragment loses the whole datagram, and reassembly is a known attack surface; RFC 8085, 3.2).
The payload is a compact JSON object ``{"v": 1, "t": TYPE, "b": {fields}}``; nested
dataclasses become objects and tuples become lists. With the optional ``msgpack`` extra the
same document may be packed with MessagePack instead; both ends must be configured alike.

Versioning. ``v`` is checked before anything else in the document, and a signed envelope
carries the version again in its (authenticated) header. There is no negotiation: a peer
speaking another version is rejected with ``unknown_version`` and counted.

Validation order on decode, cheapest and most hostile first:

1. length, before a single byte is parsed (``oversized``);
2. the signed envelope when a secret is set: magic, version, HMAC, clock skew, replay,
   then whether it was stamped before the receiver started (``before_boot``);
3. parsing with a data-only parser, never pickle, marshal or eval (``bad_encoding``);
4. the document: version, type name, then the exact field set of that type
   (``missing_field`` / ``unknown_field``);
5. each field against its annotation (``bad_type``; a bool is not an int, an int is a
   float) and against the bounds in its metadata (``out_of_range``; floats must be finite;
   worker and node ids must match ``ID_PATTERN``; a string holding a lone surrogate is
   ``bad_encoding``).

Encoding runs the very same validators, so a message we send is one we would accept. The
validators are compiled once per class from the dataclass annotations and metadata, and a
field without bounds is a programming error found at import time.

HMAC envelope. With a cluster secret, every datagram is
``MAGIC | version (1 byte) | timestamp (float64) | nonce (uint64) | HMAC-SHA256 | payload``,
the MAC (RFC 2104) covering everything before it plus the payload. Verification (constant-time
compare) happens before the payload is parsed, so unauthenticated bytes never reach the
parser. Rule without a secret: a signed datagram is rejected (``bad_encoding``), never
decoded unverified, so a half-configured cluster fails loudly instead of silently trusting.

Replay window. A signed datagram is fresh when its timestamp lies within ``max_skew_s`` of
the receiver's ``now``. Inside that window each (timestamp, nonce) pair is accepted once;
pairs are remembered in arrival order and forgotten once their timestamp leaves the window,
and the lower edge of the window never moves backwards, even if ``now`` does. The memory is
hard-capped: when it is full, the oldest pair is forgotten and the window's lower edge is
raised past it, so under a flood older datagrams are rejected as ``stale`` rather than
ever accepted twice. This is the anti-replay scheme of Kerberos authenticators (RFC 4120,
3.2.3: a clock-skew window plus a cache of what was seen inside it).

Restarts. The replay cache lives in memory, so a restarted receiver starts with an empty
one, and a datagram captured before the restart would be fresh to it for up to
``max_skew_s``. The runtime therefore calls `Codec.start_listening` when it binds a
server's socket (coordinator, worker, node), and from then on a signed datagram stamped
more than `BOOT_SLACK_S` before that moment is refused as ``before_boot``: it was sent
before this receiver existed, so it was meant for an earlier process. Once ``max_skew_s``
has passed, the skew check refuses such timestamps anyway and this check never fires
again. Nothing is written to disk (the shipped containers run with read-only root
filesystems), and nothing changes on the wire. The cost: a sender whose clock runs behind
the receiver's by more than `BOOT_SLACK_S` has its datagrams refused as ``before_boot``
until its clock passes the receiver's start, that is for at most its own skew. A client
endpoint does not call it: it takes only replies matched to its own fresh request ids. A
boot epoch announced by the receiver was weighed and not taken: it needs a new envelope
field (a wire version bump) and a round trip before a sender's first datagram counts, for
fire-and-forget reports and for gossip with every peer.

Not handled yet: confidentiality (messages are signed, not encrypted); per-node keys and
key rotation (one shared secret, so any holder can speak for any node, and ``node_id`` is
not bound to the source address); the receiver's identity is not in the MAC, so two live
receivers that share the secret (say, two coordinators side by side) each accept the same
captured datagram once; compression; version negotiation.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import json
import math
import re
import struct
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields, is_dataclass
from types import ModuleType
from typing import Any, Final, Literal, get_args, get_origin, get_type_hints

from sllm.wire.messages import MESSAGE_TYPES, Message

WIRE_VERSION: Final = 1
# Ethernet MTU 1500 - 20 (IPv4) - 8 (UDP) = 1472, and 1452 over IPv6. 1400 also fits a
# VXLAN overlay (Kubernetes CNIs such as flannel run a 1450 MTU), so a datagram is never
# IP-fragmented anywhere we deploy. The cap includes the signing envelope.
MAX_DATAGRAM_BYTES: Final = 1400

# A fixed prefix that neither a JSON document ("{") nor a MessagePack map (0x80-0x8f,
# 0xde, 0xdf) can start with, so signed and plain datagrams are told apart by one compare.
MAGIC: Final = b"SLLM"
# version byte, then the sender's timestamp (IEEE float64) and nonce (uint64), big-endian.
_STAMP = struct.Struct("!BdQ")
_MAC_BYTES: Final = hashlib.sha256().digest_size  # 32: HMAC-SHA256, not truncated
_HEADER_BYTES: Final = len(MAGIC) + _STAMP.size  # what the MAC covers ahead of the payload
SIGNED_OVERHEAD_BYTES: Final = _HEADER_BYTES + _MAC_BYTES  # 53 bytes of the 1400
# A nonce is any 64-bit value; the caller draws it from its own seeded or secure random.
NONCE_MAX: Final = 2**64 - 1

# NTP keeps hosts within milliseconds; 30 s tolerates a badly synced container while
# keeping the replay cache small (it holds at most one window of datagrams).
DEFAULT_MAX_SKEW_S: Final = 30.0
# Hard cap on remembered (timestamp, nonce) pairs: about 8,000 signed datagrams per second
# for the default 30 s window, and about 45 MB at worst (measured ~165 bytes a pair). Only
# datagrams that passed the HMAC are remembered, so an outsider cannot fill it.
REPLAY_CACHE_MAX: Final = 2**18
# A receiver refuses signed datagrams stamped more than this before it started listening
# (``before_boot``). It only has to absorb clock skew, since a datagram sent before the
# socket was bound never reached it: NTP or chrony keep hosts within milliseconds, so
# 0.1 s is a hundredfold margin. It is also shorter than a process restart (the
# interpreter and imports alone take about 0.25 s), so a datagram captured while the
# previous process was still serving is older than the new process's start minus this.
BOOT_SLACK_S: Final = 0.1

# At most one log line per reject reason per this many seconds: a misconfigured or hostile
# peer can send thousands of bad datagrams a second, and the log must stay readable.
LOG_INTERVAL_S: Final = 10.0
# Longest excerpt of peer-controlled data quoted in an error detail, so a log line stays short.
DETAIL_EXCERPT_MAX: Final = 40

RejectReason = Literal[
    "oversized",
    "bad_encoding",
    "unknown_version",
    "unknown_type",
    "missing_field",
    "unknown_field",
    "bad_type",
    "out_of_range",
    "unsigned",
    "bad_signature",
    "stale",
    "replayed",
    "before_boot",
]
REJECT_REASONS: Final[tuple[RejectReason, ...]] = get_args(RejectReason)

WireFormat = Literal["json", "msgpack"]


class DecodeError(Exception):
    """The peer misbehaved: the datagram is dropped and counted under `reason`."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(reason, detail)
        self.reason: RejectReason = reason
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


class EncodeError(ValueError):
    """We misused the API: the message is out of its own bounds or too big for one datagram.

    `reason` uses the decode vocabulary (``oversized``, ``out_of_range``, ...), so a worker
    can react to ``oversized`` by sending a smaller report.
    """

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(reason, detail)
        self.reason: RejectReason = reason
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


# ---------------------------------------------------------------------------------------
# Validators, compiled once per dataclass from its annotations and field metadata.


class _Invalid(Exception):
    """A field failed; `path` is filled in on the way out, innermost part last."""

    def __init__(self, reason: RejectReason, message: str) -> None:
        self.reason: RejectReason = reason
        self.message = message
        self.path: list[str] = []

    def detail(self) -> str:
        where = "".join(p if p.startswith("[") else f".{p}" for p in reversed(self.path))
        return f"{where.lstrip('.')}: {self.message}" if where else self.message


_Check = Callable[[object], object]


def _excerpt(value: object) -> str:
    text = repr(value)
    return text if len(text) <= DETAIL_EXCERPT_MAX else text[: DETAIL_EXCERPT_MAX - 3] + "..."


def _bad_type(expected: str, value: object) -> _Invalid:
    return _Invalid("bad_type", f"expected {expected}, got {type(value).__name__}")


def _check_text(value: str) -> None:
    # JSON can carry lone surrogates ("\ud800"); they are not text and would break any
    # UTF-8 log or HTTP response downstream.
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise _Invalid("bad_encoding", "string is not valid Unicode text") from None


def _bounds(owner: str, meta: Mapping[str, Any]) -> tuple[float, float]:
    if "min" not in meta or "max" not in meta:
        raise TypeError(f"{owner}: a numeric wire field needs 'min' and 'max' metadata")
    return meta["min"], meta["max"]


def _str_check(owner: str, meta: Mapping[str, Any]) -> _Check:
    choices: tuple[str, ...] | None = meta.get("choices")
    max_len: int | None = meta.get("max_len")
    if choices is None and max_len is None:
        raise TypeError(f"{owner}: a str wire field needs 'max_len' or 'choices' metadata")
    pattern: str | None = meta.get("pattern")
    matches = None if pattern is None else re.compile(pattern).fullmatch

    def check(value: object) -> object:
        if not isinstance(value, str):
            raise _bad_type("str", value)
        if choices is not None and value not in choices:
            raise _Invalid("out_of_range", f"{_excerpt(value)} not one of {choices}")
        if max_len is not None and len(value) > max_len:
            raise _Invalid("out_of_range", f"{len(value)} characters > {max_len}")
        _check_text(value)
        if matches is not None and matches(value) is None:
            # Checked after the length, so the regular expression never sees a long string.
            raise _Invalid("out_of_range", f"{_excerpt(value)} does not match {pattern}")
        return value

    return check


def _int_check(owner: str, meta: Mapping[str, Any]) -> _Check:
    low, high = _bounds(owner, meta)

    def check(value: object) -> object:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _bad_type("int", value)
        if not low <= value <= high:
            raise _Invalid("out_of_range", f"{_excerpt(value)} not in [{low}, {high}]")
        return int(value)

    return check


def _float_check(owner: str, meta: Mapping[str, Any]) -> _Check:
    low, high = _bounds(owner, meta)

    def check(value: object) -> object:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _bad_type("float", value)
        try:
            number = float(value)
        except OverflowError:  # an int with hundreds of digits
            raise _Invalid("out_of_range", f"{_excerpt(value)} is too large") from None
        if not math.isfinite(number):
            raise _Invalid("out_of_range", f"{number} is not finite")
        if not low <= number <= high:
            raise _Invalid("out_of_range", f"{number} not in [{low}, {high}]")
        return number

    return check


def _bool_check(owner: str, meta: Mapping[str, Any]) -> _Check:
    def check(value: object) -> object:
        if not isinstance(value, bool):
            raise _bad_type("bool", value)
        return value

    return check


def _tier_map_check(owner: str, meta: Mapping[str, Any]) -> _Check:
    """dict[str, int]: `max_len` entries, keys up to `key_max_len`, values in [min, max]."""
    low, high = _bounds(owner, meta)
    if "max_len" not in meta or "key_max_len" not in meta:
        raise TypeError(f"{owner}: a dict wire field needs 'max_len' and 'key_max_len'")
    max_len: int = meta["max_len"]
    key_max_len: int = meta["key_max_len"]

    def entry(key: object, item: object) -> tuple[str, int]:
        if not isinstance(key, str):
            raise _bad_type("str key", key)
        if len(key) > key_max_len:
            raise _Invalid("out_of_range", f"key of {len(key)} characters > {key_max_len}")
        _check_text(key)
        if isinstance(item, bool) or not isinstance(item, int):
            error = _bad_type("int", item)
        elif not low <= item <= high:
            error = _Invalid("out_of_range", f"{_excerpt(item)} not in [{low}, {high}]")
        else:
            return key, int(item)
        error.path.append(f"[{_excerpt(key)}]")
        raise error

    def check(value: object) -> object:
        if not isinstance(value, dict):
            raise _bad_type("object", value)
        if len(value) > max_len:
            raise _Invalid("out_of_range", f"{len(value)} entries > {max_len}")
        for key, item in value.items():
            # Fast path for the common case (a report names up to 24 models, every second);
            # anything unusual goes through `entry`, which normalizes or says what is wrong.
            if not (
                type(key) is str
                and len(key) <= key_max_len
                and key.isascii()
                and type(item) is int
                and low <= item <= high
            ):
                return dict(entry(k, v) for k, v in value.items())
        return dict(value)

    return check


def _nested_check(owner: str, meta: Mapping[str, Any], item_spec: _Spec) -> _Check:
    """tuple[Nested, ...]: a list of at most `max_len` objects, each a Nested."""
    if "max_len" not in meta:
        raise TypeError(f"{owner}: a tuple wire field needs 'max_len' metadata")
    max_len: int = meta["max_len"]

    def check(value: object) -> object:
        if not isinstance(value, list):
            raise _bad_type("list", value)
        if len(value) > max_len:
            raise _Invalid("out_of_range", f"{len(value)} items > {max_len}")
        items = []
        for index, item in enumerate(value):
            try:
                items.append(item_spec.build(item))
            except _Invalid as error:
                error.path.append(f"[{index}]")
                raise
        return tuple(items)

    return check


_SCALAR_CHECKS: dict[object, Callable[[str, Mapping[str, Any]], _Check]] = {
    str: _str_check,
    int: _int_check,
    float: _float_check,
    bool: _bool_check,
}


@dataclass(frozen=True, slots=True)
class _Spec:
    """How to check, build and flatten one dataclass."""

    cls: type[Any]
    checks: tuple[tuple[str, _Check], ...]
    names: frozenset[str]
    nested: Mapping[str, _Spec]  # tuple-of-dataclass fields, by name

    def build(self, body: object) -> Any:
        """Validate a parsed object and construct the dataclass; raises _Invalid."""
        if not isinstance(body, dict):
            raise _bad_type("object", body)
        if body.keys() != self.names:
            for name, _ in self.checks:
                if name not in body:
                    raise _Invalid("missing_field", f"missing {name!r}")
            extra = sorted(_excerpt(key) for key in body.keys() - self.names)
            raise _Invalid("unknown_field", f"unknown {', '.join(extra)}")
        values: dict[str, object] = {}
        for name, check in self.checks:
            try:
                values[name] = check(body[name])
            except _Invalid as error:
                error.path.append(name)
                raise
        return self.cls(**values)

    def flatten(self, obj: object) -> dict[str, object]:
        """The plain dict/list form of a dataclass, as it goes on the wire (not validated)."""
        body: dict[str, object] = {}
        for name, _ in self.checks:
            value = getattr(obj, name)
            item_spec = self.nested.get(name)
            if item_spec is not None and isinstance(value, tuple | list):
                value = [
                    item_spec.flatten(item) if isinstance(item, item_spec.cls) else item
                    for item in value
                ]
            elif isinstance(value, dict):
                value = dict(value)
            body[name] = value
        return body


_SPECS: dict[type[Any], _Spec] = {}


def _spec_for(cls: type[Any]) -> _Spec:
    """The compiled validator of `cls`, built on first use and cached for the process."""
    spec = _SPECS.get(cls)
    if spec is None:
        spec = _SPECS[cls] = _compile(cls)
    return spec


def _compile(cls: type[Any]) -> _Spec:
    hints = get_type_hints(cls)
    checks: list[tuple[str, _Check]] = []
    nested: dict[str, _Spec] = {}
    for f in fields(cls):
        owner = f"{cls.__name__}.{f.name}"
        hint = hints[f.name]
        origin, args = get_origin(hint), get_args(hint)
        if hint in _SCALAR_CHECKS:
            check = _SCALAR_CHECKS[hint](owner, f.metadata)
        elif origin is dict and args == (str, int):
            check = _tier_map_check(owner, f.metadata)
        elif (
            origin is tuple
            and len(args) == 2
            and args[1] is Ellipsis
            and isinstance(args[0], type)
            and is_dataclass(args[0])
        ):
            nested[f.name] = _spec_for(args[0])
            check = _nested_check(owner, f.metadata, nested[f.name])
        else:
            raise TypeError(f"{owner}: the codec has no wire form for {hint!r}")
        checks.append((f.name, check))
    return _Spec(cls, tuple(checks), frozenset(name for name, _ in checks), nested)


for _cls in MESSAGE_TYPES.values():  # compile every validator now: a bad field fails import
    _spec_for(_cls)

_DOCUMENT_KEYS: Final = frozenset({"v", "t", "b"})


def _read_document(document: object) -> Message:
    if not isinstance(document, dict):
        raise DecodeError("bad_encoding", f"expected an object, got {type(document).__name__}")
    if "v" not in document:
        raise DecodeError("missing_field", "missing 'v'")
    version = document["v"]
    if type(version) is not int or version != WIRE_VERSION:
        raise DecodeError("unknown_version", f"version {_excerpt(version)}, expected 1")
    if document.keys() != _DOCUMENT_KEYS:
        missing = sorted(_DOCUMENT_KEYS - document.keys())
        if missing:
            raise DecodeError("missing_field", f"missing {missing[0]!r}")
        extra = sorted(_excerpt(key) for key in document.keys() - _DOCUMENT_KEYS)
        raise DecodeError("unknown_field", f"unknown {', '.join(extra)}")
    name = document["t"]
    if not isinstance(name, str):
        raise DecodeError("bad_type", f"t: expected str, got {type(name).__name__}")
    cls = MESSAGE_TYPES.get(name)
    if cls is None:
        raise DecodeError("unknown_type", f"unknown type {_excerpt(name)}")
    try:
        message: Message = _spec_for(cls).build(document["b"])
    except _Invalid as error:
        raise DecodeError(error.reason, f"{name}: {error.detail()}") from None
    return message


# ---------------------------------------------------------------------------------------
# Formats: a small table of (dumps, loads). loads raises ValueError on any malformed input.


def _unique_keys(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    # Reject {"port": 1, "port": 2}: parsers disagree on which one wins.
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate key in object")
    return result


_JSON_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, allow_nan=False)
_JSON_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys)


def _json_dumps(document: object) -> bytes:
    return _JSON_ENCODER.encode(document).encode("ascii")


def json_size(value: object) -> int:
    """Bytes of `value` in the wire's compact JSON (msgpack is never larger)."""
    return len(_JSON_ENCODER.encode(value))


def wire_body(record: object) -> dict[str, object]:
    """A message, or a record nested in one, in the plain form it takes on the wire."""
    return _spec_for(type(record)).flatten(record)


def _json_loads(data: bytes) -> object:
    try:
        return _JSON_DECODER.decode(data.decode("utf-8"))
    except RecursionError:  # "[[[[..." nested deeper than the interpreter allows
        raise ValueError("nested too deeply") from None


@dataclass(frozen=True, slots=True)
class _Format:
    dumps: Callable[[object], bytes]
    loads: Callable[[bytes], object]


_FORMATS: dict[str, _Format] = {"json": _Format(_json_dumps, _json_loads)}

_msgpack: ModuleType | None
try:  # optional extra: pip install 'sllm[msgpack]'
    _msgpack = importlib.import_module("msgpack")
except ImportError:
    _msgpack = None

if _msgpack is not None:
    _mp = _msgpack

    def _msgpack_dumps(document: object) -> bytes:
        packed: bytes = _mp.packb(document, use_bin_type=True)
        return packed

    def _msgpack_loads(data: bytes) -> object:
        try:
            result: object = _mp.unpackb(
                data, raw=False, strict_map_key=True, object_pairs_hook=_unique_keys
            )
        except Exception as exc:  # msgpack's errors do not share one base class
            raise ValueError(str(exc)) from None
        return result

    _FORMATS["msgpack"] = _Format(_msgpack_dumps, _msgpack_loads)

AVAILABLE_FORMATS: Final[tuple[str, ...]] = tuple(_FORMATS)


# ---------------------------------------------------------------------------------------


class Codec:
    """Encodes and decodes control-plane datagrams; one per socket.

    Pure apart from the replay cache: the caller passes the time and the nonce. Not
    thread-safe (one event loop owns it).
    """

    def __init__(
        self,
        secret: bytes | None = None,
        max_skew_s: float = DEFAULT_MAX_SKEW_S,
        format: WireFormat = "json",
        replay_cache_max: int = REPLAY_CACHE_MAX,
    ) -> None:
        if secret is not None and not secret:
            raise ValueError("secret must be non-empty (use None for no signing)")
        if not (math.isfinite(max_skew_s) and max_skew_s > 0):
            raise ValueError(f"max_skew_s must be positive and finite, got {max_skew_s}")
        if replay_cache_max < 1:
            raise ValueError(f"replay_cache_max must be at least 1, got {replay_cache_max}")
        if format not in _FORMATS:
            raise ValueError(
                f"wire format {format!r} is not available (have {AVAILABLE_FORMATS}; "
                "msgpack needs pip install 'sllm[msgpack]')"
            )
        self._secret = secret
        self._max_skew_s = max_skew_s
        self._format_name: WireFormat = format
        self._format = _FORMATS[format]
        self._replay_cache_max = replay_cache_max
        # (timestamp, nonce) pairs of accepted signed datagrams, in arrival order.
        self._seen: set[tuple[float, int]] = set()
        self._seen_order: deque[tuple[float, int]] = deque()
        # Lower edge of the replay window: never moves backwards.
        self._horizon = -math.inf
        # Signed datagrams stamped before this were sent before we listened: see
        # `start_listening`. Minus infinity until then (a codec used only to send).
        self._started_floor = -math.inf

    @property
    def format(self) -> WireFormat:
        return self._format_name

    @property
    def secret(self) -> bytes | None:
        return self._secret

    @property
    def signed(self) -> bool:
        return self._secret is not None

    @property
    def replay_cache_size(self) -> int:
        return len(self._seen)

    def start_listening(self, now: float) -> None:
        """Refuse, as ``before_boot``, signed datagrams stamped before `now` - BOOT_SLACK_S.

        Called with the wall clock when the socket is bound, so that a datagram captured
        before a restart cannot be replayed to the new process, whose replay cache is
        empty. The floor only ever rises.
        """
        if not math.isfinite(now):
            raise ValueError(f"now must be finite, got {now}")
        self._started_floor = max(self._started_floor, now - BOOT_SLACK_S)

    def encode(self, message: Message, now: float, nonce: int) -> bytes:
        """One datagram for `message`, signed with timestamp `now` and `nonce` if a secret is set.

        Raises EncodeError when the message is out of its own bounds or the datagram
        would exceed MAX_DATAGRAM_BYTES.
        """
        cls = type(message)
        name = getattr(cls, "TYPE", None)
        if not isinstance(name, str) or MESSAGE_TYPES.get(name) is not cls:
            raise EncodeError("unknown_type", f"{cls.__name__} is not a registered wire message")
        if not math.isfinite(now):
            raise EncodeError("out_of_range", f"timestamp {now} is not finite")
        if isinstance(nonce, bool) or not isinstance(nonce, int) or not 0 <= nonce <= NONCE_MAX:
            raise EncodeError("out_of_range", f"nonce {nonce!r} is not a 64-bit unsigned int")
        spec = _spec_for(cls)
        body = spec.flatten(message)
        try:
            spec.build(body)  # the decoder's validator, so we never send what we would reject
        except _Invalid as error:
            raise EncodeError(error.reason, f"{name}: {error.detail()}") from None
        payload = self._format.dumps({"v": WIRE_VERSION, "t": name, "b": body})
        datagram = payload if self._secret is None else self._seal(payload, now, nonce)
        if len(datagram) > MAX_DATAGRAM_BYTES:
            raise EncodeError("oversized", f"{name}: {len(datagram)} bytes > {MAX_DATAGRAM_BYTES}")
        return datagram

    def decode(self, data: bytes, now: float) -> Message:
        """The message in one received datagram; raises DecodeError for anything else.

        `now` is the receiver's clock, in the senders' timebase (wall-clock seconds); a
        non-finite `now` is our bug, not the peer's, and raises ValueError.
        """
        if not math.isfinite(now):
            raise ValueError(f"now must be finite, got {now}")
        if len(data) > MAX_DATAGRAM_BYTES:
            raise DecodeError("oversized", f"{len(data)} bytes > {MAX_DATAGRAM_BYTES}")
        payload = self._open(data, now)
        try:
            document = self._format.loads(payload)
        except ValueError as exc:
            raise DecodeError("bad_encoding", _excerpt(str(exc))) from None
        return _read_document(document)

    def seal(self, payload: bytes, now: float, nonce: int) -> bytes:
        """`payload` in a signed envelope as it is, unvalidated: for tools that must send what
        `encode` refuses to (the fuzz benchmark signs malformed documents with it)."""
        if self._secret is None:
            raise ValueError("no secret to sign with")
        return self._seal(payload, now, nonce)

    # -- signing ---------------------------------------------------------------------

    def _seal(self, payload: bytes, now: float, nonce: int) -> bytes:
        assert self._secret is not None
        header = MAGIC + _STAMP.pack(WIRE_VERSION, now, nonce)
        mac = hmac.new(self._secret, header, hashlib.sha256)
        mac.update(payload)
        return header + mac.digest() + payload

    def _open(self, data: bytes, now: float) -> bytes:
        """The payload of a datagram, after the envelope checks that the secret calls for."""
        signed = data.startswith(MAGIC)
        if self._secret is None:
            if signed:
                raise DecodeError("bad_encoding", "signed datagram, but no secret is configured")
            return data
        if not signed:
            raise DecodeError("unsigned", "datagram has no signed envelope")
        if len(data) <= len(MAGIC):
            raise DecodeError("bad_encoding", "truncated envelope")
        if data[len(MAGIC)] != WIRE_VERSION:
            raise DecodeError("unknown_version", f"envelope version {data[len(MAGIC)]}")
        if len(data) < SIGNED_OVERHEAD_BYTES:
            raise DecodeError("bad_encoding", "truncated envelope")
        payload = data[SIGNED_OVERHEAD_BYTES:]
        expected = hmac.new(self._secret, data[:_HEADER_BYTES], hashlib.sha256)
        expected.update(payload)
        if not hmac.compare_digest(data[_HEADER_BYTES:SIGNED_OVERHEAD_BYTES], expected.digest()):
            raise DecodeError("bad_signature", "HMAC does not match")
        _, timestamp, nonce = _STAMP.unpack_from(data, len(MAGIC))
        self._admit(timestamp, nonce, now)
        return payload

    def _admit(self, timestamp: float, nonce: int, now: float) -> None:
        """Accept each authenticated (timestamp, nonce) once within the skew window."""
        if not math.isfinite(timestamp):
            raise DecodeError("stale", f"timestamp {timestamp} is not finite")
        self._horizon = max(self._horizon, now - self._max_skew_s)
        order, seen = self._seen_order, self._seen
        while order and order[0][0] < self._horizon:
            seen.discard(order.popleft())
        if timestamp < self._horizon or timestamp - now > self._max_skew_s:
            raise DecodeError(
                "stale", f"timestamp {timestamp:.3f} is {now - timestamp:+.3f} s from now"
            )
        if timestamp < self._started_floor:  # only within max_skew_s of the start
            raise DecodeError(
                "before_boot",
                f"timestamp {timestamp:.3f} is {self._started_floor + BOOT_SLACK_S - timestamp:.3f}"
                " s before this receiver started",
            )
        key = (timestamp, nonce)
        if key in seen:
            raise DecodeError("replayed", f"timestamp {timestamp:.3f} nonce {nonce} seen before")
        seen.add(key)
        order.append(key)
        if len(order) > self._replay_cache_max:
            oldest = order.popleft()
            seen.discard(oldest)
            self._horizon = max(self._horizon, math.nextafter(oldest[0], math.inf))


# ---------------------------------------------------------------------------------------


class RejectCounter:
    """Counts dropped datagrams by key and rate-limits the log lines about them.

    The keys are reject reasons for datagrams the codec refused (the default), or message
    types for valid messages a service has no use for (`Endpoint.unexpected`): either
    way a peer can send thousands a second, and each key gets at most one line every
    `log_interval_s`, saying how many went unlogged since. `keys` start at zero, so a
    metric shows them before the first drop; other keys are counted from their first.

    Pure: the runtime passes `now`, asks `record`, and logs when told to.
    """

    def __init__(
        self, log_interval_s: float = LOG_INTERVAL_S, keys: Iterable[str] = REJECT_REASONS
    ) -> None:
        self.log_interval_s = log_interval_s
        self.counts: dict[str, int] = dict.fromkeys(keys, 0)
        self.total = 0
        self._last_logged: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def should_log(self, reason: str, now: float) -> bool:
        """Whether a line about `reason` (any key) may be logged at `now` (changes nothing)."""
        last = self._last_logged.get(reason)
        return last is None or now - last >= self.log_interval_s

    def record(self, reason: str, now: float) -> int | None:
        """Count one reject; the number suppressed since the last line if one is due now.

        None means "do not log this one"; an int (possibly 0) means "log one line, and say
        how many earlier rejects for this reason went unlogged".
        """
        self.counts[reason] = self.counts.get(reason, 0) + 1
        self.total += 1
        if not self.should_log(reason, now):
            self._suppressed[reason] = self._suppressed.get(reason, 0) + 1
            return None
        self._last_logged[reason] = now
        return self._suppressed.pop(reason, 0)
