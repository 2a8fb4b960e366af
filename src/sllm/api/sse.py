"""OpenAI streaming chunks as server-sent events, and folding a stream into one response.

Workers always stream; the front door forwards the events to a streaming client, or
folds them into one JSON body with `usage` for a client that asked for ``stream: false``.
One module writes and reads the chunk format, so the two ends cannot disagree.

As OpenAI streams: a chat stream's first delta carries ``role: "assistant"`` and no
other does; ``usage`` comes only when the client asked for it
(``stream_options.include_usage``), in a last chunk of its own with empty ``choices``,
after the chunk with ``finish_reason``. The front door asks the worker for that chunk
when it folds a stream (`Folded`), whatever the client asked.

Log probabilities, when asked for, ride on the chunk of the tokens they belong to, in
OpenAI's two shapes: a chat choice's ``logprobs.content`` (one entry per token, with its
UTF-8 ``bytes`` and ``top_logprobs``), a legacy completion's ``logprobs`` lists
(``tokens``, ``token_logprobs``, ``top_logprobs`` as maps, ``text_offset`` into the whole
text). Folding a stream joins them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from sllm.engines.base import TokenLogprob

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
    logprobs: Sequence[TokenLogprob] = (),
    text_offset: int = 0,
) -> bytes:
    """One streamed chunk as an SSE event; a chat stream's `first` carries the role.

    `logprobs` are the chunk's tokens' (none: the request asked for none); `text_offset`
    is where this chunk's text starts in the whole completion."""
    if kind == "chat":
        delta: dict[str, str] = {"role": "assistant"} if first else {}
        if text or first:
            delta["content"] = text
        choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish_reason}
        if logprobs:
            choice["logprobs"] = {"content": chat_logprobs(logprobs)}
    else:
        shown = completion_logprobs(logprobs, text_offset) if logprobs else None
        choice = {"index": 0, "text": text, "finish_reason": finish_reason, "logprobs": shown}
    return _event(_envelope(kind, request_id, model, [choice]))


def chat_logprobs(logprobs: Sequence[TokenLogprob]) -> list[dict[str, Any]]:
    """A chat choice's ``logprobs.content`` entries, one per token."""
    return [
        {
            "token": entry.token,
            "logprob": entry.logprob,
            "bytes": list(entry.token.encode()),
            "top_logprobs": [
                {"token": token, "logprob": logprob, "bytes": list(token.encode())}
                for token, logprob in entry.top
            ],
        }
        for entry in logprobs
    ]


def completion_logprobs(logprobs: Sequence[TokenLogprob], text_offset: int) -> dict[str, Any]:
    """A legacy completion choice's ``logprobs`` lists; offsets count from `text_offset`."""
    offsets = []
    for entry in logprobs:
        offsets.append(text_offset)
        text_offset += len(entry.token)
    return {
        "tokens": [entry.token for entry in logprobs],
        "token_logprobs": [entry.logprob for entry in logprobs],
        "top_logprobs": [dict(entry.top) for entry in logprobs],
        "text_offset": offsets,
    }


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
    # The chunks' log probabilities, joined: a chat's ``content`` entries, or a legacy
    # completion's lists by name. Empty when none were asked for.
    logprobs: dict[str, list[Any]] = field(default_factory=dict)

    def feed(self, event: dict[str, Any]) -> None:
        if "error" in event:
            self.error = event["error"]
            return
        for choice in event.get("choices", []):
            self.text.append(choice.get("delta", {}).get("content") or choice.get("text") or "")
            self.finish_reason = choice.get("finish_reason") or self.finish_reason
            found = choice.get("logprobs")
            if isinstance(found, dict):
                for name, values in found.items():
                    if isinstance(values, list):
                        self.logprobs.setdefault(name, []).extend(values)
        if event.get("usage"):
            self.usage = event["usage"]

    def response(self, kind: Kind, request_id: str, model: str) -> dict[str, Any]:
        text = "".join(self.text)
        if kind == "chat":
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": self.finish_reason,
                "logprobs": self.logprobs or None,
            }
            object_name = "chat.completion"
        else:
            choice = {
                "index": 0,
                "text": text,
                "finish_reason": self.finish_reason,
                "logprobs": self.logprobs or None,
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
