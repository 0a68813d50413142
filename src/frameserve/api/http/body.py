"""Reading a request body within the size limits, shared by every HTTP endpoint."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect
from starlette.types import Receive

from frameserve.errors import PayloadTooLarge

HEADER_LENGTH = "Inference-Header-Content-Length"  # Triton's binary tensor extension


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


def check_json_size(size: int, limit: int, where: str = "request body") -> None:
    """Refuse a JSON document over ``limit`` bytes before it is parsed: parsed JSON takes
    several times its size in memory."""
    if size > limit:
        raise PayloadTooLarge(
            f"{where}: JSON of {size} bytes exceeds the limit of {limit} bytes "
            "(max_json_bytes, --max-json-mb)"
        )


def check_header_length(header_length: str | None, limit: int) -> None:
    """Refuse a declared ``Inference-Header-Content-Length`` over ``limit`` before the body
    is read (a malformed value is left to the decoder's own message)."""
    text = (header_length or "").strip()
    if text.isascii() and text.isdigit():  # not '²': str.isdigit accepts it, int() does not
        check_json_size(int(text), limit, HEADER_LENGTH)
