"""The credential of a proxied request: the front door signs it, the worker checks it.

Why it exists: a worker's HTTP port serves completions. Anyone who reaches it directly
would skip the front door's API keys, its placement and its queue limits. With a cluster
secret (CLUSTER_SECRET), the front door signs every request it proxies, and a worker
serves only signed requests on its model routes (`sllm.api.worker_api.RequireCredential`).
Both sides import this module; it uses only the standard library.

Theory of operation:

- **Key.** ``HMAC-SHA256(CLUSTER_SECRET, "sllm worker http")`` (`worker_http_key`). The
  datagram codec keys its MACs with the secret itself, so the label separates the two
  domains: a MAC taken from one plane is never valid on the other (RFC 2104 keys, with the
  derivation of HKDF-Expand's single block, RFC 5869).
- **What is signed.** The method, the path, a timestamp, the request id the worker will use
  as its key, and the SHA-256 of the body, one per line (`_signed_text`). A credential
  therefore serves one request to one route with one body, and nothing else.
- **The header.** ``x-sllm-credential: v1 <timestamp> <hex HMAC>``. The version lets a
  later scheme sit beside this one.
- **Freshness.** The timestamp is the front door's wall clock; the worker accepts it within
  `MAX_SKEW_S` of its own, the bound the wire codec uses for datagrams.
- **Comparison** is in constant time (`hmac.compare_digest`).

Not handled yet: replay inside the skew window (a captured request can be sent again for
`MAX_SKEW_S`, though not while the first runs: the worker refuses an id in use; nothing is
encrypted either, so whoever can capture a request can read its answer), per-worker keys,
key rotation.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from typing import Final, Literal

from sllm.wire.codec import DEFAULT_MAX_SKEW_S

HEADER: Final = "x-sllm-credential"
VERSION: Final = "v1"
# The label that derives the HTTP key from the cluster secret (see the module's docstring).
KEY_LABEL: Final = b"sllm worker http"
# The same bound as datagrams: NTP keeps hosts within milliseconds, and 30 s tolerates a
# badly synced container.
MAX_SKEW_S: Final = DEFAULT_MAX_SKEW_S

RefusalReason = Literal["missing", "malformed", "stale", "bad_signature"]


class CredentialRefused(Exception):
    """The request's credential is missing, malformed, stale or does not match."""

    def __init__(self, reason: RefusalReason) -> None:
        super().__init__(reason)
        self.reason: RefusalReason = reason


def worker_http_key(secret: bytes) -> bytes:
    """The key of proxied requests, derived from the cluster secret."""
    if not secret:
        raise ValueError("the cluster secret must not be empty")
    return hmac.new(secret, KEY_LABEL, hashlib.sha256).digest()


def sign(*, key: bytes, method: str, path: str, request_id: str, body: bytes, now: float) -> str:
    """The credential header's value for one request, made at wall-clock time `now`."""
    timestamp = f"{now:.3f}"
    mac = _mac(key, method, path, timestamp, request_id, body)
    return f"{VERSION} {timestamp} {mac}"


def check(
    *,
    key: bytes,
    credential: str,
    method: str,
    path: str,
    request_id: str,
    body: bytes,
    now: float,
) -> None:
    """Return if `credential` signs this very request and is fresh at `now`; raise
    `CredentialRefused` otherwise."""
    if not credential:
        raise CredentialRefused("missing")
    parts = credential.split(" ")
    if len(parts) != 3 or parts[0] != VERSION:
        raise CredentialRefused("malformed")
    _, timestamp, given = parts
    try:
        sent_at = float(timestamp)
    except ValueError:
        raise CredentialRefused("malformed") from None
    if not math.isfinite(sent_at):
        raise CredentialRefused("malformed")
    if abs(now - sent_at) > MAX_SKEW_S:
        raise CredentialRefused("stale")
    expected = _mac(key, method, path, timestamp, request_id, body)
    if not hmac.compare_digest(given.encode("latin-1", "replace"), expected.encode()):
        raise CredentialRefused("bad_signature")


def _signed_text(method: str, path: str, timestamp: str, request_id: str, body: bytes) -> bytes:
    digest = hashlib.sha256(body).hexdigest()
    return "\n".join((VERSION, method.upper(), path, timestamp, request_id, digest)).encode()


def _mac(key: bytes, method: str, path: str, timestamp: str, request_id: str, body: bytes) -> str:
    signed = _signed_text(method, path, timestamp, request_id, body)
    return hmac.new(key, signed, hashlib.sha256).hexdigest()
