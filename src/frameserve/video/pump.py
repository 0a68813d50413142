"""The one frame pump: decoded frames -> prepare -> infer -> finish, in order, for every caller.

``video run``, jobs and live streams all move frames the same way; only their ends differ
(where frames come from, what is done with results). A ``FramePump`` carries one source's
frames between two threads and the server's loop:

```
producer thread (decoder / reader)     server loop                 consumer thread (sink)
 frame -> FrameProcessor.prepare ->     FrameProcessor.infer ->     results(): wait for each
 group -> handle.submit(infer)  ──(bounded queue of InFlight)──>    frame in order -> finish
```

The producer sends frames in groups of ``group`` (one request and one hop to the loop per
group: ``FrameProcessor.group``); the consumer still takes them one by one. The bounded queue
keeps the frames in order and bounds what is in flight. Two policies:

- ``lossless`` (files, jobs): the producer blocks while the queue is full (back-pressure on
  decoding), and a frame that fails raises in the consumer: the run stops with that error;
- ``lossy`` (live): the producer never blocks (a full queue drops the frame before any model
  work: "busy"), and a failed or dropped frame is handed to the consumer as a ``Finished``
  with its error, so the stream counts it and goes on.

One stop event ends both sides: every blocking call polls it (``POLL_S``); whatever is still
in flight when the consumer leaves is cancelled.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from frameserve.serving.local import ServerHandle
from frameserve.video.frames import Frame
from frameserve.video.prepare import Group, Prepared
from frameserve.video.process import POLL_S, FrameOutput, FrameProcessor, cancel_queued, wait_frame

_END = object()  # the producer's last item: no more frames


@dataclass(frozen=True, slots=True)
class InFlight:
    """A frame on its way from the producer to the consumer, with its group's frames and the
    future of the group's outputs (not the group's input tensor: that is let go once it ran)."""

    frames: list[Prepared]  # the group's
    future: Future[Any]  # the group's outputs (``FrameProcessor.infer``)
    row: int  # this frame's place in the group
    arrived: float = 0.0  # time.monotonic() the frame arrived (live lag); 0 for files
    tag: int = 0  # the producer's own mark (live: which connection it came from)

    @property
    def prepared(self) -> Prepared:
        return self.frames[self.row]


@dataclass(frozen=True, slots=True)
class Finished:
    """A frame out of the pump: its output, or (lossy pumps only) why it has none."""

    item: InFlight
    output: FrameOutput | None
    error: BaseException | None = None

    @property
    def frame(self) -> Frame:
        return self.item.prepared.frame


class FramePump:
    """One source's frames through a pipeline's models (see the module docstring)."""

    def __init__(
        self,
        handle: ServerHandle,
        processor: FrameProcessor,
        depth: int,
        stop: threading.Event,
        *,
        lossy: bool = False,
        keep_images: bool = False,
        group: int = 1,
    ) -> None:
        """``depth``: frames in flight at most (the queue's size); ``keep_images``: a sink
        needs the full frames (video out), so they are kept after pre-processing; ``group``:
        frames sent to the model in one request (a lossy pump sends each frame at once)."""
        self.handle = handle
        self.processor = processor
        self.stop = stop
        self.lossy = lossy
        self.keep_images = keep_images
        self.depth = max(1, depth)
        self.group = 1 if lossy else max(1, min(group, self.depth))
        self.ended = False  # the consumer saw the producer's end (not a stop)
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=self.depth)
        self._pending: list[tuple[Prepared, float, int]] = []  # the group being filled

    # -- producer thread --------------------------------------------------------------------
    def submit(self, frame: Frame, arrived: float = 0.0, tag: int = 0) -> bool:
        """Prepare ``frame`` and send it to the models with its group; False when the pump
        is stopping. (A lossy producer prepares frames elsewhere and hands them to ``send``,
        which drops a frame before any model work when there is no room.)"""
        prepared = self.processor.prepare(frame, full=self.keep_images)
        if prepared.model_input and not self.keep_images:
            frame.image = None  # the tensor is all that is needed from here on
        first = self._pending[0][0] if self._pending else None
        if (
            first is not None
            and not self.processor.groups_with(first, prepared)
            and not self._flush()
        ):
            return False
        self._pending.append((prepared, arrived, tag))
        if len(self._pending) >= self.group or not prepared.model_input:
            return self._flush()
        return True

    def end(self) -> None:
        """No more frames: send the last group, then the end (blocks until the consumer has
        room, or the pump stops)."""
        if self._pending and not self._flush():
            return
        while not self.stop.is_set():
            try:
                self._queue.put(_END, timeout=POLL_S)
                return
            except queue.Full:
                continue

    def _flush(self) -> bool:
        """Send the group being filled as one request; False when the pump is stopping."""
        pending, self._pending = self._pending, []
        group = self.processor.group([prepared for prepared, _, _ in pending])
        return self._send(group, [(arrived, tag) for _, arrived, tag in pending])

    def send(self, group: Group, arrived: float = 0.0, tag: int = 0) -> bool:
        """Send a group prepared elsewhere (a decode worker) as one request; False when it was
        not sent (a lossy pump's queue has no room for it, or the pump is stopping)."""
        if self.lossy and not self.has_room(len(group.frames)):
            return False  # only this thread puts: the room does not shrink meanwhile
        return self._send(group, [(arrived, tag)] * len(group.frames))

    def has_room(self, frames: int = 1) -> bool:
        """Whether ``frames`` more frames fit in flight now (a lossy producer asks before it
        spends work on a frame)."""
        return self._queue.maxsize - self._queue.qsize() >= frames

    def _send(self, group: Group, marks: list[tuple[float, int]]) -> bool:
        future = self.handle.submit(self.processor.infer(group))
        for row, (arrived, tag) in enumerate(marks):
            if not self._put(InFlight(group.frames, future, row, arrived, tag)):
                future.cancel()
                return False
        return True

    def _put(self, item: InFlight) -> bool:
        if self.lossy:
            try:
                self._queue.put_nowait(item)
                return True
            except queue.Full:
                return False
        while not self.stop.is_set():
            try:
                self._queue.put(item, timeout=POLL_S)
                return True
            except queue.Full:
                continue
        return False

    # -- consumer thread --------------------------------------------------------------------
    def results(self) -> Iterator[Finished]:
        """Each frame's output, in order, until the producer's end (``ended``) or a stop.

        A lossless pump raises a frame's error; a lossy one yields it. A group's outputs are
        finished (decoded) together, when its first frame comes out. Frames still in flight
        when this ends (a stop, an error, the caller leaving) are cancelled."""
        finished: tuple[Future[Any] | None, list[FrameOutput]] = (None, [])
        try:
            while True:
                item = self._next()
                if item is None:
                    return
                try:
                    outputs = wait_frame(item.future, self.stop)
                except Exception as err:
                    if not self.lossy:
                        raise
                    yield Finished(item, None, err)
                    continue
                if outputs is None:  # stopping
                    return
                if finished[0] is not item.future:
                    outputs = self.processor.finish(item.frames, outputs)
                    finished = (item.future, outputs)
                yield Finished(item, finished[1][item.row])
        finally:
            cancel_queued(self._queue, _END, lambda pending: pending.future)

    def _next(self) -> InFlight | None:
        while not self.stop.is_set():
            try:
                item = self._queue.get(timeout=POLL_S)
            except queue.Empty:
                continue
            if item is _END:
                self.ended = True
                return None
            return item  # type: ignore[no-any-return]
        return None
