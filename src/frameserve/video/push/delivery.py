"""One push output's delivery: a bounded queue, a task that sends from it, retries with
backoff and jitter, and the counters its status and metrics show.

Everything here is owned by the server's event loop: ``offer`` and ``end`` run on it (a
stream's records arrive there in ``LiveStream._deliver``, a job's events through
``call_soon_threadsafe``), and the task runs there. Nothing the pipeline does ever waits on a
push target: ``offer`` only appends to the queue, and when the queue is full the oldest message
is dropped and counted. The counters are plain integers, read by other threads (the job
API's worker threads, a metrics scrape) as a snapshot.

Counting, in messages (a stream's records, or a job's events): ``sent`` reached the target
(a webhook answered 2xx; an MQTT publish was accepted, acknowledged for qos 1 and 2),
``dropped`` never went out (the queue was full, or the output ended before the flush reached
them), ``failed`` were given up after ``max_attempts`` tries or ``MAX_MESSAGE_S``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from frameserve.errors import FrameserveError
from frameserve.video.push.spec import MqttPush, WebhookPush

log = logging.getLogger(__name__)

BACKOFF_MIN_S = 0.2
BACKOFF_MAX_S = 10.0
MAX_MESSAGE_S = 60.0  # at most this long between the first try of a message and giving up


class PushError(FrameserveError):
    """A try that did not reach the target (its text goes to ``last_error``: no secrets);
    ``permanent``: another try would be answered the same (an HTTP 4xx)."""

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True, slots=True)
class Message:
    """What one try sends: the event name, the body (JSON bytes) and an id that stays the
    same on every try (a receiver drops a duplicate by it)."""

    event: str
    body: bytes
    id: str = field(default_factory=lambda: uuid.uuid4().hex)


class Transport(Protocol):
    """How messages reach one target (``WebhookTransport``, ``MqttTransport``)."""

    async def send(self, message: Message) -> None:
        """Deliver one message or raise ``PushError`` (or ``OSError``, ``TimeoutError``)."""

    async def close(self) -> None:
        """Let go of connections (called once, at the end)."""


Encode = Callable[[list[Any]], Message]


@dataclass(frozen=True, slots=True)
class PushStatus:
    """A push output as the job JSON and the stream status show it."""

    type: str
    url: str  # without a password
    sent: int
    dropped: int
    failed: int
    queued: int
    last_error: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "url": self.url,
            "sent": self.sent,
            "dropped": self.dropped,
            "failed": self.failed,
            "queued": self.queued,
            "last_error": self.last_error,
        }


def idle_status(spec: WebhookPush | MqttPush) -> PushStatus:
    """The status of an output that has not started (a queued job)."""
    return PushStatus(spec.type, spec.public_url, 0, 0, 0, 0, None)


class PushOutput:
    """One output of a job or stream (loop-owned; see the module docstring).

    ``encode`` turns a batch of queued items (at most ``batch_size``, gathered for at most
    ``batch_s`` after the first) into one message.
    """

    def __init__(
        self,
        name: str,
        spec: WebhookPush | MqttPush,
        transport: Transport,
        encode: Encode,
        batch_size: int = 1,
        batch_s: float = 0.0,
    ) -> None:
        self.name = name  # "stream <id> push[i]" for logs
        self.spec = spec
        self.sent = 0
        self.dropped = 0
        self.failed = 0
        self.last_error: str | None = None
        self._transport = transport
        self._encode = encode
        self._batch_size = batch_size
        self._batch_s = batch_s
        self._queue: deque[Any] = deque()
        self._inflight = 0  # items of the message being tried
        self._wake = asyncio.Event()
        self._ending = False
        self._failing = False  # the last message failed: log the next failure at debug only

    @property
    def ending(self) -> bool:
        return self._ending

    def status(self) -> PushStatus:
        """The counters now (any thread: a snapshot)."""
        queued = len(self._queue) + self._inflight
        return PushStatus(self.spec.type, self.spec.public_url, self.sent, self.dropped,
                          self.failed, queued, self.last_error)  # fmt: skip

    def offer(self, item: Any) -> None:
        """Queue ``item`` (never waits); the oldest is dropped when the queue is full."""
        if self._ending:
            self.dropped += 1
            return
        if len(self._queue) >= self.spec.queue_size:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(item)
        self._wake.set()

    def end(self) -> None:
        """No more items: the task sends what is queued (within the flush bound) and ends."""
        self._ending = True
        self._wake.set()

    async def run(self, flush_s: float) -> None:
        """Send until ``end``; then flush for at most ``flush_s``, drop the rest, close."""
        try:
            while not self._ending:
                batch = await self._next_batch()
                if batch:
                    await self._deliver(batch)
            try:
                async with asyncio.timeout(flush_s):
                    while self._queue:
                        await self._deliver(self._take())
            except TimeoutError:
                self._flush_ran_out(flush_s)
        finally:
            self.dropped += len(self._queue) + self._inflight
            self._queue.clear()
            self._inflight = 0
            await self._close()

    def _flush_ran_out(self, flush_s: float) -> None:
        left = len(self._queue) + self._inflight
        if left:
            log.warning("%s: %d messages left unsent after the %.1f s flush", self.name, left,
                        flush_s)  # fmt: skip

    async def _close(self) -> None:
        try:
            await asyncio.wait_for(self._transport.close(), self.spec.timeout_s)
        except Exception as err:  # noqa: BLE001 - closing a connection that failed anyway
            log.debug("%s: close: %s", self.name, err)

    async def _next_batch(self) -> list[Any]:
        """Wait for the first item, then up to ``batch_s`` for the batch to fill."""
        while not self._queue and not self._ending:
            self._wake.clear()
            await self._wake.wait()
        if self._batch_size > 1 and self._batch_s > 0:
            deadline = time.monotonic() + self._batch_s
            while len(self._queue) < self._batch_size and not self._ending:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), left)
                except TimeoutError:
                    break
        return self._take()

    def _take(self) -> list[Any]:
        count = min(self._batch_size, len(self._queue))
        batch = [self._queue.popleft() for _ in range(count)]
        self._inflight = len(batch)
        return batch

    async def _deliver(self, batch: list[Any]) -> None:
        """Try one message up to ``max_attempts`` times (backoff with full jitter)."""
        message = self._encode(batch)
        started = time.monotonic()
        backoff = BACKOFF_MIN_S
        for attempt in range(1, self.spec.max_attempts + 1):
            try:
                await asyncio.wait_for(self._transport.send(message), self.spec.timeout_s)
            except (PushError, OSError, TimeoutError) as err:
                self.last_error = _describe(err)
                log.debug("%s: try %d: %s", self.name, attempt, self.last_error)
                if isinstance(err, PushError) and err.permanent:
                    break
            else:
                self.sent += len(batch)
                self._inflight = 0
                if self._failing:
                    self._failing = False
                    log.info("%s: delivering again", self.name)
                return
            spent = time.monotonic() - started
            if attempt == self.spec.max_attempts or spent + backoff > MAX_MESSAGE_S:
                break
            # half the backoff plus up to as much again at random: outputs that failed together
            # do not retry together
            await asyncio.sleep(backoff / 2 + random.uniform(0.0, backoff / 2))  # noqa: S311
            backoff = min(backoff * 2, BACKOFF_MAX_S)
        self.failed += len(batch)
        self._inflight = 0
        level = logging.DEBUG if self._failing else logging.WARNING  # one warning per outage
        self._failing = True
        log.log(level, "%s: gave up on a %s message after %d tries: %s", self.name,
                message.event, attempt, self.last_error)  # fmt: skip


def _describe(err: BaseException) -> str:
    if isinstance(err, TimeoutError):
        return "timed out"
    if isinstance(err, PushError):
        return err.message
    return f"{type(err).__name__}: {err}"
