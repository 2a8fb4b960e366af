"""Reading a request's whole body: bounded in size, and aware of a client that leaves.

The front door reads the body of every completion it serves, and a worker reads the
body of every request it checks a credential on (the credential signs the body): both
read it here, under the one size limit.
"""

from __future__ import annotations

from starlette.types import Receive

from sllm.api.disconnect import ClientGone
from sllm.api.errors import ApiError

# A body larger than this is refused (413) before it is parsed: a prompt of the longest
# context any catalog model takes is well under it.
MAX_BODY_BYTES = 4 * 1024 * 1024


async def read_body(receive: Receive) -> bytes:
    """The whole request body; `ClientGone` if the client leaves first."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ApiError(
                413, f"the request body is over {MAX_BODY_BYTES} bytes", code="request_too_large"
            )
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
