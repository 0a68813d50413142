"""The decode worker's side of its shared-memory ring (``video.worker``).

A worker writes each group it prepared into the ring and tells the server where; the server
reads groups in the order they were sent and frees each after reading it. So the ring is a FIFO
of variable-size groups: pictures at model size, or (``video.balance``) the rows the model's
sampling reads, five times the bytes for 720p ``faces``. The pipe also carries what the
server asks for (``rows``; a first decoder's ``until``, a second decoder's pieces:
``video.split``), taken when the worker polls or waits for room.
"""

from __future__ import annotations

from collections import deque
from multiprocessing.connection import Connection
from typing import Any

from frameserve.errors import VideoError


class RingWriter:
    """The child's side of the shared ring and of the pipe's messages from the server: groups
    are written one after another and freed in the order the server reads them (FIFO), so
    groups of different sizes share it without gaps but at its end."""

    def __init__(self, conn: Connection, size: int) -> None:
        self.conn = conn
        self.size = size
        self.rows = False  # the server's last ask: ship pictures' rows (``video.balance``)
        # the server's other asks, oldest first, for the worker's loop (``video.split``)
        self.asks: deque[tuple[Any, ...]] = deque()
        self._used: deque[tuple[int, int]] = deque()  # (offset, bytes), oldest first
        self._head = 0  # where the next group goes

    def place(self, n: int) -> int:
        """Offset of ``n`` free bytes, waiting for the server to free groups."""
        if n > self.size:
            raise VideoError(f"decode worker: a group of {n} bytes, expected at most {self.size}")
        while (offset := self._room(n)) is None:
            self._handle(self.conn.recv())
        self._used.append((offset, n))
        self._head = offset + n
        return offset

    def poll(self) -> None:
        """Take the server's messages that came, without waiting."""
        while self.conn.poll():
            self._handle(self.conn.recv())

    def wait_ask(self) -> tuple[Any, ...] | None:
        """The server's oldest ask that is not about the ring, waiting for one; None when the
        server closed the pipe or said so (``None``)."""
        while not self.asks:
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                return None
            if message is None:
                return None
            self._handle(message)
        return self.asks.popleft()

    def _room(self, n: int) -> int | None:
        if not self._used:
            return 0
        tail = self._used[0][0]
        if self._head > tail:  # free: [head, size) and [0, tail)
            if self.size - self._head >= n:
                return self._head
            return 0 if tail >= n else None
        if self._head < tail and tail - self._head >= n:  # free: [head, tail)
            return self._head
        return None  # head == tail: full

    def _handle(self, message: Any) -> None:
        if message[0] == "free":
            offset, _ = self._used.popleft()
            if offset != message[1]:
                raise VideoError(f"decode worker: freed {message[1]}, expected {offset}")
        elif message[0] == "rows":
            self.rows = bool(message[1])
        else:
            self.asks.append(message)
