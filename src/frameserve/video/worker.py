"""FFmpeg in worker processes, so a crash while reading untrusted media fails one job or stream,
never the server.

``WorkerProcess`` is a spawned child (``spawn``: nothing of the server's threads or locks is
inherited) and the server's end of its pipe; a child that dies (a signal, ``abort``, the
out-of-memory killer) shows as the pipe closing and is raised as ``WorkerDied``. Three kinds
run on it: a job's ``DecodeWorker`` (below), a live stream's ``LiveWorker``
(``video.live.worker``) and one-off calls through ``run_isolated`` (a probe of a file's header,
the remux that copies a job's audio). Children ignore SIGINT and SIGTERM: the server ends them.

A job's decoding and pre-processing hand model-size tensors to the server through shared memory:

```
worker process                                    server: the job's decoder thread
 VideoSource -> FramePreparer.prepare ->           DecodeWorker.groups(): message -> copy the
 group -> tensor (and whole frames, when a sink    group out, free it -> FramePump.send (the
 needs them) into the ring ────────────────pipe──> server's loop, schedulers, sinks as always)
```

The ring holds ``WorkerSpec.slots`` groups of at most ``slot_bytes``; the child writes groups
one after another and the server frees them in the order it reads them (``video.ring``: FIFO, so
a group of another size fits too); the child waits for room, so the ring and the pump's bounded
queue are the back-pressure. Jobs keep the smallest ring (``SLOTS``: a server runs many);
``video run`` gives its workers room to decode ahead (``ring_slots``): while the models still
load (``video.ahead``), and through the moments the model side is slower than the decoder. A
bound worker of ``video run`` (``WorkerSpec.rows``) ships, while the server asks for it
(``video.balance``), the rows of each picture that the model's sampling reads instead of the
picture at model size, and the server samples them (``prepare.sampled``). The pipe carries only
small messages (frame timestamps, geometry, where in the ring: ``video.shipping``).

When the child dies ``groups`` raises ``WorkerDied`` with the exit status, and the caller
decides (a job is retried from its checkpoint, at most ``--max-job-retries`` times). An
ordinary decoding error (a file that is not a video) comes back as its message and is raised as
``VideoError``, as in-process decoding would.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from frameserve.errors import FrameserveError, VideoError
from frameserve.processing.spec import PreprocessSpec
from frameserve.processing.transform import Geometry, Preprocessor, opencv_on_caller_threads
from frameserve.processing.yuv import RowsShape, YuvResizer
from frameserve.video.defects import DefectsSpec, with_defects
from frameserve.video.filters import FilterChain
from frameserve.video.frames import Sampling, SeekPoint
from frameserve.video.prepare import FramePreparer, Group, Prepared, sampled
from frameserve.video.ring import RingWriter
from frameserve.video.shipping import Room, reserve, ship, unpack_frames
from frameserve.video.warm import WarmWorker

if TYPE_CHECKING:
    from fractions import Fraction

    from frameserve.video.decode import VideoSource

log = logging.getLogger(__name__)
T = TypeVar("T")

SLOTS = 3  # groups in the ring: one being written, one being read, one spare
# ``video run``: frames a run's workers may decode ahead of the models, shared by its inputs,
# and the most shared memory that takes (``faces``, one input: 32 groups of 8, 28 MB;
# ``person-mask`` 20 groups, 31 MB; half of a default Docker container's 64 MB ``/dev/shm``).
# A forked worker decodes ~0.1 s before the models are ready: 128 frames filled on ``pan``
# and the worker waited 0.02-0.09 s for room (README, video benchmark change table).
READ_AHEAD_FRAMES = 256
READ_AHEAD_BYTES = 32 << 20
POLL_S = 0.1


class WorkerDied(VideoError):
    """A worker process ended without finishing (a crash, a kill)."""


@dataclass(frozen=True)
class WorkerSpec:
    """What a decode worker needs (pickled to the child)."""

    path: Path
    stream_id: int
    sampling: Sampling
    threads: int
    start: SeekPoint | None
    first_index: int
    codec_options: dict[str, str]
    preprocess: PreprocessSpec | None  # None: whole frames only (crops, interpolation)
    fused: bool  # the runtime graph normalises: tensors stay uint8
    full: bool  # whole RGB frames travel too (video out, crops, interpolation)
    group: int
    slot_bytes: int
    where: str = "pipeline"
    defects: DefectsSpec | None = None  # flag each frame's defects (``video.defects``)
    filters: FilterChain | None = None  # the pipeline's FFmpeg filters, run after decoding
    # Cores the child binds itself to (``cpu.decoder_cores``); on one core it decodes and
    # pre-processes on one thread: a second thread would only hand frames over on that core.
    cores: tuple[int, ...] = ()
    slots: int = SLOTS  # groups the ring holds (``ring_slots``)
    # The server may ask for pictures' rows instead of the pictures (``video.balance``): a
    # bound worker of ``video run`` whose pictures have a row plan that fits the ring twice.
    rows: bool = False
    # ``video.split``: a second decoder takes the input's last pieces; this worker (the
    # first) answers the server's ``until`` asks and stops where the second one starts
    split: bool = False
    second: bool = False  # this worker is the second decoder (pieces, at idle priority)


@dataclass
class WorkerStats:
    """The child's decoding counters, sent with its end."""

    decoded: int = 0
    kept: int = 0
    corrupt: int = 0
    seconds: float = 0.0
    resize: str = "processing/"
    cores: tuple[int, ...] = ()  # the cores it was bound to; () when it was not
    rows: int = 0  # frames shipped as rows, sampled by the server (``video.balance``)


def slot_bytes(spec: PreprocessSpec | None, fused: bool, size: tuple[int, int], group: int,
               full: bool) -> int:  # fmt: skip
    """Bytes one group needs: what it ships of a ``size`` frame (the picture at model size,
    uint8; the normalised tensor where padding is inside the tensor) and, for ``full``, the
    whole frames."""
    w, h = size
    need = 0
    if spec is not None:
        pre = Preprocessor(spec, fused)
        probe = np.zeros((h, w, 3), np.uint8)
        in_tensor = spec.resize.pad_in == "tensor"
        shipped = pre([probe])[0] if in_tensor else pre.resize_image(probe)[0]
        need += shipped.nbytes * group
    if full:
        need += w * h * 3 * group
    return max(need, 1)


def ring_slots(slot_bytes: int, group: int, read_ahead: int) -> int:
    """Groups in a worker's ring: ``SLOTS``, or room for ``read_ahead`` frames of groups of
    ``group`` within this input's share of ``READ_AHEAD_BYTES`` (``read_ahead`` frames is
    this input's share of ``READ_AHEAD_FRAMES``; 0 for jobs)."""
    if read_ahead <= 0:
        return SLOTS
    share = READ_AHEAD_BYTES * read_ahead // READ_AHEAD_FRAMES
    return max(SLOTS, min(read_ahead // max(1, group), share // max(1, slot_bytes)))


def input_spec(
    source: VideoSource,
    pre: Preprocessor | None,
    *,
    group: int,
    full: bool,
    where: str,
    defects: DefectsSpec | None,
    cores: tuple[int, ...],
    read_ahead: int = 0,
    split: bool = False,
) -> WorkerSpec:
    """What a worker needs to decode ``source`` and ship what ``pre`` makes of its frames
    (``pre`` None: whole frames only), in groups of ``group``; one place for ``VideoRun`` and
    for decoding ahead of the model load (``video.ahead``), whose specs must come out equal;
    ``split``: a second decoder takes the input's last pieces (``video.split``)."""
    spec = pre.spec if pre is not None else None
    fused = pre.fused if pre is not None else False
    info = source.info
    size = slot_bytes(spec, fused, (info.width, info.height), group, full)
    slots = ring_slots(size, group, read_ahead)
    n = FramePreparer(pre, where).row_bytes((info.width, info.height)) if pre else 0
    rows = (
        len(cores) == 1 and read_ahead > 0 and not full and source.filters is None
        and 0 < 2 * group * n <= slots * size
    )  # fmt: skip
    return WorkerSpec(
        source.path, source.stream_id, source.sampling, source.threads, source.start,
        source.first_index, source.codec_options, spec, fused, full, group, size, where,
        defects=defects, filters=source.filters, cores=cores, slots=slots, rows=rows,
        split=split,
    )  # fmt: skip


# -- the child ---------------------------------------------------------------------------------
def _child(conn: Connection, shm_name: str, spec: WorkerSpec) -> None:
    """The worker process: decode, prepare and ship groups until the end, then say so."""
    # The server handles signals (a service manager sends SIGTERM to every process of the
    # service); the child only ends when told or when its parent is gone.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from frameserve.video.decode import VideoSource, read_ahead

    opencv_on_caller_threads()
    if spec.second:
        from frameserve.video.split import second_child

        second_child(conn, shm_name, spec)
        return
    shm = SharedMemory(shm_name)
    ring = RingWriter(conn, spec.slots * spec.slot_bytes)
    cores = bind_to_cores(spec.cores)
    with reporting(conn, shm):
        until = Until(conn, ring) if spec.split else None
        source = VideoSource(
            spec.path, spec.stream_id, spec.sampling, spec.threads, spec.start,
            spec.first_index, spec.codec_options, filters=spec.filters,
            until=until.reached if until is not None else None,
        )  # fmt: skip
        pre = Preprocessor(spec.preprocess, spec.fused) if spec.preprocess else None
        preparer = FramePreparer(pre, spec.where)
        pending: list[Prepared] = []
        stop = threading.Event()
        decoded = source.frames(stop)
        # A first decoder (``split``) decodes on this thread too: its ``Until`` answers on the
        # pipe and reads the ring's asks, which this thread's shipping shares.
        one_thread = len(cores) == 1 or spec.split
        frames = decoded if one_thread else read_ahead(decoded, stop, "ffmpeg")
        room: Room | None = None  # the group's rows' room in the ring, when it ships rows
        shipped_rows = 0
        for frame in with_defects(frames, spec.defects, source.stats):
            if spec.rows and not pending:  # what the server asks for, group by group
                room = reserve(frame, ring, shm, preparer, spec)
            rows = room.frame(len(pending)) if room is not None else None
            prepared = preparer.prepare(frame, full=spec.full, rows=rows)
            pending.append(prepared)
            if len(pending) >= spec.group or not prepared.model_input:
                shipped_rows += ship(conn, shm, ring, preparer, pending, spec, room)
                pending, room = [], None
        if pending:
            shipped_rows += ship(conn, shm, ring, preparer, pending, spec, room)
        s = source.stats
        resize = preparer.last.get(spec.stream_id, "processing/")
        stats = WorkerStats(s.decoded, s.kept, s.corrupt, s.seconds, resize, cores, shipped_rows)
        conn.send(("end", stats))


@contextmanager
def reporting(conn: Connection, shm: SharedMemory) -> Iterator[None]:
    """A decode worker's work: an error ends it as its last message to the server (which fails
    the run with it); the ring and the pipe are closed either way."""
    try:
        yield
    except FrameserveError as err:
        conn.send(("error", err.message))
    except Exception as err:  # noqa: BLE001 - reported to the server, which fails the run
        conn.send(("error", f"{type(err).__name__}: {err}"))
    finally:
        shm.close()
        conn.close()


class Until:
    """Where a first decoder stops (``video.split``; its ``VideoSource``'s ``until``): the
    server asks it to stop before the keyframe at ``pts`` where the second decoder would
    start; it agrees when it has not decoded a frame at or after ``pts`` yet, and says which,
    in order with its groups."""

    def __init__(self, conn: Connection, ring: RingWriter) -> None:
        self.conn, self.ring = conn, ring
        self.stop_at: int | None = None  # the earliest pts agreed to
        self._last: int | None = None  # the pts of the last frame taken

    def reached(self, pts: int) -> bool:
        """Whether the frame at ``pts`` (the next decoded, in presentation order) is the
        second decoder's: every ask that came is answered first."""
        self.ring.poll()
        while self.ring.asks:
            ask = self.ring.asks.popleft()
            if ask[0] != "until":
                continue
            at = int(ask[1])
            agreed = self._last is None or self._last < at
            if agreed and (self.stop_at is None or at < self.stop_at):
                self.stop_at = at
            self.conn.send(("until", at, agreed))
        if self.stop_at is not None and pts >= self.stop_at:
            return True
        self._last = pts
        return False


def bind_to_cores(cores: tuple[int, ...]) -> tuple[int, ...]:
    """Bind the calling thread, and the threads it starts afterwards, to ``cores`` (the child
    calls it first, so the whole worker); what it got (``()`` when none were asked for or the
    OS refused: the decoder then runs unbound, as fast as before, and says so in the log)."""
    if not cores:
        return ()
    try:
        os.sched_setaffinity(0, cores)
    except (AttributeError, OSError) as err:
        log.warning("decode worker: not bound to cores %s (%s)", list(cores), err)
        return ()
    return tuple(sorted(os.sched_getaffinity(0)))


def serve_warm(conn: Connection) -> None:
    """A warm worker (``video.warm``): wait for the input, then decode it as ``_child`` does;
    ``None`` or a closed pipe ends it (the run decodes in its own process, or ended)."""
    try:
        message = conn.recv()
    except (EOFError, OSError):
        return
    if message is None:
        conn.close()
        return
    shm_name, spec = message
    _child(conn, shm_name, spec)


# -- one call in a child -----------------------------------------------------------------------
def _call(conn: Connection, target: Callable[..., Any], args: tuple[Any, ...]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        conn.send(("done", target(*args)))
    except FrameserveError as err:
        conn.send(("error", err))
    except Exception as err:  # noqa: BLE001 - reported to the caller
        conn.send(("error", VideoError(f"{type(err).__name__}: {err}")))
    finally:
        conn.close()


def run_isolated(
    target: Callable[..., T],
    *args: Any,
    name: str,
    doing: str,
    timeout_s: float = 120.0,
    stop: threading.Event | None = None,
) -> T:
    """``target(*args)`` in a spawned child (a probe, a remux: FFmpeg reading an untrusted file)
    and its result; its ``FrameserveError`` is raised here as it was; a child that dies raises
    ``WorkerDied`` (saying it died while ``doing``), one that takes longer than ``timeout_s`` is
    killed and raises ``VideoError``, and so is one still running when ``stop`` is set (a
    cancelled job: FFmpeg may block in a read, so it is killed, never waited for). ``target``
    must be a module-level function and its arguments picklable."""
    worker = WorkerProcess(_call, (target, args), name, doing)
    try:
        deadline = time.monotonic() + timeout_s
        while (message := worker.receive(POLL_S)) is None:
            if stop is not None and stop.is_set():
                raise VideoError(f"{doing}: stopped")
            if time.monotonic() > deadline:
                raise VideoError(f"{doing}: expected to take at most {timeout_s:g} s; stopped")
        kind, value = message
        if kind == "error":
            raise value
        return value  # type: ignore[no-any-return]
    finally:
        worker.close()


# -- the server's side -------------------------------------------------------------------------
class WorkerProcess:
    """A spawned child and the server's end of its pipe: what decode workers of jobs and of live
    streams share (start, receive, send, notice a death, end it)."""

    def __init__(
        self,
        target: Any,
        args: tuple[Any, ...],
        name: str,
        doing: str = "decoding",
        warm: WarmWorker | None = None,
    ) -> None:
        """``doing``: what the child does, for the message when it dies; ``warm``: a child
        already started (``video.warm``) to take over instead of starting one."""
        self.doing = doing
        self._sending = threading.Lock()
        if warm is not None:
            self._conn, self.process = warm.conn, warm.process
            return
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self.process = context.Process(target=target, args=(child, *args), name=name, daemon=True)
        try:
            self.process.start()
        except BaseException:
            self._conn.close()
            raise
        finally:
            child.close()

    def receive(self, timeout_s: float) -> Any:
        """The child's next message, or None when none came within ``timeout_s``; raises
        ``WorkerDied`` when the child ended without a last message."""
        try:
            if not self._conn.poll(timeout_s):
                if not self.process.is_alive() and not self._conn.poll(0):
                    raise self._died()
                return None
            return self._conn.recv()
        except (EOFError, OSError):
            raise self._died() from None

    def send(self, message: Any) -> None:
        """Tell the child something; a child that finished or died meanwhile is not an error
        here (the next ``receive`` says which)."""
        with self._sending:  # two threads send to a first decoder (``video.split``)
            try:
                self._conn.send(message)
            except OSError:
                pass

    def _died(self) -> WorkerDied:
        self.process.join(1.0)
        code = self.process.exitcode
        if code is not None and code < 0:
            try:
                how = f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"was killed by signal {-code}"
        else:
            how = f"exited with status {code}"
        return WorkerDied(f"the decode worker {how} while {self.doing}")

    def close(self) -> None:
        """End the child (if it still runs)."""
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5.0)
        self._conn.close()


class DecodeWorker(WorkerProcess):
    """One input decoded in a child process; ``groups`` yields what it prepared."""

    def __init__(self, spec: WorkerSpec, name: str, warm: WarmWorker | None = None) -> None:
        """``warm``: a child started earlier (``video.warm``), sent its input here; or, when
        it was sent one already (``video.ahead``), taken over with what it decoded since, if
        that input's spec is ``spec``; otherwise it is ended and a fresh child decodes."""
        self.spec = spec
        self.stats = WorkerStats()
        # the child's other messages (``video.split``: a first decoder's ``until`` answers, a
        # second decoder's pieces), handed over in order with its groups on the reading thread
        self.on_message: Callable[[tuple[Any, ...]], None] | None = None
        ring = None
        if warm is not None and warm.sent is not None:
            ring = warm.take(spec)
            if ring is None:
                log.info("%s: decoded ahead for another plan than the loaded model's; "
                         "decoding afresh", name)  # fmt: skip
                warm.close()
                warm = None
        self._shm = ring or SharedMemory(create=True, size=spec.slots * spec.slot_bytes)
        pre = Preprocessor(spec.preprocess, spec.fused) if spec.preprocess else None
        self._resizer = YuvResizer(pre) if spec.rows and pre is not None else None
        try:
            super().__init__(_child, (self._shm.name, spec), name, warm=warm)
            if warm is not None and ring is None:
                self.send((self._shm.name, spec))  # a child that died says so in ``groups``
        except BaseException:
            self._shm.close()
            self._shm.unlink()
            raise

    def groups(self, stop: threading.Event) -> Iterator[Group]:
        """Each group the child prepared (frames with their geometry and, where shipped, whole
        images; the group's tensor, pictures still to normalise where it has them), until its
        end. Raises ``WorkerDied`` when the child ends without finishing, ``VideoError`` for
        its decoding errors."""
        while not stop.is_set():
            message = self.receive(POLL_S)
            if message is None:
                continue
            kind = message[0]
            if kind == "end":
                self.stats = message[1]
                return
            if kind == "error":
                raise VideoError(message[1])
            if kind != "group":
                if self.on_message is None:
                    raise VideoError(f"decode worker: an unexpected message {kind!r}")
                self.on_message(message)
                continue
            _, base, tensor_info, time_base, geometry, metas, rows = message
            yield self._unpack(base, tensor_info, time_base, geometry, metas, rows)

    def ask_for_rows(self, rows: bool) -> None:
        """Ask the child to ship pictures' rows (True) or pictures (``video.balance``); from
        its next group on. Ignored by a worker whose spec does not allow rows."""
        if self.spec.rows:
            self.send(("rows", rows))

    def _unpack(
        self,
        base: int,
        tensor_info: Any,
        time_base: Fraction,
        geometry: Geometry | None,
        metas: list[tuple[Any, ...]],
        rows: RowsShape | None,
    ) -> Group:
        buf = self._shm.buf
        assert buf is not None  # (None only once closed)
        tensor, done = None, True
        if tensor_info is not None:
            shape, dtype, done = tensor_info
            tensor = np.ndarray(shape, dtype, buffer=buf, offset=base)
            if rows is None:
                tensor = tensor.copy()
        frames = unpack_frames(self.spec.stream_id, time_base, geometry, metas, buf[base:])
        group = Group(frames, tensor, done, rows)
        if rows is not None:  # sampled straight from the ring, which holds the only copy
            if self._resizer is None:
                raise VideoError("decode worker: shipped rows to a reader that cannot sample")
            group = sampled(group, self._resizer)
        self.send(("free", base))
        return group

    def close(self) -> None:
        """End the child (if it still runs) and free the ring."""
        super().close()
        self._shm.close()
        self._shm.unlink()
