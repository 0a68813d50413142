"""The dynamic batcher's invariants (STYLE habit 6).

The scheduler's contract with a backend is the one coroutine it awaits, ``infer(batch) ->
outputs``; here a small async function stands in for the backend so that a test can block it,
make it raise, or record every batch it is given. The backends themselves are tested with real
runtimes in ``tests/backends`` and the whole path in ``test_repository.py``.

Each test runs its own event loop (``asyncio.run``) and waits with ``asyncio.wait_for`` so a
hang fails the test instead of blocking the suite. No test asserts how fast anything is.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable
from typing import Any

import numpy as np
import pytest

from frameserve.errors import (
    DeadlineExceeded,
    FrameDropped,
    InvalidInput,
    ModelExecutionError,
    QueueFull,
    Unavailable,
)
from frameserve.serving.config import DynamicBatching
from frameserve.serving.scheduler import Scheduler, SchedulerSettings, WorkItem
from frameserve.serving.stats import VersionStats
from frameserve.serving.types import Admission

WAIT = 10.0  # seconds before a test counts as hung
Tensors = dict[str, np.ndarray]


def run(coro: Awaitable[Any]) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, 4 * WAIT)

    return asyncio.run(bounded())


class FakeModel:
    """Stands in for a backend: ``y = 2 * x + 1`` row by row; records every batch it runs.

    ``gate`` (when set) blocks every batch until the test opens it; ``fail_on`` makes a batch
    containing that value raise; ``wrong_rows`` returns one row too few.
    """

    def __init__(self, gated: bool = False) -> None:
        self.gate = asyncio.Event()
        if not gated:
            self.gate.set()
        self.batches: list[np.ndarray] = []
        self.running = 0
        self.max_running = 0
        self.started = asyncio.Event()  # set each time a batch starts
        self.fail_on: int | None = None
        self.error: Exception = ValueError("poisoned row")
        self.wrong_rows = False

    async def infer(self, inputs: Tensors) -> Tensors:
        x = inputs["x"]
        self.batches.append(x.copy())
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        self.started.set()
        try:
            await self.gate.wait()
            await asyncio.sleep(0)  # let other tasks run while "computing"
            if self.fail_on is not None and (x == self.fail_on).any():
                raise self.error
            y = 2 * x + 1
            return {"y": y[:-1] if self.wrong_rows else y, "ids": x[:, 0].copy()}
        finally:
            self.running -= 1

    def sizes(self) -> list[int]:
        return [len(b) for b in self.batches]

    async def wait_started(self, batches: int) -> None:
        """Wait until at least ``batches`` batches have been handed to the model."""
        while len(self.batches) < batches:
            self.started.clear()
            await asyncio.wait_for(self.started.wait(), WAIT)


def make(
    model: FakeModel,
    max_batch_size: int = 8,
    concurrency: int = 1,
    max_queue_size: int = 1024,
    model_timeout_s: float | None = None,
    **batching: Any,
) -> Scheduler:
    """A started scheduler over ``model`` (call inside a running loop)."""
    db = DynamicBatching(max_queue_size=max_queue_size, **batching)
    settings = SchedulerSettings(
        max_batch_size=max_batch_size,
        batching=db,
        concurrency=concurrency,
        max_queue_size=max_queue_size,
        priority_levels=db.priority_levels,
        model_timeout_s=model_timeout_s,
    )
    s = Scheduler(model.infer, settings, VersionStats("fake", "1", None))
    s.start()
    return s


def item(rows: list[int] | np.ndarray, width: int = 3, **kw: Any) -> WorkItem:
    """A work item whose row ``i`` holds the value ``rows[i]`` in every column."""
    x = np.repeat(np.asarray(rows, np.int64)[:, None], width, axis=1)
    loop = asyncio.get_running_loop()
    return WorkItem(
        inputs={"x": x}, batch_size=len(x), future=loop.create_future(), shape_key=width, **kw
    )


async def result(it: WorkItem) -> Tensors:
    return await asyncio.wait_for(asyncio.shield(it.future), WAIT)


async def error_of(it: WorkItem) -> BaseException:
    try:
        await asyncio.wait_for(asyncio.shield(it.future), WAIT)
    except TimeoutError:
        raise
    except Exception as err:  # noqa: BLE001 - the test inspects whatever the caller got
        return err
    raise AssertionError("expected the item to fail, but it succeeded")


def check_rows(it: WorkItem, out: Tensors) -> None:
    """The caller got exactly its own rows, in order."""
    x = it.inputs["x"]
    np.testing.assert_array_equal(out["y"], 2 * x + 1)
    np.testing.assert_array_equal(out["ids"], x[:, 0])


async def settle(s: Scheduler) -> None:
    """Close gracefully: every queued and running item is answered first."""
    await asyncio.wait_for(s.close(), WAIT)
    assert s.queued == 0 and s.busy == 0


# -- outputs match inputs ------------------------------------------------------------------


@pytest.mark.parametrize("concurrency", [1, 3])
def test_each_caller_gets_exactly_its_rows_under_concurrent_submitters(concurrency: int) -> None:
    async def main() -> None:
        model = FakeModel()
        s = make(model, max_batch_size=8, concurrency=concurrency, max_queue_delay_ms=1)
        rng = random.Random(1234)
        counter = iter(range(1, 10**9))
        items: list[WorkItem] = []

        async def submitter(n: int) -> None:
            for _ in range(n):
                it = item([next(counter) for _ in range(rng.randint(1, 5))])
                items.append(it)
                s.submit(it)
                check_rows(it, await result(it))
                if rng.random() < 0.5:
                    await asyncio.sleep(0)

        await asyncio.gather(*(submitter(rng.randint(5, 15)) for _ in range(25)))
        await settle(s)
        sent = sum(it.batch_size for it in items)
        assert sum(model.sizes()) == sent  # no row ran twice or went missing
        every_row = np.concatenate([b[:, 0] for b in model.batches])
        assert sorted(every_row.tolist()) == list(range(1, sent + 1))
        assert max(model.sizes()) <= 8
        assert model.max_running <= concurrency
        assert max(model.sizes()) > 5  # callers were batched together, not one by one

    run(main())


def test_items_of_different_shapes_never_share_a_batch() -> None:
    async def main() -> None:
        model = FakeModel(gated=True)
        s = make(model, max_batch_size=8)
        first = item([0])
        s.submit(first)
        await model.wait_started(1)
        narrow = [item([i], width=3) for i in range(1, 4)]
        wide = [item([i], width=5) for i in range(10, 13)]
        for a, b in zip(narrow, wide, strict=True):
            s.submit(a)
            s.submit(b)
        model.gate.set()
        for it in [first, *narrow, *wide]:
            check_rows(it, await result(it))
        assert {b.shape[1] for b in model.batches[1:]} == {3, 5}
        assert sorted(model.sizes()[1:]) == [3, 3]
        await settle(s)

    run(main())


def test_without_dynamic_batching_every_request_runs_alone() -> None:
    async def main() -> None:
        model = FakeModel()
        settings = SchedulerSettings(max_batch_size=8, batching=None, concurrency=1)
        s = Scheduler(model.infer, settings, VersionStats("fake", "1", None))
        s.start()
        items = [item([i, i + 100]) for i in range(6)]
        for it in items:
            s.submit(it)
        for it in items:
            check_rows(it, await result(it))
        assert model.sizes() == [2] * 6
        await settle(s)

    run(main())


# -- batch size and concurrency limits -----------------------------------------------------


def test_batches_never_exceed_max_batch_size() -> None:
    async def main() -> None:
        model = FakeModel(gated=True)
        s = make(model, max_batch_size=4)
        blocker = item([0])
        s.submit(blocker)
        await model.wait_started(1)
        queued = [item([10 * i + j for j in range(size)]) for i, size in enumerate([3, 2, 1, 4, 1])]
        for it in queued:
            s.submit(it)
        model.gate.set()
        for it in [blocker, *queued]:
            check_rows(it, await result(it))
        # Arrival order is kept: 3 (+2 does not fit) | 2+1 (+4 does not fit) | 4 | 1
        assert model.sizes() == [1, 3, 3, 4, 1]
        await settle(s)

    run(main())


def test_never_more_than_concurrency_batches_at_once() -> None:
    async def main() -> None:
        model = FakeModel(gated=True)
        s = make(model, max_batch_size=2, concurrency=3)
        items = [item([i]) for i in range(1, 21)]
        for it in items:
            s.submit(it)
        await model.wait_started(3)
        for _ in range(20):  # give the batching task every chance to overrun
            await asyncio.sleep(0)
        assert model.running == 3
        assert s.busy == 3
        assert s.queued == 20 - 3 * 2
        model.gate.set()
        for it in items:
            check_rows(it, await result(it))
        assert model.max_running == 3
        await settle(s)

    run(main())


def test_requests_accumulate_while_every_slot_is_busy() -> None:
    async def main() -> None:
        model = FakeModel(gated=True)
        s = make(model, max_batch_size=16, concurrency=1)
        first = item([0])
        s.submit(first)
        await model.wait_started(1)
        later = [item([i]) for i in range(1, 11)]
        for it in later:
            s.submit(it)
        model.gate.set()
        for it in [first, *later]:
            check_rows(it, await result(it))
        assert model.sizes() == [1, 10]
        await settle(s)

    run(main())


# -- preferred sizes and the queue delay -----------------------------------------------------


def test_preferred_batch_sizes_are_sent_without_waiting_for_the_delay() -> None:
    async def main() -> None:
        model = FakeModel()
        # A delay far longer than WAIT: only a preferred size can start a batch before close().
        s = make(model, max_batch_size=8, max_queue_delay_ms=600_000, preferred_batch_sizes=[2, 4])
        first = [item([i]) for i in range(4)]
        for it in first:
            s.submit(it)
        for it in first:
            check_rows(it, await result(it))
        assert model.sizes() == [4]
        second = [item([i]) for i in range(10, 13)]
        for it in second:
            s.submit(it)
        for it in second[:2]:
            check_rows(it, await result(it))
        assert model.sizes() == [4, 2]  # the largest preferred size that can be formed
        assert not second[2].future.done()  # 1 is not preferred: it waits for the delay
        await settle(s)  # closing sends what is left at once
        check_rows(second[2], await result(second[2]))
        assert model.sizes() == [4, 2, 1]

    run(main())


def test_max_queue_delay_lets_a_batch_fill() -> None:
    async def main() -> None:
        model = FakeModel()
        s = make(model, max_batch_size=8, max_queue_delay_ms=600_000)
        first = item([1])
        s.submit(first)
        for _ in range(3):
            await asyncio.sleep(0.01)
        assert not model.batches  # the lone item waits for company
        rest = [item([i, i + 100]) for i in range(2, 5)] + [item([5])]
        for it in rest:
            s.submit(it)
        for it in [first, *rest]:
            check_rows(it, await result(it))
        assert model.sizes() == [8]  # sent as soon as it was full
        await settle(s)

    run(main())


def test_a_lone_item_runs_once_the_delay_has_passed() -> None:
    async def main() -> None:
        model = FakeModel()
        s = make(model, max_batch_size=8, max_queue_delay_ms=20)
        it = item([7])
        s.submit(it)
        check_rows(it, await result(it))
        assert model.sizes() == [1]
        await settle(s)

    run(main())


def test_the_delay_never_keeps_a_slot_idle() -> None:
    """With two slots, a lone item starts at once: waiting would leave a slot idle for nothing."""

    async def main() -> None:
        model = FakeModel()
        s = make(model, max_batch_size=8, concurrency=2, max_queue_delay_ms=600_000)
        it = item([3])
        s.submit(it)
        check_rows(it, await result(it))
        assert model.sizes() == [1]
        await settle(s)

    run(main())


# -- queue limits, deadlines, dropped frames -------------------------------------------------


def test_queue_full_at_max_queue_size() -> None:
    async def main() -> None:
        model = FakeModel(gated=True)
        s = make(model, max_batch_size=8, max_queue_size=3)
        running = item([0])
        s.submit(running)
        await model.wait_started(1)  # it left the queue
        queued = [item([i]) for i in range(1, 4)]
        for it in queued:
            s.submit(it)
        assert s.queued == 3
        with pytest.raises(QueueFull, match="max_queue_size 3"):
            s.submit(item([99]))
        assert s.queued == 3
        model.gate.set()
        for it in [running, *queued]:
            check_rows(it, await result(it))
        s.submit(late := item([5]))  # room again
        check_rows(late, await result(late))
        await settle(s)

    run(main())


def test_deadline_passes_while_queued() -> None:
    async def main() -> None:
        model = FakeModel(gated=True)
        s = make(model, max_batch_size=8)
        loop = asyncio.get_running_loop()
        running = item([0])
        s.submit(running)
        await model.wait_started(1)
        doomed = item([1], deadline=loop.time() + 0.05)
        patient = item([2], deadline=loop.time() + 3600)
        s.submit(doomed)
        s.submit(patient)
        err = await error_of(doomed)
        assert isinstance(err, DeadlineExceeded)
        assert s.queued == 1
        model.gate.set()
        check_rows(running, await result(running))
        check_rows(patient, await result(patient))
        assert 1 not in np.concatenate(model.batches)[:, 0]  # the expired row never ran
        await settle(s)

    run(main())


def test_model_timeout_answers_504_and_keeps_the_slot_busy() -> None:
    async def main() -> None:
        model = FakeModel(gated=True)
        s = make(model, max_batch_size=8, model_timeout_s=0.05)
        stuck = item([1])
        s.submit(stuck)
        await model.wait_started(1)
        err = await error_of(stuck)  # answered while the runtime still runs
        assert isinstance(err, DeadlineExceeded)
        assert "ran longer than 0.05 s (model_timeout_s, --model-timeout)" in str(err)
        assert s.busy == 1 and model.running == 1  # the instance is still taken
        waiting = item([2])
        s.submit(waiting)
        await asyncio.sleep(0.01)
        assert len(model.batches) == 1  # nothing starts on the busy slot
        model.gate.set()  # the runtime returns: the slot frees and the next batch runs
        check_rows(waiting, await result(waiting))
        await settle(s)

    run(main())


def test_droppable_frames_over_the_stream_limit_drop_the_oldest() -> None:
    async def main() -> None:
        model = FakeModel(gated=True)
        s = make(model, max_batch_size=8)
        running = item([0])
        s.submit(running)
        await model.wait_started(1)

        def frame(v: int, stream: str = "cam1", droppable: bool = True) -> WorkItem:
            return item([v], admission=Admission(stream, droppable=droppable, max_inflight=2))

        f1, f2, keep, other, f3, f4 = (
            frame(1),
            frame(2),
            frame(3, droppable=False),  # never replaced
            frame(4, stream="cam2"),  # another stream's frames are not counted
            frame(5),
            frame(6),
        )
        for it in (f1, f2, keep, other, f3):
            s.submit(it)
        assert isinstance(await error_of(f1), FrameDropped)
        assert not f2.future.done()
        s.submit(f4)
        err = await error_of(f2)
        assert isinstance(err, FrameDropped) and "cam1" in str(err)
        assert s.queued == 4
        model.gate.set()
        for it in (running, keep, other, f3, f4):
            check_rows(it, await result(it))
        ran = set(np.concatenate(model.batches)[:, 0].tolist())
        assert ran == {0, 3, 4, 5, 6}
        await settle(s)

    run(main())


# -- failures ------------------------------------------------------------------------------


def test_model_error_reaches_every_caller_of_the_batch_and_later_batches_work() -> None:
    async def main() -> None:
        model = FakeModel(gated=True)
        model.fail_on = 13
        s = make(model, max_batch_size=8)
        blocker = item([0])
        s.submit(blocker)
        await model.wait_started(1)
        batch = [item([11]), item([12, 13]), item([14])]
        for it in batch:
            s.submit(it)
        model.gate.set()
        check_rows(blocker, await result(blocker))
        errors = [await error_of(it) for it in batch]
        assert all(isinstance(e, ModelExecutionError) for e in errors)
        assert all("ValueError" in str(e) and "poisoned row" in str(e) for e in errors)
        assert model.sizes() == [1, 4]
        after = [item([20]), item([21, 22])]
        for it in after:
            s.submit(it)
        for it in after:
            check_rows(it, await result(it))
        await settle(s)

    run(main())


def test_a_frameserve_error_from_the_model_is_passed_on_unchanged() -> None:
    async def main() -> None:
        model = FakeModel()
        model.fail_on = 1
        model.error = InvalidInput("inputs[0]: the model refused it")
        s = make(model, max_batch_size=8)
        it = item([1])
        s.submit(it)
        assert await error_of(it) is model.error
        await settle(s)

    run(main())


def test_wrong_output_batch_dimension_fails_every_caller() -> None:
    async def main() -> None:
        model = FakeModel()
        model.wrong_rows = True
        s = make(model, max_batch_size=8)
        batch = [item([1]), item([2, 3])]
        for it in batch:  # both queued before the batching task first runs: one batch
            s.submit(it)
        for it in batch:
            err = await error_of(it)
            assert isinstance(err, ModelExecutionError)
            assert "'y'" in str(err) and "expected batch dimension 3" in str(err)
        assert model.sizes() == [3]
        await settle(s)

    run(main())


def test_wrong_output_batch_dimension_fails_a_batch_of_one_request_too() -> None:
    # The same faulty model must not give a caller a wrong-sized answer just because its
    # request happened to run alone (with batching on, the first dim is the batch dim).
    async def main() -> None:
        model = FakeModel()
        model.wrong_rows = True
        s = make(model, max_batch_size=8)
        it = item([1, 2])
        s.submit(it)
        err = await error_of(it)
        assert isinstance(err, ModelExecutionError)
        assert "expected batch dimension 2" in str(err)
        await settle(s)

    run(main())


def test_a_cancelled_caller_does_not_break_its_batch() -> None:
    async def main() -> None:
        model = FakeModel(gated=True)
        s = make(model, max_batch_size=8)
        blocker = item([0])
        s.submit(blocker)
        await model.wait_started(1)
        head_gone, a, middle_gone, b = item([1]), item([2, 3]), item([4]), item([5])
        for it in (head_gone, a, middle_gone, b):
            s.submit(it)
        head_gone.future.cancel()  # the oldest queued caller went away
        middle_gone.future.cancel()
        blocker.future.cancel()  # a caller whose batch is already running went away
        model.gate.set()
        for it in (a, b):
            check_rows(it, await result(it))
        assert model.sizes() == [1, 3]  # the cancelled items were not run
        after = item([9])
        s.submit(after)
        check_rows(after, await result(after))
        await settle(s)

    run(main())


# -- shutdown ------------------------------------------------------------------------------


def test_close_drains_queued_work_when_the_model_answers() -> None:
    async def main() -> None:
        model = FakeModel()
        s = make(model, max_batch_size=4, max_queue_delay_ms=600_000)
        items = [item([i]) for i in range(6)]
        for it in items:
            s.submit(it)
        await asyncio.wait_for(s.close(), WAIT)
        for it in items:
            check_rows(it, await result(it))
        with pytest.raises(Unavailable):
            s.submit(item([7]))

    run(main())


def test_close_with_timeout_answers_every_caller_when_the_model_is_stuck() -> None:
    async def main() -> None:
        model = FakeModel(gated=True)  # never opened before close: a stuck backend
        s = make(model, max_batch_size=2)
        running = item([0, 1])
        s.submit(running)
        await model.wait_started(1)
        queued = [item([i]) for i in range(2, 6)]
        for it in queued:
            s.submit(it)
        await asyncio.wait_for(s.close(timeout=0.05), WAIT)
        for it in [running, *queued]:
            err = await error_of(it)
            assert isinstance(err, Unavailable), err
        assert s.queued == 0
        with pytest.raises(Unavailable):
            s.submit(item([9]))
        model.gate.set()  # the stuck batch finishes later without harm
        await asyncio.sleep(0.01)

    run(main())


def test_a_request_answered_at_shutdown_is_not_counted_as_a_success_later() -> None:
    async def main() -> None:
        model = FakeModel(gated=True)
        s = make(model, max_batch_size=2)
        running = item([0, 1])
        s.submit(running)
        await model.wait_started(1)
        await asyncio.wait_for(s.close(timeout=0.01), WAIT)
        assert isinstance(await error_of(running), Unavailable)
        model.gate.set()  # the stuck batch completes after its caller was answered
        while model.running:
            await asyncio.sleep(0.001)
        for _ in range(5):
            await asyncio.sleep(0)
        stats = s._stats
        assert stats.fail.count == 1
        assert stats.success.count == 0  # one request, one outcome

    run(main())


# -- priorities ----------------------------------------------------------------------------


def test_priority_level_one_is_served_before_level_two() -> None:
    async def main() -> None:
        model = FakeModel(gated=True)
        s = make(model, max_batch_size=1, priority_levels=2)
        blocker = item([0], priority=2)
        s.submit(blocker)
        await model.wait_started(1)
        low = [item([10], priority=2), item([11], priority=2)]
        high = [item([20], priority=1), item([21], priority=1)]
        for it in (low[0], high[0], low[1], high[1]):
            s.submit(it)
        model.gate.set()
        for it in [blocker, *low, *high]:
            check_rows(it, await result(it))
        order = [int(b[0, 0]) for b in model.batches]
        assert order == [0, 20, 21, 10, 11]
        await settle(s)

    run(main())


def test_a_batch_is_filled_by_priority_then_arrival() -> None:
    async def main() -> None:
        model = FakeModel(gated=True)
        s = make(model, max_batch_size=3, priority_levels=3)
        blocker = item([0])
        s.submit(blocker)
        await model.wait_started(1)
        for v, p in ((30, 3), (20, 2), (10, 1), (21, 2), (11, 1)):
            s.submit(item([v], priority=p))
        model.gate.set()
        await asyncio.wait_for(s.close(), WAIT)
        assert [b[:, 0].tolist() for b in model.batches] == [[0], [10, 11, 20], [21, 30]]

    run(main())


def test_background_items_run_on_the_capacity_left_and_are_never_dropped() -> None:
    """Video jobs sit below every priority level: online and live items always go first, a
    job's items fill what is left of a batch, and the live dropping never touches them."""

    async def main() -> None:
        model = FakeModel(gated=True)
        s = make(model, max_batch_size=2, priority_levels=1)
        background = 2  # priority_levels + 1: the level below every configured one
        blocker = item([0])
        s.submit(blocker)
        await model.wait_started(1)
        job = Admission("job-1", background=True)
        jobs = [item([40 + i], priority=background, admission=job) for i in range(3)]
        camera = Admission("live-1", droppable=True, max_inflight=2)
        live = [item([20 + i], admission=camera) for i in range(3)]
        online = item([10])
        for it in (jobs[0], live[0], jobs[1], live[1], online, live[2], jobs[2]):
            s.submit(it)
        assert isinstance(await error_of(live[0]), FrameDropped)  # the stale live frame
        model.gate.set()
        for it in (blocker, *jobs, online, *live[1:]):
            check_rows(it, await result(it))
        order = [b[:, 0].tolist() for b in model.batches]
        assert order == [[0], [21, 10], [22, 40], [41, 42]]
        await settle(s)

    run(main())


# -- bookkeeping --------------------------------------------------------------------------


def test_statistics_count_requests_batches_and_failures() -> None:
    async def main() -> None:
        model = FakeModel(gated=True)
        s = make(model, max_batch_size=8)
        stats = s._stats
        blocker = item([0, 1])
        s.submit(blocker)
        await model.wait_started(1)
        ok = [item([2]), item([3, 4, 5])]
        for it in ok:
            s.submit(it)
        loop = asyncio.get_running_loop()
        expired = item([6], deadline=loop.time() + 0.01)
        s.submit(expired)
        await error_of(expired)
        model.gate.set()
        for it in [blocker, *ok]:
            await result(it)
        await settle(s)
        assert stats.success.count == 3
        assert stats.fail.count == 1
        assert stats.execution_count == 2
        assert stats.inference_count == 6
        assert {b: bs.compute_infer.count for b, bs in stats.batches.items()} == {2: 1, 4: 1}

    run(main())
