"""Subscribers of a live stream: each gets the stream's records through its own bounded buffer.

Everything here is owned by the server's event loop: ``subscribe``, ``Subscription.close``, the
iteration and ``Subscribers.deliver``/``end`` run on it only. The stream's sink thread crosses
onto the loop once per record with ``call_soon_threadsafe`` (``LiveStream._publish``). A slow
reader (an SSE or gRPC client on a slow link) never holds the stream back: when its buffer is
full its oldest record is dropped and counted in ``dropped``, so it always sees the newest.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from frameserve.errors import QueueFull
from frameserve.video.live.records import LiveRecord


class Subscription:
    """One reader of a stream's records: ``async for record in sub`` until the stream stops.

    Records (frozen) are shared by every subscriber of the stream.
    ``dropped`` counts the records this subscriber missed because its buffer was full.
    """

    def __init__(
        self,
        stream_id: str,
        size: int,
        on_close: Callable[[Subscription], None] | None = None,
    ) -> None:
        self.stream_id = stream_id
        self.dropped = 0
        self.delivered = 0
        self._buffer: deque[LiveRecord] = deque()
        self._size = size
        self._ended = False
        self._ready = asyncio.Event()
        self._on_close = on_close

    @property
    def ended(self) -> bool:
        """True once the stream stopped (or ``close`` was called): iteration ends when the
        records already buffered have been read."""
        return self._ended

    def push(self, record: LiveRecord) -> None:
        """Queue ``record``; when the buffer is full, drop the oldest one."""
        if self._ended:
            return
        if len(self._buffer) >= self._size:
            self._buffer.popleft()
            self.dropped += 1
        self._buffer.append(record)
        self._ready.set()

    def end(self) -> None:
        """The stream stopped: the reader gets what is buffered, then the end."""
        self._ended = True
        self._ready.set()

    def close(self) -> None:
        """Stop reading: buffered records are discarded and the iteration ends."""
        self._buffer.clear()
        self.end()
        if self._on_close is not None:
            on_close, self._on_close = self._on_close, None
            on_close(self)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> LiveRecord:
        while not self._buffer:
            if self._ended:
                raise StopAsyncIteration
            self._ready.clear()
            await self._ready.wait()
        self.delivered += 1
        return self._buffer.popleft()


class Subscribers:
    """The subscriptions of one stream (loop-owned; see the module docstring)."""

    def __init__(self, stream_id: str, size: int, max_subscribers: int | None = None) -> None:
        self.stream_id = stream_id
        self.size = size
        self.max_subscribers = max_subscribers
        self._subs: set[Subscription] = set()
        self._ended = False

    def __len__(self) -> int:
        return len(self._subs)

    def subscribe(self) -> Subscription:
        """A new subscription; already ended when the stream has stopped. ``QueueFull`` when
        the stream has ``max_subscribers`` already."""
        limit = self.max_subscribers
        if limit is not None and len(self._subs) >= limit:
            raise QueueFull(
                f"live stream {self.stream_id}: {len(self._subs)} subscribers, the limit is "
                f"{limit} (max_subscribers, --max-subscribers)"
            )
        sub = Subscription(self.stream_id, self.size, self._subs.discard)
        if self._ended:
            sub.end()
        else:
            self._subs.add(sub)
        return sub

    def deliver(self, record: LiveRecord) -> None:
        """Give ``record`` to every subscriber (each drops its oldest when full)."""
        for sub in self._subs:
            sub.push(record)

    def end(self) -> None:
        """Push the end to every subscriber (once); later subscriptions start ended."""
        if self._ended:
            return
        self._ended = True
        for sub in self._subs:
            sub.end()
        self._subs.clear()
