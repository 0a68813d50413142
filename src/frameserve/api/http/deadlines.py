"""Deadlines for slow clients: request headers and bodies must arrive in time.

uvicorn (0.54) closes idle keep-alive connections (``timeout_keep_alive``) but sets no deadline
on a request's headers, nor on its body: a client that opens connections and sends a byte every
few seconds holds each forever. ``DeadlineProtocol`` closes a connection whose headers are not
complete ``request_timeout_s`` after the request began, or that sends more than
``MAX_HEADER_BYTES`` of them (431); ``bounded_receive`` answers 408 when the body is not in by
its deadline (``request_timeout_s``, plus a second per ``MIN_BODY_RATE`` bytes it declares, so a
large upload on a slow link still gets through).

Both run on the server's event loop.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.types import Message, Receive, Scope
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from frameserve.errors import RequestTimeout

MAX_HEADER_BYTES = 64 * 1024  # the request line and every header together
MIN_BODY_RATE = 1 << 20  # bytes a second a declared body is given on top of the timeout


class DeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header deadline and a header size limit.

    ``header_timeout_s`` is set on a subclass by ``protocol_class``.
    """

    header_timeout_s: float | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._header_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        self._arm()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def _count(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > MAX_HEADER_BYTES and not self.transport.is_closing():
            self._disarm()
            body = f"request headers exceed the limit of {MAX_HEADER_BYTES} bytes".encode()
            self.transport.write(
                b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain\r\n"
                b"content-length: "
                + str(len(body)).encode()
                + b"\r\nconnection: close\r\n\r\n"
                + body
            )
            self.transport.close()

    def _arm(self) -> None:
        self._disarm()
        if self.header_timeout_s is not None:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._expire)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _expire(self) -> None:
        """Headers late: close (the client has not finished a request to answer)."""
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()


def protocol_class(header_timeout_s: float | None) -> type[DeadlineProtocol]:
    """A ``DeadlineProtocol`` with its header deadline (uvicorn takes a class, not options)."""
    return type("DeadlineProtocol", (DeadlineProtocol,), {"header_timeout_s": header_timeout_s})


def bounded_receive(scope: Scope, receive: Receive, timeout_s: float) -> Receive:
    """``receive`` whose body messages must all arrive by the body's deadline (408 after).

    After the last body message it passes through: streaming responses wait on it for the
    client's disconnect as long as they stream.
    """
    declared = 0
    for name, value in scope.get("headers", ()):
        if name == b"content-length" and value.isdigit():
            declared = int(value)
    loop = asyncio.get_running_loop()
    allowed = timeout_s + declared / MIN_BODY_RATE
    deadline = loop.time() + allowed
    complete = False

    async def receive_in_time() -> Message:
        nonlocal complete
        if complete:
            return await receive()
        try:
            async with asyncio.timeout_at(deadline):  # a timer handle, no extra task
                message = await receive()
        except TimeoutError:
            raise RequestTimeout(
                f"request body: not received within {allowed:g} s (request_timeout_s "
                f"{timeout_s:g} s, --request-timeout, plus 1 s per {MIN_BODY_RATE} declared "
                "bytes)"
            ) from None
        if message["type"] != "http.request" or not message.get("more_body", False):
            complete = True
        return message

    return receive_in_time
