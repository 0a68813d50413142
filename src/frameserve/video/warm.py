"""Decode workers started before anything heavy is imported (``video run``).

A decode worker (``video.worker``) is a spawned Python process: it starts an interpreter and
imports numpy, OpenCV and PyAV before it can decode a frame (~0.3 s here). Started when the
run needs it, after the models loaded, that is start-up the user waits for. ``start`` spawns
them first thing instead; each imports its libraries while this process imports the runtime
and compiles the models, then waits for its input (``DecodeWorker(..., warm=...)`` sends it).
A warm worker that is not needed is told to end (``WarmWorker.close``). ``video.ahead`` may send
it its input before the models are loaded (``begin``); the run then takes over the child and
the ring it decodes into (``take``), or ends both.

``video run`` forks its workers instead where it can (``can_fork``: Linux, one thread): once it
has planned the inputs, it has imported numpy, OpenCV, PyAV and the frame path itself, so a
forked child has them at no cost and decodes at once; a spawned one spends ~0.3 s of CPU
importing them again (measured: README, video benchmark change table).

Only the standard library is imported here: this module runs before everything else.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import signal
import sys
from dataclasses import dataclass
from multiprocessing import resource_tracker
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from multiprocessing.shared_memory import SharedMemory
from typing import Any

log = logging.getLogger(__name__)

MAX_INPUTS = 4  # more inputs decode in the run's own process: a worker is ~100 MB of libraries
CLOSE_WAIT_S = 0.05  # a waiting child ends within ms of being told; one still importing is killed


@dataclass
class WarmWorker:
    """A started child waiting for its input, and this side of its pipe; or, once ``begin``
    sent it one, decoding it into ``ring`` until a run takes both over."""

    process: BaseProcess
    conn: Connection
    ring: SharedMemory | None = None  # owned here until ``take`` hands it over
    sent: Any = None  # the ``WorkerSpec`` it was sent by ``begin``

    def begin(self, ring: SharedMemory, spec: Any) -> None:
        """Send the child its input now (``video.ahead``): it decodes into ``ring``, which
        this worker owns until ``take``."""
        self.ring, self.sent = ring, spec
        try:
            self.conn.send((ring.name, spec))
        except OSError:
            pass  # it died: the run that takes it over says so

    def take(self, spec: Any) -> SharedMemory | None:
        """The ring the child decodes into, handed to the caller, when it was sent ``spec``;
        None when it was sent another."""
        if self.ring is None or self.sent != spec:
            return None
        ring, self.ring = self.ring, None
        return ring

    def close(self) -> None:
        """Tell the child it is not needed, and end it: at once if it is still importing or
        decoding (a run that decodes in its own threads does not wait for it)."""
        try:
            self.conn.send(None)
        except OSError:
            pass  # it already ended
        self.process.join(CLOSE_WAIT_S)
        if self.process.is_alive():
            self.process.kill()  # what it holds is the ring, freed below
            self.process.join(5.0)
        self.conn.close()
        if self.ring is not None:
            self.ring.close()
            self.ring.unlink()
            self.ring = None


def can_fork() -> bool:
    """Whether workers may be forked from this process now: the platform forks, and this
    process runs one thread (a fork copies the locks other threads hold, held forever)."""
    if "fork" not in multiprocessing.get_all_start_methods():
        return False
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:  # no /proc: threads cannot be counted
        return False


def start(count: int, name: str = "decode-worker", *, fork: bool = False) -> list[WarmWorker]:
    """``count`` children (none above ``MAX_INPUTS``), each importing the decoder's libraries
    and then waiting for its input; ``fork`` (only where ``can_fork``): copies of this process,
    with the libraries it has imported."""
    if count > MAX_INPUTS:
        return []
    if fork:
        if not can_fork():
            raise RuntimeError("decode workers forked from a process that runs threads")
        sys.stdout.flush()  # a child's exit flushes what it copied: written twice
        sys.stderr.flush()
        # Its children then share this process's tracker of shared memory, as spawned ones
        # do: a child would otherwise start its own, which unlinks the rings it attached when
        # the child ends.
        resource_tracker.ensure_running()
    context = multiprocessing.get_context("fork") if fork else multiprocessing.get_context("spawn")
    workers: list[WarmWorker] = []
    for n in range(count):
        conn, child = context.Pipe()
        # A forked child has copies of this side's ends of its pipe and of the pipes before
        # it, and closes them: else it would never see this side close (no EOF while it holds
        # one), and would outlive a parent that was killed.
        ours = (*[w.conn for w in workers], conn) if fork else ()
        process = context.Process(
            target=_child, args=(child, ours), name=f"{name}-{n}", daemon=True
        )
        try:
            process.start()
        except BaseException as err:
            conn.close()
            for w in workers:
                w.close()
            if not isinstance(err, OSError):
                raise
            # no processes to spare: the run decodes in its own threads
            log.warning("decode workers not started (%s): decoding in this process", err)
            return []
        finally:
            child.close()
        workers.append(WarmWorker(process, conn))
    log.debug("%d decode worker(s) %s", len(workers), "forked" if fork else "spawned")
    return workers


def _child(conn: Connection, parents: tuple[Connection, ...] = ()) -> None:
    # As every decode worker: the parent handles signals and ends its children.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for end in parents:  # forked: the parent's ends of the pipes, copied
        end.close()
    # What the child has now lives as long as it does (forked: the parent's objects, which the
    # collector then never walks, so their pages stay shared). Forked during the console
    # script's start-up, the child also copied its paused collector: on again.
    gc.freeze()
    gc.enable()
    from frameserve.video.worker import serve_warm  # numpy, OpenCV, PyAV: the slow part

    serve_warm(conn)
