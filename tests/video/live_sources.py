"""Live sources for the live-stream tests: MPEG-TS over TCP on a loopback port, paced in real time.

``mpegts_stream`` remuxes a test clip (``video.media.make_clip``, H.264) into MPEG-TS bytes,
repeated with timestamps that keep increasing, and notes where each video packet starts and when
it is due. ``TcpSource`` listens on 127.0.0.1 (a free port, never 0.0.0.0) and plays those bytes
to every connection as a camera would: each packet's bytes leave when its pts is due on the wall
clock (times ``speed``). It can cut the first ``drops`` connections after ``drop_after_s``:
closed (the reader sees the end of the stream) or, with ``stall``, kept open with nothing more
sent (the reader's read timeout fires); either way the reader must reconnect. No mocks: the
reader under test opens ``tcp://127.0.0.1:<port>`` with real FFmpeg.
"""

from __future__ import annotations

import io
import socket
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

POLL_S = 0.05  # how often a sender looks at the stop event while it waits
SEND_TIMEOUT_S = 5.0  # a client that reads nothing for this long is dropped


@dataclass(frozen=True)
class TsStream:
    """MPEG-TS bytes and, per video packet, its byte offset and due time (seconds from start)."""

    data: bytes
    offsets: tuple[int, ...]
    due_s: tuple[float, ...]
    frames: int
    start_s: Fraction  # pts of the first frame (the MPEG-TS muxer starts at 1.4 s)
    rate: Fraction  # frames per second of the clip
    clip_frames: int  # frames of one repetition

    @property
    def duration_s(self) -> float:
        """When the last packet is due, in seconds from the first."""
        return self.due_s[-1] if self.due_s else 0.0

    def clip_frame(self, pts_s: float) -> int:
        """Which frame of the clip a frame at ``pts_s`` (seconds, as read back) shows."""
        return round((Fraction(pts_s) - self.start_s) * self.rate) % self.clip_frames


def mpegts_stream(clip: Path, repeat: int = 1) -> TsStream:
    """The video of ``clip`` as MPEG-TS, ``repeat`` times in a row with increasing timestamps."""
    with av.open(str(clip)) as probe:
        stream = probe.streams.video[0]
        assert stream.time_base is not None and stream.average_rate is not None
        time_base = Fraction(stream.time_base)
        rate = Fraction(stream.average_rate)
        packets = sum(1 for p in probe.demux(stream) if p.size)
    period = packets * round(1 / (rate * time_base))  # one repetition, in the clip's ticks
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mpegts") as out:
        video = None
        for r in range(repeat):
            with av.open(str(clip)) as source:
                src = source.streams.video[0]
                if video is None:
                    video = out.add_stream_from_template(src)
                for packet in source.demux(src):
                    if not packet.size or packet.pts is None or packet.dts is None:
                        continue
                    packet.pts += r * period
                    packet.dts += r * period
                    packet.stream = video
                    out.mux(packet)
    data = buffer.getvalue()
    offsets, due, start = _packet_times(data)
    return TsStream(data, offsets, due, len(offsets), start, rate, packets)


def _packet_times(data: bytes) -> tuple[tuple[int, ...], tuple[float, ...], Fraction]:
    """Byte offset and due time (from the first dts) of each video packet, and the first pts."""
    offsets, due = [], []
    with av.open(io.BytesIO(data), format="mpegts") as back:
        ts = back.streams.video[0]
        assert ts.time_base is not None
        ts_base = Fraction(ts.time_base)
        first: int | None = None
        start: int | None = None
        for packet in back.demux(ts):
            if not packet.size or packet.pos is None or packet.dts is None:
                continue
            first = packet.dts if first is None else first
            start = packet.pts if start is None else min(start, packet.pts or start)
            offsets.append(packet.pos)
            due.append(float((packet.dts - first) * ts_base))
    assert start is not None, "mpegts_stream: no video packet written"
    return tuple(offsets), tuple(due), start * ts_base


class TcpSource:
    """A TCP server on 127.0.0.1 that plays a ``TsStream`` to each connection in real time.

    Every connection gets its own sender thread (named, joined by ``close``); ``connections``
    counts accepted connections. A connection ends when the stream ends, when the client goes
    away, after ``drop_after_s`` for the first ``drops`` connections (at ``close`` with
    ``stall``), or at ``close``.
    """

    def __init__(
        self,
        stream: TsStream,
        speed: float = 1.0,
        drop_after_s: float | None = None,
        drops: int = 0,
        stall: bool = False,
    ) -> None:
        self.stream = stream
        self.speed = speed
        self.drop_after_s = drop_after_s
        self.drops = drops
        self.stall = stall
        self.connections = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(POLL_S)
        self.port = self._server.getsockname()[1]
        self._senders: list[threading.Thread] = []
        self._acceptor = threading.Thread(
            target=self._accept, name=f"tcp-source-{self.port}", daemon=True
        )
        self._acceptor.start()

    @property
    def url(self) -> str:
        """What a reader opens: ``tcp://127.0.0.1:<port>``."""
        return f"tcp://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # the listening socket was closed
            with self._lock:
                self.connections += 1
                number = self.connections
            drop = self.drop_after_s if number <= self.drops else None
            sender = threading.Thread(
                target=self._send,
                args=(conn, drop),
                name=f"tcp-source-{self.port}-{number}",
                daemon=True,
            )
            self._senders.append(sender)
            sender.start()

    def _send(self, conn: socket.socket, drop_after_s: float | None) -> None:
        s = self.stream
        conn.settimeout(SEND_TIMEOUT_S)
        started = time.monotonic()
        ends = [*s.offsets[1:], len(s.data)]
        try:
            for i, (start, due) in enumerate(zip(s.offsets, s.due_s, strict=True)):
                wait = started + due / self.speed - time.monotonic()
                if wait > 0 and self._stop.wait(wait):
                    return
                if self._stop.is_set():
                    return
                if drop_after_s is not None and time.monotonic() - started >= drop_after_s:
                    if self.stall:
                        self._stop.wait()  # silent, but connected, until the source closes
                    return
                chunk = s.data[0 if i == 0 else start : ends[i]]
                conn.sendall(chunk)
        except OSError:
            return  # the client went away
        finally:
            conn.close()

    def close(self) -> None:
        """Stop accepting, end every connection and join every thread."""
        self._stop.set()
        self._server.close()
        self._acceptor.join(5)
        for sender in self._senders:
            sender.join(5)

    def __enter__(self) -> TcpSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
