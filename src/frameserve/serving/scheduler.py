"""The dynamic batcher of one model version.

Owned by the event loop that created it: ``submit`` and the batching task run on that loop
only; backends do their blocking work elsewhere and are awaited. Invariants (tested):

- outputs match inputs one to one: item *i* gets rows ``[offset_i, offset_i + batch_size_i)``;
- every submitted item's future is resolved exactly once: with its outputs, or with the error of
  its batch, ``DeadlineExceeded``, ``FrameDropped``, or ``Unavailable`` at shutdown;
- a batch running past ``model_timeout_s`` answers its callers ``DeadlineExceeded`` at once, and
  still holds its slot until the backend returns;
- at most ``concurrency`` batches execute at once; batches are formed only when a slot is free,
  so under load requests accumulate into larger batches instead of waiting behind busy slots.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field

import numpy as np

from frameserve.errors import (
    DeadlineExceeded,
    FrameDropped,
    FrameserveError,
    InvalidInput,
    ModelExecutionError,
    QueueFull,
    Unavailable,
)
from frameserve.serving.config import DynamicBatching
from frameserve.serving.stats import VersionStats
from frameserve.serving.tracing import BatchTiming
from frameserve.serving.types import ONLINE, Admission

log = logging.getLogger(__name__)

Tensors = dict[str, np.ndarray]
# ``infer(batch)``, or ``infer(batch, streams)`` with ``SchedulerSettings.row_streams``
InferFn = Callable[..., Awaitable[Tensors]]


@dataclass(slots=True, eq=False)
class WorkItem:
    """One request waiting for the model, with what the scheduler needs to place it."""

    inputs: Tensors
    batch_size: int
    future: asyncio.Future[Tensors]
    priority: int = 1  # 1 is the highest level; priority_levels + 1 is the background level
    deadline: float | None = None  # loop.time() after which it must not start
    shape_key: Hashable = None  # items batch together only when their non-batch dims match
    admission: Admission = ONLINE  # its stream, whether a newer frame may replace it
    enqueued_ns: int = field(default_factory=time.perf_counter_ns)
    expiry: asyncio.TimerHandle | None = None
    batch: BatchTiming | None = None  # set when its batch answered it (read by tracing)


@dataclass(frozen=True, slots=True)
class SchedulerSettings:
    max_batch_size: int  # 0: the model takes no batch dimension
    batching: DynamicBatching | None  # None: every request runs as its own batch
    concurrency: int  # batches that may execute at once (backend instances)
    max_queue_size: int = 1024
    priority_levels: int = 1
    # A batch running longer answers its callers DeadlineExceeded; its slot stays busy until
    # the runtime returns (a runtime call cannot be interrupted safely). None: wait.
    model_timeout_s: float | None = None
    # The backend keeps per-stream state: ``infer`` also gets each row's stream id
    row_streams: bool = False


class Scheduler:
    """Queues work items per priority level and runs them in batches on the backend."""

    def __init__(self, infer: InferFn, settings: SchedulerSettings, stats: VersionStats) -> None:
        self._infer = infer
        self._s = settings
        self._stats = stats
        db = settings.batching
        self._batch_limit = settings.max_batch_size if db is not None else 0
        self._delay_s = (db.max_queue_delay_ms / 1000.0) if db is not None else 0.0
        self._preferred = sorted(db.preferred_batch_sizes, reverse=True) if db is not None else []
        # One deque per priority level, plus a background level below them all (video jobs):
        # it is batched only with what the levels above leave, and is never dropped.
        self._levels: list[deque[WorkItem]] = [deque() for _ in range(settings.priority_levels + 1)]
        self._streams: dict[str, deque[WorkItem]] = {}
        self._queued = 0
        self._busy = 0
        self._closing = False
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._running: dict[asyncio.Task[None], list[WorkItem]] = {}  # executing batches
        self._loop_task: asyncio.Task[None] | None = None
        self._batches = 0  # batches started, to number them

    # -- public, on the owning loop ---------------------------------------------------------
    def start(self) -> None:
        # An empty context: batches belong to no one request, so they carry no request's log ids.
        self._loop_task = asyncio.get_running_loop().create_task(
            self._run(), name="scheduler", context=contextvars.Context()
        )
        self._loop_task.add_done_callback(self._log_task_failure)

    @property
    def queued(self) -> int:
        return self._queued

    @property
    def busy(self) -> int:
        return self._busy

    def submit(self, item: WorkItem) -> None:
        """Queue an item; raise ``QueueFull`` or ``Unavailable`` instead of queueing."""
        if self._closing:
            raise Unavailable("model version is unloading or the server is shutting down")
        if self._batch_limit > 0 and item.batch_size > self._batch_limit:
            raise InvalidInput(
                f"batch size {item.batch_size} exceeds max_batch_size {self._batch_limit}"
            )
        a = item.admission
        if a.droppable and a.stream_id is not None and a.max_inflight > 0:
            self._drop_stale(a.stream_id, a.max_inflight)
        if self._queued >= self._s.max_queue_size:
            raise QueueFull(
                f"queue of {self._stats.model} v{self._stats.version} is full "
                f"(max_queue_size {self._s.max_queue_size})"
            )
        self._levels[item.priority - 1].append(item)
        if a.droppable and a.stream_id is not None:
            self._streams.setdefault(a.stream_id, deque()).append(item)
        self._queued += 1
        self._stats.queue_depth(self._queued)
        self._idle.clear()
        if item.deadline is not None:
            loop = asyncio.get_running_loop()
            item.expiry = loop.call_at(item.deadline, self._expire, item)
        self._wake.set()

    async def close(self, timeout: float | None = None) -> None:
        """Stop taking work, let queued and running batches finish, then stop.

        After ``timeout`` seconds whatever is still waiting is answered with ``Unavailable``.
        """
        self._closing = True
        self._wake.set()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            self._fail_all(Unavailable("server shut down before the request ran"))
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        # Batches still running answer their callers themselves; don't wait on a stuck backend.
        for batch in list(self._running.values()):
            for item in batch:
                self._resolve_error(item, Unavailable("server shut down while the request ran"))

    # -- queue bookkeeping ------------------------------------------------------------------
    def _remove(self, item: WorkItem) -> None:
        self._levels[item.priority - 1].remove(item)
        self._forget(item)

    def _forget(self, item: WorkItem) -> None:
        """Bookkeeping for an item leaving the queue (popped, dropped or expired)."""
        self._queued -= 1
        self._stats.queue_depth(self._queued)
        if item.expiry is not None:
            item.expiry.cancel()
        a = item.admission
        if a.droppable and a.stream_id is not None:
            q = self._streams.get(a.stream_id)
            if q is not None:
                q.remove(item)
                if not q:
                    del self._streams[a.stream_id]
        self._update_idle()

    def _update_idle(self) -> None:
        if self._queued == 0 and self._busy == 0:
            self._idle.set()

    def _drop_stale(self, stream_id: str, limit: int) -> None:
        q = self._streams.get(stream_id)
        while q and len(q) >= limit:
            stale = q[0]
            self._remove(stale)
            self._resolve_error(
                stale, FrameDropped(f"stream {stream_id}: replaced by a newer frame")
            )

    def _expire(self, item: WorkItem) -> None:
        item.expiry = None
        if item in self._levels[item.priority - 1]:
            self._remove(item)
            self._resolve_error(item, DeadlineExceeded("request timeout expired while queued"))

    def _fail_all(self, err: FrameserveError) -> None:
        for level in self._levels:
            while level:
                item = level.popleft()
                self._forget(item)
                self._resolve_error(item, err)

    def _resolve_error(self, item: WorkItem, err: BaseException) -> None:
        if not item.future.done():
            item.future.set_exception(err)
            self._stats.record_failure(
                time.perf_counter_ns() - item.enqueued_ns, type(err).__name__
            )

    # -- batching ---------------------------------------------------------------------------
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self._queued == 0 or self._busy >= self._s.concurrency:
                self._wake.clear()
                await self._wake.wait()
                continue
            # Reserve the slot before items leave the queue, so that queue + running never
            # reads zero (idle) while a batch is between the two.
            self._busy += 1
            batch, wait_until = self._take_batch(loop.time())
            if batch:
                self._launch(batch)
                continue
            self._busy -= 1
            self._update_idle()
            if wait_until is not None:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), max(0.0, wait_until - loop.time()))

    def _head(self) -> WorkItem | None:
        """The oldest item of the highest non-empty priority level, skipping abandoned ones."""
        for level in self._levels:
            while level and level[0].future.done():  # caller went away or item was answered
                self._forget(level.popleft())
            if level:
                return level[0]
        return None

    def _take_batch(self, now: float) -> tuple[list[WorkItem], float | None]:
        head = self._head()
        if head is None:
            return [], None
        if self._batch_limit <= 0:
            self._levels[head.priority - 1].popleft()
            self._forget(head)
            return [head], None
        picked, sizes = self._compatible(head)
        total = sizes[-1]
        cut = len(picked)
        if total < self._batch_limit:
            for p in self._preferred:  # the largest preferred size we can form exactly
                if p in sizes:
                    cut = sizes.index(p) + 1
                    break
            else:
                # Hold the batch open only while every other slot is busy: waiting with an idle
                # slot would trade throughput for nothing.
                ready_at = head.enqueued_ns / 1e9 - time.perf_counter() + now + self._delay_s
                others_busy = self._busy >= self._s.concurrency  # _busy counts our reserved slot
                if self._delay_s > 0 and now < ready_at and others_busy and not self._closing:
                    return [], ready_at
        batch = picked[:cut]
        for item in batch:
            self._remove(item)
        return batch, None

    def _compatible(self, head: WorkItem) -> tuple[list[WorkItem], list[int]]:
        """Items that can join ``head`` in one batch, in priority then arrival order."""
        picked: list[WorkItem] = []
        sizes: list[int] = []
        total = 0
        for level in self._levels:
            for item in level:
                if item.future.done() or item.shape_key != head.shape_key:
                    continue
                if total + item.batch_size > self._batch_limit:
                    return picked, sizes
                total += item.batch_size
                picked.append(item)
                sizes.append(total)
        return picked, sizes

    def _launch(self, batch: list[WorkItem]) -> None:
        """Run ``batch`` on the slot that ``_run`` reserved for it."""
        task = asyncio.get_running_loop().create_task(self._execute(batch))
        self._running[task] = batch
        task.add_done_callback(self._forget_task)
        task.add_done_callback(self._log_task_failure)

    def _model_timed_out(self, batch: list[WorkItem]) -> None:
        """The model call outlived ``model_timeout_s``: answer its callers, keep the slot."""
        timeout = self._s.model_timeout_s
        log.warning(
            "%s v%s: a batch of %d ran longer than %g s; its callers got 504, its instance "
            "stays busy until the runtime returns",
            self._stats.model, self._stats.version, len(batch), timeout,
        )  # fmt: skip
        err = DeadlineExceeded(
            f"model {self._stats.model} v{self._stats.version}: the model call ran longer than "
            f"{timeout:g} s (model_timeout_s, --model-timeout)"
        )
        for item in batch:
            self._resolve_error(item, err)

    async def _execute(self, batch: list[WorkItem]) -> None:
        start = time.perf_counter_ns()
        timer = None
        if self._s.model_timeout_s is not None:
            loop = asyncio.get_running_loop()
            timer = loop.call_later(self._s.model_timeout_s, self._model_timed_out, batch)
        try:
            inputs = self._assemble(batch)
            t_in = time.perf_counter_ns()
            if self._s.row_streams:
                outputs = await self._infer(inputs, self._row_streams(batch))
            else:
                outputs = await self._infer(inputs)
            t_inf = time.perf_counter_ns()
            answered = self._distribute(batch, outputs)
            t_out = time.perf_counter_ns()
            items = sum(i.batch_size for i in batch) if self._s.max_batch_size else len(batch)
            self._stats.record_batch(items, len(batch), t_in - start, t_inf - t_in, t_out - t_inf)
            self._batches += 1
            timing = BatchTiming(self._batches, items, len(batch), start, t_in, t_inf, t_out)
            for item in answered:  # callers answered earlier (shutdown, cancelled) don't count
                item.batch = timing  # its caller resumes after this task yields
                self._stats.record_success(t_out - item.enqueued_ns, start - item.enqueued_ns)
        except asyncio.CancelledError:
            for item in batch:
                self._resolve_error(item, Unavailable("server shut down while the request ran"))
            raise
        except Exception as err:  # noqa: BLE001 - every caller must get the batch's error
            if not isinstance(err, FrameserveError):
                log.exception("batch of %s failed", self._stats.model)
                err = ModelExecutionError(f"model raised {type(err).__name__}: {err}")
            for item in batch:
                self._resolve_error(item, err)
        finally:
            if timer is not None:
                timer.cancel()
            self._busy -= 1
            self._update_idle()
            self._wake.set()

    def _assemble(self, batch: list[WorkItem]) -> Tensors:
        if len(batch) == 1:
            return batch[0].inputs
        names = batch[0].inputs.keys()
        return {n: np.concatenate([item.inputs[n] for item in batch]) for n in names}

    def _row_streams(self, batch: list[WorkItem]) -> list[str | None]:
        """The stream of each row of the assembled batch (None: an online request)."""
        if self._s.max_batch_size <= 0:
            return [batch[0].admission.stream_id]
        return [item.admission.stream_id for item in batch for _ in range(item.batch_size)]

    def _distribute(self, batch: list[WorkItem], outputs: Tensors) -> list[WorkItem]:
        """Give each item its rows; return the items this call answered."""
        answered: list[WorkItem] = []
        if self._s.max_batch_size <= 0:  # no batch dimension: one item, the whole output
            for item in batch:
                if not item.future.done():
                    item.future.set_result(outputs)
                    answered.append(item)
            return answered
        total = sum(item.batch_size for item in batch)
        for name, arr in outputs.items():
            if arr.ndim == 0 or arr.shape[0] != total:
                raise ModelExecutionError(
                    f"output {name!r}: expected batch dimension {total}, model returned shape "
                    f"{list(arr.shape)}"
                )
        offset = 0
        for item in batch:
            end = offset + item.batch_size
            if not item.future.done():
                rows = (
                    outputs if len(batch) == 1 else {n: a[offset:end] for n, a in outputs.items()}
                )
                item.future.set_result(rows)
                answered.append(item)
            offset = end
        return answered

    def _forget_task(self, task: asyncio.Task[None]) -> None:
        self._running.pop(task, None)

    def _log_task_failure(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("scheduler task of %s failed", self._stats.model, exc_info=task.exception())
