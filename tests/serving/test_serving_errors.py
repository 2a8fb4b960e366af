"""Small pieces of the HTTP answers: a 405 keeps its ``Allow`` header in OpenAI's error
shape, and the stream helpers that find a worker's usage chunk and its tokens."""

from __future__ import annotations

from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from sllm.api import sse
from sllm.runtime.http import create_app
from sllm.runtime.monitoring import Readiness


def test_a_405_says_which_methods_the_path_takes() -> None:
    app = create_app("test", CollectorRegistry(), lambda: Readiness(True))
    with TestClient(app) as client:
        answer = client.post("/healthz")
    assert answer.status_code == 405
    assert answer.headers["allow"] == "GET"
    assert answer.json()["error"]["code"] == "method_not_allowed"


def test_the_usage_chunk_and_tokens_are_told_apart_in_a_run() -> None:
    token = sse.chunk("chat", "r", "m", 'a "quoted" "choices":[], token', first=True)
    finish = sse.chunk("chat", "r", "m", "", "length")
    counts = sse.usage(3, 1)
    usage = sse.usage_chunk("chat", "r", "m", counts)
    run = token + finish + usage + sse.DONE
    assert sse.holds_token(token) and not sse.holds_token(finish + usage + sse.DONE)
    assert not sse.holds_usage(token)  # a token's text cannot look like the usage chunk
    assert sse.usage_in(run) == counts and sse.usage_in(token + finish) is None
    assert sse.without_usage(run) == token + finish + sse.DONE
    assert sse.without_usage(usage) == b""
