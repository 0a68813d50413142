"""Reading a request body within the size limit, shared by every HTTP endpoint."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect
from starlette.types import Receive

from frameserve.errors import PayloadTooLarge


def check_content_length(headers: Headers, limit: int) -> None:
    """Refuse a declared body over ``limit`` before reading any of it."""
    declared = headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(
            f"Content-Length: {declared} bytes exceeds the limit of {limit} bytes (max_body_bytes)"
        )


async def read_body(receive: Receive, headers: Headers, limit: int) -> bytes:
    """The request body, refusing more than ``limit`` bytes before reading all of it."""
    check_content_length(headers, limit)
    chunks: list[bytes] = []
    size = 0
    while True:  # chunked uploads carry no Content-Length, so count as the chunks arrive
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(
                f"request body: more than the limit of {limit} bytes (max_body_bytes)"
            )
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)  # one chunk: the same object, no copy
