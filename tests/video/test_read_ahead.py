"""read_ahead: frames decoded on their own thread, handed over in order, nothing left behind."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from frameserve.video.decode import read_ahead


class Source:
    """A generator that records which thread ran it and whether it was closed."""

    def __init__(self, count: int, fail_at: int | None = None) -> None:
        self.count, self.fail_at = count, fail_at
        self.threads: set[str] = set()
        self.closed = threading.Event()

    def frames(self) -> Iterator[int]:
        try:
            for i in range(self.count):
                self.threads.add(threading.current_thread().name)
                if i == self.fail_at:
                    raise RuntimeError(f"corrupt at {i}")
                yield i
        finally:
            self.closed.set()


def test_every_item_arrives_in_order_decoded_on_the_named_thread() -> None:
    source = Source(50)
    got = list(read_ahead(source.frames(), threading.Event(), "ffmpeg-7", depth=3))
    assert got == list(range(50))
    assert source.threads == {"ffmpeg-7"}
    assert source.closed.is_set()
    assert not any(t.name == "ffmpeg-7" for t in threading.enumerate())


def test_an_error_comes_after_the_items_decoded_before_it() -> None:
    source = Source(10, fail_at=6)
    got = []
    with pytest.raises(RuntimeError, match="corrupt at 6"):
        for item in read_ahead(source.frames(), threading.Event(), "ffmpeg-0"):
            got.append(item)
    assert got == [0, 1, 2, 3, 4, 5]


def test_a_caller_that_leaves_early_ends_and_closes_the_decoding() -> None:
    source = Source(10_000)
    ahead = read_ahead(source.frames(), threading.Event(), "ffmpeg-1", depth=2)
    assert [next(ahead) for _ in range(3)] == [0, 1, 2]
    ahead.close()  # the caller's loop ends (an error, a break)
    assert source.closed.wait(5)
    assert not any(t.name == "ffmpeg-1" for t in threading.enumerate())


def test_stop_ends_both_sides() -> None:
    stop = threading.Event()
    source = Source(10_000)
    got = []
    for item in read_ahead(source.frames(), stop, "ffmpeg-2", depth=2):
        got.append(item)
        if item == 4:
            stop.set()
    assert got[:5] == [0, 1, 2, 3, 4] and len(got) <= 8  # at most what was already ahead
    assert source.closed.wait(5)
