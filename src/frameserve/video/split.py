"""A second decoder for one input of ``video run``: the input's last pieces, keyframe to
keyframe, decoded at idle priority on the cores inference uses; results written in order.

On content that is hard to decode one core's H.264 decoding is the run's limit, and the core
that runs inference waits for frames part of the time. FFmpeg's own frame threads spread over
both cores took the model's core from inference as often as they helped (README, video
benchmark). A second decoder that runs only when that core would otherwise idle
(``SCHED_IDLE``), on whole closed GOPs of its own, takes that idle time and nothing else:

```
first worker (a core of its own)       this process                  second worker (SCHED_IDLE)
 frames from the start -> groups ──>   the input's pump              scan: pieces (closed GOPs)
   "until K": agreed / refused  <──>   claims the last piece   <──   "pieces"
 stops before K, ends                  piece K's pump          <──   piece K's groups, "piece-end"
                                       the sink: the input's pump, then each piece's, in order
```

- The second worker scans the packets (no decoding) and sends the pieces: each starts at a
  keyframe that no later packet precedes in presentation order (no leading pictures: decoding
  from it gives the frames a decode from the start gives), with the frame index a decode from
  the start gives it (the rank of its pts among the packets', as ``VideoSource`` counts).
- Pieces are claimed from the end, one at a time, each when the second worker is free. A claim
  asks the first worker to stop before the piece's keyframe; it agrees while it has not taken
  a frame at or after it (``worker.Until``), so no frame is decoded for the results twice and
  none is missed. A refusal, or the first worker's end, ends the claims.
- The second worker's groups go to inference as they come (one scheduler, one batch queue) and
  wait in their piece's pump; the sink writes the input's frames, then each piece's, so the
  results, tracking included, are those of one decoder.
- When the first worker ends (it reached a piece the second took), the second one is moved
  onto its core too: the piece it is decoding is then the run's last work and gets a core.

Only where the result is the same (``plan.splits``): one input decoded in a bound worker,
sampling ``all`` or ``every:N`` (decided from the index alone), no filters or defect checks
(they carry state from frame to frame), an indexed container (MP4, Matroska: a seek lands on
the keyframe asked for).
"""

from __future__ import annotations

import bisect
import logging
import os
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path
from typing import TYPE_CHECKING, Any

from frameserve.errors import FrameserveError
from frameserve.video.decode import DecodeStats, VideoSource, open_video
from frameserve.video.frames import SeekPoint
from frameserve.video.prepare import FramePreparer, Group, Prepared
from frameserve.video.ring import RingWriter
from frameserve.video.shipping import ship
from frameserve.video.warm import WarmWorker
from frameserve.video.worker import (
    DecodeWorker,
    WorkerSpec,
    WorkerStats,
    bind_to_cores,
    reporting,
)

if TYPE_CHECKING:  # the pump imports the server, which ``video run`` forks its workers before
    from frameserve.video.pump import FramePump

log = logging.getLogger(__name__)

# Containers whose index places a seek on the keyframe asked for (FFmpeg format names).
INDEXED_FORMATS = frozenset({"mov", "mp4", "matroska", "webm"})
# The largest piece a second decoder takes: its results wait in memory until the sink gets
# there (a few hundred bytes a frame, its pump's depth).
MOST_FRAMES = 4096
RING_SLOTS = 4  # its groups are copied out as they come: a small ring


@dataclass(frozen=True)
class Piece:
    """Frames from the keyframe ``start`` up to the next piece's keyframe (``end_pts``; None:
    the end of the input); ``frames``: its packets, the most frames it can have."""

    start: SeekPoint
    end_pts: int | None
    frames: int

    def ends_before(self, pts: int) -> bool:
        """Whether the frame at ``pts`` is past this piece (the next one's)."""
        return self.end_pts is not None and pts >= self.end_pts


def pieces_of(packets: list[int], keyframes: Collection[int]) -> list[Piece]:
    """The pieces after the first, from the packets' pts in decode order and the positions of
    the keyframes among them; none when timestamps repeat (a decoder's frame index would not
    be the pts' rank)."""
    n = len(packets)
    if n == 0 or len(set(packets)) != n:
        return []
    ranked = sorted(packets)
    later = packets[:]  # later[i]: the lowest pts from packet i on
    for i in range(n - 2, -1, -1):
        later[i] = min(later[i], later[i + 1])
    starts: list[int] = []
    highest = packets[0]  # the highest pts before the keyframe
    for p in range(1, n):
        pts = packets[p]
        if p in keyframes and highest < pts and (p + 1 == n or later[p + 1] > pts):
            starts.append(pts)
        highest = max(highest, pts)
    pieces = []
    for i, pts in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else None
        first = bisect.bisect_left(ranked, pts)
        last = bisect.bisect_left(ranked, end) if end is not None else n
        pieces.append(Piece(SeekPoint(pts, first), end, last - first))
    return pieces


def claimable(pieces: list[Piece]) -> list[Piece]:
    """The pieces a second decoder may take: those after the last one over ``MOST_FRAMES``
    (they are taken from the end, with no gap: the first decoder stops where they start)."""
    big = [i for i, piece in enumerate(pieces) if piece.frames > MOST_FRAMES]
    return pieces[big[-1] + 1 :] if big else pieces


def scan_pieces(path: Path) -> list[Piece]:
    """The input's pieces after the first (``pieces_of``), from its packets alone; none for a
    container without an index or a stream without timestamps."""
    container = open_video(path)
    try:
        if not INDEXED_FORMATS & set(container.format.name.split(",")):
            return []
        packets: list[int] = []
        keyframes: list[int] = []
        for packet in container.demux(container.streams.video[0]):
            if packet.size == 0:  # the demuxer's flush packet
                continue
            if packet.pts is None:
                return []
            if packet.is_keyframe:
                keyframes.append(len(packets))
            packets.append(packet.pts)
    finally:
        container.close()
    return pieces_of(packets, set(keyframes))


def second_spec(first: WorkerSpec, cores: tuple[int, ...]) -> WorkerSpec:
    """The second decoder's spec from the first one's: pictures at model size (no rows), a
    small ring, bound to ``cores`` (the inference cores)."""
    return replace(first, split=False, second=True, cores=cores, rows=False, slots=RING_SLOTS)


# -- the child ---------------------------------------------------------------------------------
def idle_priority() -> str:
    """Run the calling thread (and those it starts) only when its cores would otherwise idle;
    what it got."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        return "idle"
    except (AttributeError, OSError):
        pass
    try:
        os.nice(19)
        return "nice 19"
    except OSError:
        return "normal"


def second_child(conn: Connection, shm_name: str, spec: WorkerSpec) -> None:
    """The second worker: scan, then decode each piece the server hands it, until it says
    there are no more (``video.worker._child`` calls it for ``spec.second``)."""
    shm = SharedMemory(shm_name)
    ring = RingWriter(conn, spec.slots * spec.slot_bytes)
    cores = bind_to_cores(spec.cores)
    log.debug("second decoder: priority %s, cores %s", idle_priority(), list(cores))
    with reporting(conn, shm):
        conn.send(("pieces", scan_pieces(spec.path)))
        pre = None
        if spec.preprocess is not None:
            from frameserve.processing.transform import Preprocessor

            pre = Preprocessor(spec.preprocess, spec.fused)
        preparer = FramePreparer(pre, spec.where)
        total = DecodeStats()
        while (ask := ring.wait_ask()) is not None and ask[0] == "piece":
            piece: Piece = ask[1]
            done = _decode_piece(conn, shm, ring, preparer, spec, piece)
            total.decoded += done.decoded
            total.kept += done.kept
            total.corrupt += done.corrupt
            total.seconds += done.seconds
            conn.send(("piece-end", piece.start.pts))
        resize = preparer.last.get(spec.stream_id, "processing/")
        t = total
        conn.send(("end", WorkerStats(t.decoded, t.kept, t.corrupt, t.seconds, resize, cores)))


def _decode_piece(
    conn: Connection,
    shm: SharedMemory,
    ring: RingWriter,
    preparer: FramePreparer,
    spec: WorkerSpec,
    piece: Piece,
) -> DecodeStats:
    """Decode, prepare and ship one piece's frames, as the first worker ships its own."""
    source = VideoSource(
        spec.path, spec.stream_id, spec.sampling, spec.threads, piece.start, piece.start.index,
        spec.codec_options, exact_seek=True, until=piece.ends_before,
    )  # fmt: skip
    pending: list[Prepared] = []
    for frame in source.frames(threading.Event()):
        prepared = preparer.prepare(frame, full=spec.full)
        pending.append(prepared)
        if len(pending) >= spec.group or not prepared.model_input:
            ship(conn, shm, ring, preparer, pending, spec, None)
            pending = []
    if pending:
        ship(conn, shm, ring, preparer, pending, spec, None)
    return source.stats


# -- this process ------------------------------------------------------------------------------
class SecondDecoder:
    """This process's side of a second decoder (see the module docstring).

    Threads: ``run`` reads the second worker on a thread of its own; ``attach`` and
    ``first_ended`` run on the first worker's reading thread, and so does ``_answer`` (the first
    worker's ``until`` answers come in order with its groups). The state they share is under
    one lock; every piece agreed to has its pump before the first worker's end is seen, so the
    sink, which asks for ``pumps`` once the input's own pump has ended, sees all of them.
    """

    def __init__(
        self,
        spec: WorkerSpec,
        name: str,
        warm: WarmWorker | None,
        pump: Callable[[int], FramePump],
        deliver: Callable[[FramePump, Group], None],
    ) -> None:
        """``pump(frames)``: a pump for a piece of at most ``frames`` frames; ``deliver``:
        sends one of the second worker's groups to a piece's pump."""
        self.worker = DecodeWorker(spec, name, warm=warm)
        self.worker.on_message = self._message
        self._pump, self._deliver = pump, deliver
        self._lock = threading.Lock()
        self._first: DecodeWorker | None = None
        self._first_done = False
        self._pieces: list[Piece] | None = None  # scanned and not claimed yet (None: no scan)
        self._asked: Piece | None = None  # asked of the first worker, not answered yet
        self._current: FramePump | None = None  # the piece the second worker decodes
        self._taken: list[tuple[Piece, FramePump]] = []  # agreed to, last piece first
        self._over = False  # the second worker was told there are no more pieces
        self._closed = False
        self.scanned = threading.Event()  # the pieces came (or the worker said it has none)
        self.stats = WorkerStats()

    @property
    def frames(self) -> int:
        """Frames the second worker decoded for the results (kept by the sampling)."""
        return self.stats.kept

    # -- the first worker's reading thread ---------------------------------------------------
    def attach(self, first: DecodeWorker) -> None:
        """The first worker, started: its answers come here; claims may begin."""
        first.on_message = self._answer
        with self._lock:
            self._first = first
            self._claim()

    def first_ended(self, cores: tuple[int, ...]) -> None:
        """The first worker ended (or failed): no more claims; the second worker, if it still
        decodes a piece, gets the first one's ``cores`` too."""
        with self._lock:
            if self._first_done:
                return
            self._first_done = True
            self._asked = None  # asked after its last frame: never answered, nothing agreed
            self._claim()
            busy = self._current is not None
        log.debug(
            "second decoder: the first one ended%s",
            "; moved to its cores" if busy and cores else "",
        )
        if busy and cores:
            move_to(self.worker.process.pid, (*cores, *self.worker.spec.cores))

    def _answer(self, message: tuple[Any, ...]) -> None:
        kind, pts, agreed = message
        with self._lock:
            piece = self._asked
            if kind != "until" or piece is None or piece.start.pts != pts:
                raise FrameserveError(f"second decoder: an unexpected answer {message!r}")
            self._asked = None
            log.debug("second decoder: frames %d- (%d) %s", piece.start.index, piece.frames,
                      "taken" if agreed else "refused: the first decoder is there")  # fmt: skip
            if not agreed:
                self._pieces = []
            else:
                assert self._pieces is not None
                self._pieces.pop()
                self._current = self._pump(piece.frames)
                self._taken.append((piece, self._current))
                self.worker.send(("piece", piece))
            self._claim()

    # -- its own thread ----------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Read the second worker until it ends; raises ``WorkerDied`` when it dies."""
        try:
            for group in self.worker.groups(stop):
                pump = self._current
                if pump is None:
                    raise FrameserveError("second decoder: a group outside any piece")
                self._deliver(pump, group)
            self.stats = self.worker.stats
        finally:
            self.close()

    def _message(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "pieces":
            with self._lock:
                self._pieces = claimable(message[1])
                self._claim()
            self.scanned.set()
            return
        if kind != "piece-end":
            raise FrameserveError(f"second decoder: an unexpected message {kind!r}")
        with self._lock:
            pump, self._current = self._current, None
        if pump is not None:
            pump.end()
        log.debug("second decoder: piece done")
        with self._lock:
            self._claim()

    # -- under the lock ----------------------------------------------------------------------
    def _claim(self) -> None:
        """Ask the first worker for the last piece not claimed, when the second one is free
        and nothing is asked; tell the second one when there will be no more."""
        if self._over or self._asked is not None or self._current is not None:
            return
        if self._pieces is None or (self._first is None and not self._first_done):
            return  # not scanned yet, or the first worker not started
        if self._first_done or not self._pieces or self._first is None:
            self._over = True
            self.worker.send(None)
            return
        self._asked = self._pieces[-1]
        self._first.send(("until", self._asked.start.pts))

    # -- the sink's thread -------------------------------------------------------------------
    def pumps(self) -> list[FramePump]:
        """The pieces' pumps in the input's order (call once the input's own pump ended)."""
        with self._lock:
            taken = sorted(self._taken, key=lambda t: t[0].start.pts)
        return [pump for _, pump in taken]

    def close(self) -> None:
        """End the second worker if it still runs and free its ring (once: its thread and the
        run both call this)."""
        with self._lock:
            closed, self._closed = self._closed, True
        if not closed:
            self.worker.close()


def move_to(pid: int | None, cores: tuple[int, ...]) -> None:
    """Bind every thread of process ``pid`` to ``cores`` (best effort: a process that ended
    or an OS that refuses leaves it where it was)."""
    if pid is None:
        return
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        tids = [str(pid)]
    for tid in tids:
        try:
            os.sched_setaffinity(int(tid), set(cores))
        except (AttributeError, OSError, ValueError):
            continue
