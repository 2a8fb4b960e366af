"""OpenAI streaming chunks as server-sent events, and folding a stream into one response.

Workers always stream; the front door forwards the events to a streaming client, or
folds them into one JSON body with `usage` for a client that asked for ``stream: false``.
One module writes and reads the chunk format, so the two ends cannot disagree.

As OpenAI streams: a chat stream's first delta carries ``role: "assistant"`` and no
other does; ``usage`` comes only when the client asked for it
(``stream_options.include_usage``), in a last chunk of its own with empty ``choices``,
after the chunk with ``finish_reason``. The front door asks the worker for that chunk
when it folds a stream (`Folded`), whatever the client asked.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["chat", "completion"]
DONE = b"data: [DONE]\n\n"


def chunk(
    kind: Kind,
    request_id: str,
    model: str,
    text: str,
    finish_reason: str | None = None,
    *,
    first: bool = False,
) -> bytes:
    """One streamed chunk as an SSE event; a chat stream's `first` carries the role."""
    if kind == "chat":
        delta: dict[str, str] = {"role": "assistant"} if first else {}
        if text or first:
            delta["content"] = text
        choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish_reason}
    else:
        choice = {"index": 0, "text": text, "finish_reason": finish_reason, "logprobs": None}
    return _event(_envelope(kind, request_id, model, [choice]))


def usage_chunk(kind: Kind, request_id: str, model: str, counts: dict[str, int]) -> bytes:
    """The last chunk of a stream whose client asked for usage: no choices, only `usage`."""
    body = _envelope(kind, request_id, model, [])
    body["usage"] = counts
    return _event(body)


def _envelope(
    kind: Kind, request_id: str, model: str, choices: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "id": request_id,
        "object": "chat.completion.chunk" if kind == "chat" else "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
    }


def _event(body: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


# What only a usage chunk holds, as `usage_chunk` writes it (compact JSON, choices before
# usage): empty choices. A token's text is a JSON string, so its quotes are escaped and it
# cannot hold these bytes.
_USAGE_MARK = b'"choices":[],'
# What only a chunk with a token holds: a choice not finished yet.
_TOKEN_MARK = b'"finish_reason":null'


def holds_token(run: bytes) -> bool:
    """Whether a run of events holds a token (not only the finish, usage or [DONE])."""
    return _TOKEN_MARK in run


def holds_usage(run: bytes) -> bool:
    return _USAGE_MARK in run


def usage_in(run: bytes) -> dict[str, int] | None:
    """The ``usage`` of the usage chunk in a run of events, if it holds one."""
    for event in run.split(b"\n\n"):
        if _USAGE_MARK in event:
            try:
                payload = parse(event)
            except ValueError:  # not JSON: a broken worker; its tokens go uncounted
                return None
            found = payload.get("usage") if payload is not None else None
            if isinstance(found, dict):
                return found
    return None


def without_usage(run: bytes) -> bytes:
    """A run of events less its usage chunk, for a client that did not ask for usage."""
    return b"\n\n".join(event for event in run.split(b"\n\n") if _USAGE_MARK not in event)


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


@dataclass(slots=True)
class Folded:
    """A whole stream folded: its text, how it finished, its usage, or its error."""

    text: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    usage: dict[str, int] | None = None
    error: dict[str, Any] | None = None
    done: bool = False

    def feed(self, event: dict[str, Any]) -> None:
        if "error" in event:
            self.error = event["error"]
            return
        for choice in event.get("choices", []):
            self.text.append(choice.get("delta", {}).get("content") or choice.get("text") or "")
            self.finish_reason = choice.get("finish_reason") or self.finish_reason
        if event.get("usage"):
            self.usage = event["usage"]

    def response(self, kind: Kind, request_id: str, model: str) -> dict[str, Any]:
        text = "".join(self.text)
        if kind == "chat":
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": self.finish_reason,
            }
            object_name = "chat.completion"
        else:
            choice = {
                "index": 0,
                "text": text,
                "finish_reason": self.finish_reason,
                "logprobs": None,
            }
            object_name = "text_completion"
        return {
            "id": request_id,
            "object": object_name,
            "created": int(time.time()),
            "model": model,
            "choices": [choice],
            "usage": self.usage or usage(0, 0),
        }


def events(buffer: bytearray) -> list[bytes]:
    """Complete SSE events taken off the front of `buffer` (the rest stays for later)."""
    found: list[bytes] = []
    while True:
        end = buffer.find(b"\n\n")
        if end < 0:
            return found
        found.append(bytes(buffer[: end + 2]))
        del buffer[: end + 2]


def parse(event: bytes) -> dict[str, Any] | None:
    """The JSON payload of a ``data:`` event; None for ``[DONE]`` or a comment."""
    for line in event.splitlines():
        if line.startswith(b"data:"):
            payload = line[5:].strip()
            if payload == b"[DONE]":
                return None
            value = json.loads(payload)
            return value if isinstance(value, dict) else None
    return None
