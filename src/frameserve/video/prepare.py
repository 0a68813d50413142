"""The decoder side of the model stage: a decoded picture -> the model's input, in groups.

``FramePreparer`` holds what one model's pre-processing needs and nothing of the server, so it
runs wherever frames are decoded: the decoder thread of ``video run``, or a decode worker
process of ``frameserve serve`` (``video.worker``). Each picture is converted to the model's
input size the cheapest way that gives the declared pre-processing's pixels:

1. from the decoder's own YUV planes at model size (``processing.yuv``), when the declared
   resize is one it reproduces and the picture is 8-bit 4:2:0 with known colour tags;
2. else FFmpeg's scaler converting and resizing in one pass, when it matches the declared
   resize on the input's first frame (``video.scaler``);
3. else the whole frame in RGB, then the declared resize.

Where each input's frames went is kept for the run's summary. A group of prepared frames is
normalised in one call into one ``[N, ...]`` tensor. A decode worker whose server asks for it
(``video.balance``) copies the rows the YUV path's warp reads instead (``prepare(rows=)``), and
the server samples them into the same pictures (``sampled``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from av.video.reformatter import VideoReformatter

from frameserve.processing import yuv
from frameserve.processing.transform import Geometry, Preprocessor
from frameserve.processing.yuv import RowsShape, YuvPlanes
from frameserve.video.frames import Frame
from frameserve.video.scaler import ScalerPlan, full_rgb, plan_scaler
from frameserve.video.yuv import has_tags_to_follow, planes_of

log = logging.getLogger(__name__)

YUV_PATH = "resize from the decoder's YUV planes at model size"


@dataclass(slots=True)
class Prepared:
    """A frame with what the decoder side made of it."""

    frame: Frame
    version: Any = None  # single-model pipelines: the ModelVersion it was prepared for
    placed: np.ndarray | None = None  # the frame at the model's input size, uint8 RGB
    tensor: np.ndarray | None = None  # or its [1, ...] tensor (padding inside the tensor)
    geometry: Geometry | None = None
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> busy seconds
    # or the rows its sampling reads, copied where the caller said (``prepare(rows=)``)
    rows: RowsShape | None = None

    @property
    def model_input(self) -> bool:
        """True when the frame goes to the model as a tensor (single-model pipelines)."""
        return self.geometry is not None


@dataclass(slots=True)
class Group:
    """Frames that go to the model together: one request, one hop between threads."""

    frames: list[Prepared]
    tensor: np.ndarray | None = None  # single-model pipelines: ``[len(frames), ...]``
    # False: ``tensor`` is the pictures at model size, uint8, still to normalise (a decode
    # worker ships these: a float tensor is 4x the bytes through shared memory)
    normalized: bool = True
    # not None: ``tensor`` is each frame's copied rows (``YuvResizer.gather``), to sample
    # (``sampled``) into pictures at model size before anything else
    rows: RowsShape | None = None


class FramePreparer:
    """Converts pictures for one pre-processing (None: whole frames in RGB only)."""

    def __init__(self, pre: Preprocessor | None, where: str) -> None:
        self.pre = pre
        self._where = where  # names the pipeline in the log
        self._yuv = yuv.YuvResizer(pre) if pre is not None and not yuv.unsupported(pre) else None
        self._plans: dict[tuple[int, int, int], ScalerPlan | str] = {}  # (input, w, h) -> plan
        self.last: dict[int, str] = {}  # input -> how its latest frames were resized
        # input -> its swscale context, kept (see ``video.scaler``); each input is prepared by
        # one thread only (its decoder), so no context is used by two threads
        self._reformatters: dict[int, VideoReformatter] = {}

    def prepare(self, frame: Frame, full: bool = False, rows: np.ndarray | None = None) -> Prepared:
        """Convert ``frame``'s picture to the model's input size and, for ``full`` (a sink
        needs the whole frame) or whole-frame steps, to RGB; the picture is let go after.
        ``rows`` (flat uint8): where the picture has a row plan of exactly that many bytes,
        copy the rows the model's sampling reads there instead (sampled on the other side:
        ``sampled``), while the picture is still in the cache."""
        prepared = Prepared(frame)
        pre = self.pre
        if pre is None or frame.spare:
            full_rgb(frame, self._scaler(frame))
            frame.picture = None
            return prepared
        started = time.perf_counter()
        if rows is not None and not full and (copied := self._gather(frame, pre, rows)):
            prepared.rows, prepared.geometry = copied
            frame.picture = None
            prepared.seconds["preprocess"] = time.perf_counter() - started
            return prepared
        if full:
            full_rgb(frame, self._scaler(frame))
        if pre.spec.resize.pad_in == "tensor":  # normalised before padding: one at a time
            image = full_rgb(frame, self._scaler(frame))
            assert image is not None
            tensor, geometries = pre([image])
            prepared.tensor, prepared.geometry = tensor, geometries[0]
        else:
            prepared.placed, prepared.geometry = self._resized(frame, pre)
        frame.picture = None
        prepared.seconds["preprocess"] = time.perf_counter() - started
        return prepared

    def _gather(
        self, frame: Frame, pre: Preprocessor, out: np.ndarray
    ) -> tuple[RowsShape, Geometry] | None:
        """Copy the picture's rows into ``out`` where the YUV path takes this input and the
        picture's row plan needs ``out.size`` bytes; what ``from_rows`` needs, and the
        geometry."""
        planes = self._yuv_planes(frame, pre)
        row_plan = self._yuv.row_plan(planes.size) if planes and self._yuv else None
        if planes is None or row_plan is None or row_plan.nbytes(planes.size[0]) != out.size:
            return None
        assert self._yuv is not None
        self._yuv.gather(planes, out)
        self.last[frame.stream] = YUV_PATH
        return RowsShape.of(planes), row_plan.geometry

    def gathers(self, frame: Frame) -> int:
        """Bytes of ``frame``'s rows where ``prepare(rows=)`` would copy them (the YUV path
        takes its input and its picture has a row plan); else 0. Makes no views of the
        picture: ``prepare`` does, once."""
        picture, pre = frame.picture, self.pre
        if picture is None or pre is None or self._yuv is None:
            return 0
        if self._plan_of(frame, pre) != YUV_PATH or not has_tags_to_follow(picture):
            return 0
        return self.row_bytes((picture.width, picture.height))

    def _yuv_planes(self, frame: Frame, pre: Preprocessor) -> YuvPlanes | None:
        """The picture's planes where the YUV path takes its input (decided on its first
        picture of this size)."""
        picture = frame.picture
        if picture is None or self._yuv is None:
            return None
        return planes_of(picture) if self._plan_of(frame, pre) == YUV_PATH else None

    def _plan_of(self, frame: Frame, pre: Preprocessor) -> ScalerPlan | str:
        """How this input's pictures of this size are resized (planned on the first)."""
        picture = frame.picture
        key = (frame.stream, picture.width, picture.height)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = self._plan(frame, pre)
        return plan

    def row_bytes(self, size: tuple[int, int]) -> int:
        """Bytes of one ``size`` picture's copied rows; 0 when it has no row plan."""
        plan = self._yuv.row_plan(size) if self._yuv is not None else None
        return plan.nbytes(size[0]) if plan is not None else 0

    def _resized(self, frame: Frame, pre: Preprocessor) -> tuple[np.ndarray, Geometry]:
        picture = frame.picture
        if picture is None:  # already RGB (a frame made by the caller)
            assert frame.image is not None
            return pre.resize_image(frame.image)
        plan = self._plan_of(frame, pre)
        if plan == YUV_PATH:
            planes = planes_of(picture)
            done = self._yuv.resize_image(planes) if planes is not None and self._yuv else None
            if done is not None:
                self.last[frame.stream] = YUV_PATH
                return done
            key = (frame.stream, picture.width, picture.height)
            plan = self._plans[key] = self._plan(frame, pre, yuv_ok=False)
        assert isinstance(plan, ScalerPlan)
        self.last[frame.stream] = plan.describe()
        if plan.size is not None:
            w, h = plan.size
            small = self._scaler(frame).reformat(
                picture, width=w, height=h, format="rgb24", interpolation=plan.interpolation
            )
            return pre.place(small.to_ndarray(), (picture.width, picture.height))
        image = full_rgb(frame, self._scaler(frame))
        assert image is not None
        return pre.resize_image(image)

    def _scaler(self, frame: Frame) -> VideoReformatter:
        """The swscale context of ``frame``'s input (made on its first frame)."""
        found = self._reformatters.get(frame.stream)
        if found is None:
            found = self._reformatters[frame.stream] = VideoReformatter()
        return found

    def _plan(self, frame: Frame, pre: Preprocessor, yuv_ok: bool = True) -> ScalerPlan | str:
        """How this input's frames of this size are resized (decided on the first one)."""
        if yuv_ok and self._yuv is not None and planes_of(frame.picture) is not None:
            plan: ScalerPlan | str = YUV_PATH
        else:
            plan = plan_scaler(pre, frame.picture)
        where = plan if isinstance(plan, str) else plan.describe()
        log.info("%s, input %d: %s", self._where, frame.stream, where)
        return plan

    def group(
        self, frames: list[Prepared], normalize: bool = True, out: np.ndarray | None = None
    ) -> Group:
        """One group of prepared frames (model inputs of one version, or one frame) in one
        tensor: normalised, or (``normalize=False``) the pictures at model size, stacked (into
        ``out``, flat uint8 of at least their bytes, when given: a decode worker's ring slot)."""
        first = frames[0]
        if not first.model_input:
            return Group(frames)
        started = time.perf_counter()
        if any(p.rows is not None for p in frames):
            assert out is not None  # where ``prepare`` copied the rows
            kinds = {p.rows for p in frames}
            kind = kinds.pop() if len(kinds) == 1 else None
            if kind is not None and not normalize:  # all rows, one shape: one block
                n = self.row_bytes(kind.size)
                tensor = out[: n * len(frames)].reshape(len(frames), n)
                _share(frames, time.perf_counter() - started)
                return Group(frames, tensor, normalized=False, rows=kind)
            self._sample_copied(frames, out)  # a picture changed size or format: here
        if first.placed is not None:
            assert self.pre is not None
            placed = [p.placed for p in frames]
            if out is not None and not normalize:
                shape = (len(placed), *first.placed.shape)
                tensor = out[: int(np.prod(shape))].reshape(shape)
                np.stack(placed, out=tensor)  # type: ignore[arg-type]
            else:
                tensor = np.stack(placed)  # type: ignore[arg-type]
            if normalize:
                tensor = self.pre.normalize(tensor)
        else:  # normalised one by one (padding inside the tensor)
            tensor, normalize = np.concatenate([p.tensor for p in frames]), True  # type: ignore[misc]
        _share(frames, time.perf_counter() - started)
        for p in frames:
            p.placed = None
        return Group(frames, tensor, normalize)

    def _sample_copied(self, frames: list[Prepared], out: np.ndarray) -> None:
        """Frames whose rows ``prepare`` copied into ``out`` (frame k's at k times its rows'
        bytes), sampled into pictures here after all: all of them first, since the pictures
        are then stacked over those rows."""
        assert self._yuv is not None
        for k, p in enumerate(frames):
            if p.rows is not None:
                n = self.row_bytes(p.rows.size)
                p.placed = self._yuv.from_rows(out[k * n : (k + 1) * n], p.rows)[0]
                p.rows = None


def sampled(group: Group, resizer: yuv.YuvResizer) -> Group:
    """``group`` with copied rows (``Group.rows``) sampled into pictures at model size, uint8,
    still to normalise: the pixels ``prepare`` gives where it samples."""
    if group.rows is None or group.tensor is None:
        return group
    started = time.perf_counter()
    images = [resizer.from_rows(r, group.rows)[0] for r in group.tensor]
    _share(group.frames, time.perf_counter() - started)
    return Group(group.frames, np.stack(images), normalized=False)


def normalized(group: Group, pre: Preprocessor) -> Group:
    """``group`` with its tensor normalised by ``pre`` (a decode worker's group)."""
    if group.normalized or group.tensor is None:
        return group
    started = time.perf_counter()
    tensor = pre.normalize(group.tensor)
    _share(group.frames, time.perf_counter() - started)
    return Group(group.frames, tensor)


def _share(frames: list[Prepared], seconds: float) -> None:
    """Count ``seconds`` of pre-processing, shared by ``frames``."""
    share = seconds / len(frames)
    for p in frames:
        p.seconds["preprocess"] = p.seconds.get("preprocess", 0.0) + share
