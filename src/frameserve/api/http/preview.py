"""A live stream's annotated preview over HTTP (``video.live.preview``, docs/preview.md).

``GET /v1/streams/{id}/preview.mjpeg[?fps=F&width=W]``: ``multipart/x-mixed-replace`` JPEGs (an
``<img src>`` plays it), at most the server's ``--preview-fps`` and ``--preview-width`` (the
query may ask for less, never more); at most ``--preview-max-connections`` per stream (429).
``GET /v1/streams/{id}/preview.jpg``: the newest picture, waiting up to ``--preview-wait`` for
the first one (503 with ``Retry-After`` when none came: the stream is connecting or retrying).
``GET /v1/streams/{id}/hls/index.m3u8`` and its segments: HLS, encoded while it is read.

The routes sit under ``/v1/streams/{id}`` and take the same key and owner checks as ``GET
/v1/streams/{id}``: another key's stream is 404. Every connection runs on the loop and waits
on the stream's JPEG slot, never on its threads.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from frameserve import logcontext
from frameserve.api.auth import owner_scope
from frameserve.api.status import error_body
from frameserve.errors import Conflict, InvalidInput, NotFound, NotSupported, Unavailable

if TYPE_CHECKING:
    from frameserve.video.live import LiveStream, LiveStreams
    from frameserve.video.live.preview import StreamPreview

BOUNDARY = "frame"
IDLE_S = 5.0  # an MJPEG connection without pictures looks at its stream this often
POLL_S = 0.1  # how often the first HLS playlist request looks for the first segment
NO_STORE = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
_ID_CHARS = frozenset("0123456789abcdefghijklmnopqrstuvwxyz-_")
_CONTENT_TYPES = {".m3u8": "application/vnd.apple.mpegurl", ".ts": "video/mp2t"}

Endpoint = Callable[[Request], Awaitable[Response]]


def _unavailable(message: str, retry_after_s: float) -> Response:
    """503 with Triton's error body and a ``Retry-After`` (whole seconds)."""
    body = error_body(Unavailable(message), logcontext.request_id.get())
    headers = {"Retry-After": str(max(1, math.ceil(retry_after_s))), **NO_STORE}
    return Response(orjson.dumps(body), 503, headers=headers, media_type="application/json")


def _number(request: Request, name: str, cap: float, integer: bool) -> float:
    """A query parameter that may lower a server cap: a number > 0 (``cap`` when absent or
    larger)."""
    raw = request.query_params.get(name)
    if raw is None:
        return cap
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        value = -1
    if not (math.isfinite(value) and value > 0):
        kind = "an integer" if integer else "a number"
        raise InvalidInput(f"query.{name}: expected {kind} > 0, got {raw!r}")
    return min(value, cap)


class PreviewRoutes:
    """The preview endpoints over one stream registry."""

    def __init__(self, streams: LiveStreams) -> None:
        self.streams = streams

    def _stream(self, request: Request, allowed: set[str] | None) -> LiveStream:
        """The stream of the path (NotFound, Conflict when stopped); ``allowed``: the query
        parameters the route takes (None: any, ignored)."""
        if allowed is not None and (unknown := sorted(set(request.query_params) - allowed)):
            raise InvalidInput(f"query: expected only {sorted(allowed)}, got {unknown}")
        stream_id = request.path_params["stream"]
        if not stream_id or len(stream_id) > 64 or not set(stream_id.lower()) <= _ID_CHARS:
            raise InvalidInput(
                f"stream id: expected letters, digits, '-' or '_', got {stream_id!r}"
            )
        stream = self.streams.get(stream_id, owner_scope())  # NotFound for another key's too
        if getattr(stream, "preview", None) is None:
            raise NotSupported(
                f"stream {stream_id}: no preview: the stream runs on a node of the Ray cluster "
                "(serve --ray) and its pictures stay there; subscribe to its records instead"
            )
        if stream.state == "stopped" or stream.preview.ended:
            raise Conflict(f"stream {stream_id}: the stream is stopped, it has no pictures")
        return stream

    async def mjpeg(self, request: Request) -> Response:
        stream = self._stream(request, {"fps", "width"})
        settings = stream.preview.settings
        fps = _number(request, "fps", settings.fps, integer=False)
        width = int(_number(request, "width", settings.width, integer=True))
        if width < 16:
            raise InvalidInput(f"query.width: expected pixels >= 16, got {width}")
        token = stream.preview.open_connection(width)  # QueueFull: 429
        parts = _parts(stream.preview, token, fps)
        media_type = f"multipart/x-mixed-replace; boundary={BOUNDARY}"
        return StreamingResponse(parts, media_type=media_type, headers=NO_STORE)

    async def jpeg(self, request: Request) -> Response:
        stream = self._stream(request, set())
        preview = stream.preview
        preview.touch()
        data, seq = preview.latest()
        deadline = time.monotonic() + preview.settings.wait_s
        while data is None and not preview.ended and time.monotonic() < deadline:
            data, seq = await preview.wait(seq, deadline - time.monotonic())
        if data is None:
            state = stream.state
            why = f"; last error: {stream.last_error}" if stream.last_error else ""
            return _unavailable(
                f"stream {stream.id}: no preview picture within {preview.settings.wait_s:g} s "
                f"(--preview-wait); the stream is {state}{why}",
                preview.settings.wait_s,
            )
        return Response(data, media_type="image/jpeg", headers=NO_STORE)

    async def hls(self, request: Request) -> Response:
        stream = self._stream(request, None)  # players may add cache-busting parameters
        name = request.path_params["name"]
        preview = stream.preview
        if name != "index.m3u8" and not _is_segment_name(name):
            raise NotFound(
                f"stream {stream.id}: HLS file: expected index.m3u8 or a segment it lists "
                f"(segNNNNNN.ts), got {name!r}"
            )
        encoder = preview.hls()  # starts the encoder on the first request
        path = encoder.file(name)
        if path is None and name == "index.m3u8":
            wait = preview.settings.wait_s + 2 * preview.settings.hls.segment_s
            deadline = time.monotonic() + wait
            while path is None and time.monotonic() < deadline and not encoder.ended:
                await asyncio.sleep(POLL_S)
                path = encoder.file(name)
            if path is None:
                return _unavailable(
                    f"stream {stream.id}: no HLS segment within {wait:g} s; the stream is "
                    f"{stream.state}", preview.settings.hls.segment_s,
                )  # fmt: skip
        if path is None:
            raise NotFound(f"stream {stream.id}: HLS segment {name!r} is not (or no longer) there")
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:  # deleted by the muxer meanwhile
            raise NotFound(f"stream {stream.id}: HLS segment {name!r} is no longer there") from None
        media_type = _CONTENT_TYPES[name[name.rindex(".") :]]
        return Response(data, media_type=media_type, headers={"Cache-Control": "no-cache"})

    def routes(self) -> list[tuple[str, Endpoint, str]]:
        return [
            ("/v1/streams/{stream}/preview.mjpeg", self.mjpeg, "GET"),
            ("/v1/streams/{stream}/preview.jpg", self.jpeg, "GET"),
            ("/v1/streams/{stream}/hls/{name}", self.hls, "GET"),
        ]


def _is_segment_name(name: str) -> bool:
    from frameserve.video.live.hls import NAME

    return NAME.fullmatch(name) is not None


async def _parts(preview: StreamPreview, token: int, fps: float) -> AsyncIterator[bytes]:
    """The connection's multipart body: the newest JPEG, at most ``fps`` a second, until the
    stream ends or the client goes (the connection is then let go in ``finally``)."""
    interval = 1.0 / fps
    seq = -1
    try:
        while not preview.ended:
            data, latest = await preview.wait(seq, IDLE_S)
            if data is None or latest == seq:
                seq = latest  # nothing new: wait for the next picture
                continue
            seq = latest
            sent = time.monotonic()
            head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(data)}"
            yield head.encode() + b"\r\n\r\n" + data + b"\r\n"
            await asyncio.sleep(max(0.0, sent + interval - time.monotonic()))
    finally:
        preview.close_connection(token)
