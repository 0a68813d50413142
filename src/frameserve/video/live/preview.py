"""A live stream's annotated preview: pictures only while someone watches.

```
worker process               reader thread         sink thread              server loop
 while told (PreviewRequest): keep(index, picture)  render(frame, result):   MJPEG connections,
 every 1/fps s the frame      (a bounded map by     draw (scaled) -> JPEG -> .jpg requests: the
 scaled to <= width, RGB, ──> frame number)     ──> one slot on the loop ──> newest JPEG, each
 rides on its Delivered                             -> HLS encoder (queue)   at its own pace
```

Nobody watching costs the stream nothing: the worker sends no pictures, and the sink neither
draws nor encodes. Watchers are the open MJPEG connections, a ``.jpg`` request within
``ttl_s``, and an HLS encoder (kept while its playlist is read, ``video.live.hls``). The
reader thread asks ``request()`` after each message of the worker and tells the worker when
the answer changes, so pictures start within a frame of the first watcher and stop within a
frame of the last one leaving.

Ownership: the watcher table and the counters are guarded by one lock (the loop writes the
table, the reader and sink threads read it); the JPEG slot and its waiters belong to the loop
(the sink hands each JPEG over with ``call_soon_threadsafe``: newest wins, a slow client only
misses pictures, and the sink never waits on a connection).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from frameserve.errors import ConfigError, Conflict, QueueFull
from frameserve.processing.results import Result
from frameserve.video.live.hls import HlsEncoder, HlsSettings
from frameserve.video.overlay import OverlayStyle
from frameserve.video.preview import annotate, encode_jpeg

log = logging.getLogger(__name__)

KEPT_PICTURES = 16  # pictures waiting for their frame's result (more are frames dropped since)


@dataclass(frozen=True)
class PreviewSettings:
    """The server's caps on live previews (``serve --preview-*``, ``--hls-*``)."""

    fps: float = 5.0  # JPEG pictures per second at most (MJPEG, .jpg)
    width: int = 640  # pixels at most; the frame's aspect is kept
    max_connections: int = 4  # MJPEG connections per stream (429 above)
    wait_s: float = 5.0  # how long a .jpg (or the first HLS playlist) waits for a picture
    ttl_s: float = 10.0  # a .jpg request keeps pictures coming this long
    jpeg_quality: int = 80
    hls: HlsSettings = HlsSettings()
    folder: Path | None = None  # where HLS encoders make their folders (None: the temp dir)

    def __post_init__(self) -> None:
        for name in ("fps", "wait_s", "ttl_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ConfigError(f"PreviewSettings.{name}: expected a number > 0, got {value!r}")
        if not isinstance(self.width, int) or self.width < 16:
            raise ConfigError(f"PreviewSettings.width: expected pixels >= 16, got {self.width!r}")
        if not isinstance(self.max_connections, int) or self.max_connections < 1:
            raise ConfigError(
                f"PreviewSettings.max_connections: expected >= 1, got {self.max_connections!r}"
            )
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(
                f"PreviewSettings.jpeg_quality: expected 1..100, got {self.jpeg_quality!r}"
            )


@dataclass(frozen=True, slots=True)
class PreviewRequest:
    """The reader's word to the worker: send pictures at most ``fps`` a second, at most
    ``width`` wide; ``fps`` 0: send none."""

    fps: float = 0.0
    width: int = 0

    @property
    def on(self) -> bool:
        return self.fps > 0


OFF = PreviewRequest()


@dataclass(frozen=True, slots=True)
class PreviewPicture:
    """A frame scaled down for the preview (HxWx3 uint8 RGB) and the frame's own size, which
    the results' coordinates refer to."""

    image: np.ndarray
    source: tuple[int, int]  # (width, height)


@dataclass(frozen=True, slots=True)
class PreviewStatus:
    """The preview's part of a stream's status."""

    watchers: int  # MJPEG connections, a recent .jpg, and an HLS reader
    mjpeg: int  # open MJPEG connections
    hls: bool  # an HLS encoder runs
    pictures: int  # pictures the worker sent since the stream started
    picture_bytes: int
    jpeg_frames: int  # pictures encoded as JPEG
    hls_frames: int  # pictures encoded for HLS

    def to_json(self) -> dict[str, Any]:
        return {
            "watchers": self.watchers,
            "mjpeg": self.mjpeg,
            "hls": self.hls,
            "pictures": self.pictures,
            "picture_bytes": self.picture_bytes,
            "jpeg_frames": self.jpeg_frames,
            "hls_frames": self.hls_frames,
        }


class PictureGate:
    """Lets through at most ``fps`` pictures a second on the given clock, evenly spaced."""

    def __init__(self, fps: float) -> None:
        self.fps = fps
        self._next = -math.inf

    def due(self, now: float) -> bool:
        """True when a picture at ``now`` is within the rate (and then counts it)."""
        if self.fps <= 0 or now < self._next:
            return False
        interval = 1.0 / self.fps
        # evenly spaced on average; after a gap, start afresh from now
        self._next = self._next + interval if now - self._next < interval else now + interval
        return True


class StreamPreview:
    """One stream's preview state (see the module docstring for who calls what)."""

    def __init__(
        self,
        stream_id: str,
        settings: PreviewSettings,
        loop: asyncio.AbstractEventLoop,
        style: OverlayStyle,
    ) -> None:
        self.id = stream_id
        self.settings = settings
        self._loop = loop
        self._style = style
        self._lock = threading.Lock()
        self._connections: dict[int, int] = {}  # MJPEG connection -> the width it asked for
        self._ids = itertools.count()
        self._touched = -math.inf  # the last .jpg request (time.monotonic())
        self._hls: HlsEncoder | None = None
        self._closed = False
        self._pictures: OrderedDict[int, PreviewPicture] = OrderedDict()  # frame -> picture
        self.pictures = self.picture_bytes = self.jpeg_frames = 0
        self._hls_frames_done = 0  # of encoders that ended
        self._jpeg_gate = PictureGate(settings.fps)  # sink thread
        self._failed = False  # drawing failed once (logged once; sink thread)
        # the loop's
        self._jpeg: bytes | None = None
        self._seq = 0
        self._changed = asyncio.Event()
        self.ended = False

    # -- any thread -------------------------------------------------------------------------
    def _jpeg_watched(self, now: float) -> bool:
        return bool(self._connections) or now - self._touched < self.settings.ttl_s

    def _hls_running(self) -> bool:
        return self._hls is not None and not self._hls.ended

    def request(self, now: float | None = None) -> PreviewRequest:
        """What the worker should send now (``OFF`` when nobody watches)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if self._closed:
                return OFF
            jpeg, hls = self._jpeg_watched(now), self._hls_running()
            if not (jpeg or hls):
                return OFF
            fps = max(self.settings.fps if jpeg else 0.0, self.settings.hls.fps if hls else 0.0)
            if hls or now - self._touched < self.settings.ttl_s:
                width = self.settings.width
            else:
                width = max(self._connections.values())
            return PreviewRequest(fps, width)

    def status(self) -> PreviewStatus:
        now = time.monotonic()
        with self._lock:
            mjpeg = len(self._connections)
            recent = now - self._touched < self.settings.ttl_s
            hls = self._hls_running()
            hls_frames = self._hls_frames_done + (self._hls.frames if self._hls else 0)
            return PreviewStatus(
                mjpeg + int(recent) + int(hls), mjpeg, hls, self.pictures, self.picture_bytes,
                self.jpeg_frames, hls_frames,
            )  # fmt: skip

    # -- reader thread ----------------------------------------------------------------------
    def keep(self, index: int, picture: PreviewPicture) -> None:
        """A picture the worker sent with frame ``index``, until the frame's result comes."""
        with self._lock:
            self.pictures += 1
            self.picture_bytes += picture.image.nbytes
            self._pictures[index] = picture
            while len(self._pictures) > KEPT_PICTURES:
                self._pictures.popitem(last=False)

    # -- sink thread ------------------------------------------------------------------------
    def render(self, index: int, seconds: Fraction, result: Result | None) -> None:
        """Frame ``index``'s result drawn on its picture (if it has one) for whoever watches:
        a JPEG for the loop's slot, the picture for the HLS encoder."""
        with self._lock:
            picture = self._pictures.pop(index, None)
            while self._pictures and next(iter(self._pictures)) < index:
                self._pictures.popitem(last=False)  # frames dropped on the way
            if picture is None:
                return
            now = time.monotonic()
            jpeg = self._jpeg_watched(now) and self._jpeg_gate.due(now)
            hls = self._hls if self._hls_running() else None
        if not (jpeg or hls):
            return
        try:
            image = annotate(picture.image, result, picture.source, self._style)
            data = encode_jpeg(image, self.settings.jpeg_quality) if jpeg else None
        except Exception as err:  # noqa: BLE001 - a preview never stops the stream
            if not self._failed:
                log.error("stream %s: drawing the preview failed", self.id, exc_info=err)
            self._failed = True
            return
        if hls is not None:
            hls.offer(image, seconds, picture.source)
        if data is not None:
            with self._lock:
                self.jpeg_frames += 1
            try:
                self._loop.call_soon_threadsafe(self._publish, data)
            except RuntimeError:
                pass  # the loop is closed: nobody watches

    def close(self) -> None:
        """The stream ended: stop the HLS encoder (its folder goes) and let waiters go."""
        with self._lock:
            self._closed = True
            hls, self._hls = self._hls, None
            self._pictures.clear()
        if hls is not None:
            hls.stop()
            with self._lock:
                self._hls_frames_done += hls.frames
        try:
            self._loop.call_soon_threadsafe(self._end)
        except RuntimeError:
            pass  # the loop is closed

    # -- event loop -------------------------------------------------------------------------
    def _publish(self, data: bytes) -> None:
        self._jpeg = data
        self._seq += 1
        self._changed.set()
        self._changed = asyncio.Event()

    def _end(self) -> None:
        self.ended = True
        self._changed.set()

    def _starting(self) -> None:
        """Called before a watcher is added: a JPEG kept from an earlier session is stale."""
        if not self._jpeg_watched(time.monotonic()):
            self._jpeg = None

    def open_connection(self, width: int) -> int:
        """A new MJPEG connection (``QueueFull`` at ``max_connections``); returns its token."""
        with self._lock:
            if len(self._connections) >= self.settings.max_connections:
                raise QueueFull(
                    f"stream {self.id}: preview.mjpeg: {len(self._connections)} preview "
                    f"connections are open, the limit is {self.settings.max_connections} "
                    "(--preview-max-connections); close one or poll preview.jpg"
                )
            self._starting()
            token = next(self._ids)
            self._connections[token] = min(width, self.settings.width)
            return token

    def close_connection(self, token: int) -> None:
        with self._lock:
            self._connections.pop(token, None)

    def touch(self) -> None:
        """A .jpg request: keep pictures coming for ``ttl_s``."""
        with self._lock:
            self._starting()
            self._touched = time.monotonic()

    def latest(self) -> tuple[bytes | None, int]:
        """The newest JPEG (None: none yet) and its sequence number."""
        return self._jpeg, self._seq

    async def wait(self, after: int, timeout_s: float) -> tuple[bytes | None, int]:
        """The newest JPEG once its sequence number is past ``after``, or what there is after
        ``timeout_s`` (or when the stream ends)."""
        if self._seq <= after and not self.ended:
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), timeout_s)
            except TimeoutError:
                pass
        return self._jpeg, self._seq

    def hls(self) -> HlsEncoder:
        """The running HLS encoder, started on the first request (marks it read)."""
        with self._lock:
            if self._closed:
                raise Conflict(f"stream {self.id}: the stream is stopped, it has no pictures")
            hls = self._hls
            if hls is None or hls.ended:
                if hls is not None:
                    self._hls_frames_done += hls.frames
                hls = self._hls = HlsEncoder(
                    self.settings.hls,
                    self.settings.folder,
                    f"stream {self.id}",
                    self.settings.width,
                )
                hls.start()
            hls.touch()
            return hls
