"""The model stage of a video pipeline, split where the work is done.

Frames of a single-model pipeline cross three threads in groups, so the event loop only
schedules:

- ``prepare`` + ``group`` (the input's decoder thread): each decoded picture is converted and
  resized to the model's input size (as DeepStream converts next to its decoder; OpenCV and
  FFmpeg release the GIL), then a group of frames is normalised in one call into one
  ``[N, ...]`` tensor;
- ``infer`` (the server's event loop): one request per group goes through the model's
  ``Scheduler``, so groups in flight from every input (and online requests) batch together,
  and the threads hop once per group, not once per frame;
- ``finish`` (the input's sink thread): the task decoder turns the group's outputs into each
  frame's result (a face detector decodes the group in one pass).

Model pipelines with crop steps (OCR) run whole on the loop through the ``Predictor``, whose
pool does their CPU work; interpolation sends the two neighbours of a spare frame to the model.
Those go one frame a group.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import numpy as np

from frameserve.errors import ConfigError, NotFound, Unavailable
from frameserve.processing.results import Result
from frameserve.processing.tasks import DecodeOptions
from frameserve.serving.local import ServerHandle
from frameserve.serving.model import ModelVersion
from frameserve.serving.predict import Timings, infer_tensor
from frameserve.serving.server import InferenceServer
from frameserve.serving.types import Admission, InferRequest, InputTensor
from frameserve.video.config import VideoPipelineConfig
from frameserve.video.frames import Frame
from frameserve.video.prepare import FramePreparer, Group, Prepared

T = TypeVar("T")
log = logging.getLogger(__name__)

POLL_S = 0.1  # how often a thread blocked on a frame looks at its stop event
INTERPOLATE_INPUTS = ("previous", "next")
INTERPOLATE_OUTPUT = "middle"


@dataclass(slots=True)
class FrameOutput:
    """What the model stage made of one frame."""

    result: Result | None  # analysis pipelines
    image: np.ndarray | None  # transformation pipelines: the frame to encode
    timings: Timings


class FrameProcessor:
    """Runs a video pipeline's models on frames (see the module docstring for threads)."""

    def __init__(
        self,
        server: InferenceServer,
        name: str,
        config: VideoPipelineConfig,
        options: DecodeOptions | None = None,
        admission: Admission | None = None,
    ) -> None:
        """``admission``: how this source's frames enter the schedulers; its ``stream_id`` is a
        prefix, completed with the frame's stream number (default: ``video-<n>``)."""
        self.server = server
        self.name = name
        self.config = config
        self.options = options or DecodeOptions()
        self.admission = admission or Admission(stream_id="video")
        self._admissions: dict[int, Admission] = {}
        self._model_pipeline = config.model_pipeline() if config.steps is not None else None
        self.single: ModelVersion | None = None  # set for single-model analysis pipelines
        # The versions the pipeline started on, read on the loop: threads count their stats.
        self.versions: dict[str, ModelVersion] = {}
        self.task = self._check_models()
        self._preparers: dict[ModelVersion | None, FramePreparer] = {}  # decoder threads

    def _check_models(self) -> str:
        """Every model is loaded and fits the pipeline; returns the task of the result."""
        where = f"pipeline {self.name}"
        for model in self.config.models:
            try:
                mv = self.versions[model] = self.server.repository.get(model)
            except NotFound:
                raise ConfigError(
                    f"{where}: needs model {model!r}, which is not loaded from the model "
                    f"repository (frameserve zoo pull installs the zoo)"
                ) from None
            if self.config.interpolate is not None:
                names = sorted(t.name for t in mv.inputs)
                outputs = {t.name for t in mv.outputs}
                if names != sorted(INTERPOLATE_INPUTS) or INTERPOLATE_OUTPUT not in outputs:
                    raise ConfigError(
                        f"{where}: interpolate model {model} must take inputs "
                        f"{list(INTERPOLATE_INPUTS)} and give {INTERPOLATE_OUTPUT!r}, has "
                        f"inputs {names} and outputs {sorted(outputs)}"
                    )
            else:
                self.server.predictor.processing_version(model)
        if self.config.interpolate is not None:
            return "interpolate"
        if self.config.steps is None:
            return "filters"  # filters only: the filtered frames are the product
        if len(self.config.steps or []) > 1:
            return "texts"
        self.single = self.server.repository.get(self.config.models[0])
        assert self.single.processing is not None
        return self.single.processing.task

    @property
    def models(self) -> list[str]:
        return self.config.models

    def resize_where(self, stream: int) -> str:
        """Where the latest frames of input ``stream`` were resized (the run's summary)."""
        for preparer in reversed(self._preparers.values()):
            if stream in preparer.last:
                return preparer.last[stream]
        return "processing/"

    def preparer(self, mv: ModelVersion | None) -> FramePreparer:
        """The decoder-side work for frames of ``mv`` (None: whole frames only)."""
        found = self._preparers.get(mv)
        if found is None:
            pre = mv.processing.preprocess if mv is not None and mv.processing else None
            found = self._preparers[mv] = FramePreparer(pre, f"pipeline {self.name}")
        return found

    # -- decoder thread ---------------------------------------------------------------------
    def prepare(self, frame: Frame, full: bool = False) -> Prepared:
        """Convert the decoded picture for the version serving now (see ``FramePreparer``)."""
        mv = self.single  # read once: the loop may move it to a newer version meanwhile
        prepared = self.preparer(mv).prepare(frame, full)
        prepared.version = mv
        return prepared

    def group(self, frames: list[Prepared]) -> Group:
        """Normalise a group of prepared frames of one version into one tensor."""
        return self.preparer(frames[0].version).group(frames)

    def groups_with(self, prepared: Prepared, other: Prepared) -> bool:
        """Whether two prepared frames may share a group (same model version and input)."""
        return (
            prepared.model_input
            and other.model_input
            and prepared.version is other.version
            and prepared.frame.stream == other.frame.stream
            and (prepared.placed is None) == (other.placed is None)
        )

    # -- event loop -------------------------------------------------------------------------
    async def infer(self, group: Group) -> list[FrameOutput] | dict[str, np.ndarray]:
        """The group's outputs: the model's, batch dimension kept (single model: ``finish``
        decodes them), or each frame's finished output.

        A reload may retire the version a group was prepared for (``Unavailable``): it then
        goes to the version that serves now, when that one pre-processes the same way;
        either way later frames are prepared for the new version."""
        first = group.frames[0]
        if group.tensor is None:
            return [await self._infer_frame(first.frame)]
        assert first.version is not None
        admission = self._admission(first.frame)
        try:
            outputs = await infer_tensor(first.version, group.tensor, admission)
        except Unavailable:
            if not self._follow(group):
                raise
            fresh = group.frames[0].version
            assert fresh is not None
            outputs = await infer_tensor(fresh, group.tensor, admission)
        return outputs

    async def _infer_frame(self, frame: Frame) -> FrameOutput:
        timings = Timings()
        if self.config.interpolate is not None:
            image = frame.image if not frame.spare else await self._interpolate(frame, timings)
            return FrameOutput(None, image, timings)
        if self._model_pipeline is None:  # filters only: decoding filtered the frame
            return FrameOutput(None, frame.image, timings)
        assert frame.image is not None and self._model_pipeline is not None
        result = await self.server.predictor.run_pipeline(
            self.name,
            self._model_pipeline,
            frame.image,
            self.options,
            timings,
            self._admission(frame),
        )
        return FrameOutput(result, None, timings)

    def _follow(self, group: Group) -> bool:
        """After ``Unavailable``: move to the version serving now (on the loop, which owns the
        repository); True when ``group`` may be sent to it as it is."""
        old: ModelVersion | None = group.frames[0].version
        if self.server.draining or old is None or old.processing is None:
            return False
        try:
            fresh = self.server.repository.get(old.name)
        except NotFound:
            return False
        if fresh is old or fresh.processing is None:
            return False
        if self.single is old:
            log.info("pipeline %s: model %s v%s retired; now on v%s", self.name, old.name,
                     old.version, fresh.version)  # fmt: skip
            self.single = self.versions[old.name] = fresh
        if fresh.processing.preprocess.spec != old.processing.preprocess.spec:
            return False  # the tensor was made for other pre-processing: these frames fail
        for prepared in group.frames:
            prepared.version = fresh
        return True

    def _admission(self, frame: Frame) -> Admission:
        found = self._admissions.get(frame.stream)
        if found is None:
            stream_id = self.stream_key(frame.stream)
            found = self._admissions[frame.stream] = replace(self.admission, stream_id=stream_id)
        return found

    def stream_key(self, stream: int) -> str:
        """The stream id the schedulers (and script models) see for input ``stream``."""
        return f"{self.admission.stream_id}-{stream}"

    async def _interpolate(self, frame: Frame, timings: Timings) -> np.ndarray:
        assert self.config.interpolate is not None and frame.previous is not None
        assert frame.next is not None
        mv = self.server.repository.get(self.config.interpolate.model)
        pair = (frame.previous, frame.next)
        batch = mv.max_batch_size > 0
        tensors = [
            InputTensor(n, "UINT8", a[None].shape if batch else a.shape, a[None] if batch else a)
            for n, a in zip(INTERPOLATE_INPUTS, pair, strict=True)
        ]
        request = InferRequest(
            mv.name, tensors, outputs=[INTERPOLATE_OUTPUT], admission=self._admission(frame)
        )
        with timings.step("infer"):
            response = await mv.infer(request)
        middle = response.outputs[0].data
        return np.asarray(middle[0] if batch else middle, dtype=np.uint8)

    # -- sink thread ------------------------------------------------------------------------
    def finish(
        self, frames: list[Prepared], outputs: list[FrameOutput] | dict[str, np.ndarray]
    ) -> list[FrameOutput]:
        """Each frame's output from what ``infer`` gave for the group: the model's outputs are
        decoded together (a face detector's group in one pass); each frame's profile gets an
        equal share of the time."""
        if isinstance(outputs, list):
            return outputs
        mv = frames[0].version  # the version that ran the group (one) decodes its outputs
        assert mv is not None and mv.processing is not None
        geometries = [p.geometry for p in frames if p.geometry is not None]
        assert len(geometries) == len(frames)
        started = time.perf_counter()
        results = mv.processing.decode_batch(outputs, geometries, self.options)
        share = (time.perf_counter() - started) / len(frames)
        finished = []
        for prepared, result in zip(frames, results, strict=True):
            timings = Timings(dict(prepared.seconds))
            timings.seconds["postprocess"] = timings.seconds.get("postprocess", 0.0) + share
            finished.append(FrameOutput(result, None, timings))
        return finished


def open_processor(
    handle: ServerHandle,
    name: str,
    config: VideoPipelineConfig,
    admission: Admission | None = None,
    timeout_s: float = 60.0,
) -> FrameProcessor:
    """A ``FrameProcessor`` built on the server's loop, which owns the repository it reads
    (called from any other thread: the CLI's, a job's, the API's worker threads)."""

    async def build() -> FrameProcessor:
        return FrameProcessor(handle.server, name, config, admission=admission)

    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is handle.loop:
        raise RuntimeError("open_processor: call it from a thread other than the server's loop")
    return handle.submit(build()).result(timeout_s)


def wait_frame(future: Future[T], stop: threading.Event) -> T | None:
    """A frame's outputs, waited for in a thread that must notice ``stop`` within ``POLL_S``.

    None when the frame was cancelled or ``stop`` was set (the future is then cancelled too);
    the frame's own error (a model failure, ``FrameDropped``) is raised.
    """
    while not stop.is_set():
        try:
            return future.result(timeout=POLL_S)
        except FutureTimeout:
            continue
        except CancelledError:
            return None
    future.cancel()
    return None


def cancel_queued(
    frames: queue.Queue[Any], end: object, future_of: Callable[[Any], Future[Any]]
) -> None:
    """Empty a thread's queue of frames in flight, cancelling each frame's future (``end``,
    the end marker, has none)."""
    while True:
        try:
            item = frames.get_nowait()
        except queue.Empty:
            return
        if item is not end:
            future_of(item).cancel()
