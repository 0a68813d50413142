"""FFmpeg filter graphs on decoded frames: a video pipeline's ``filters:`` step.

A pipeline file names a linear chain of FFmpeg filters, in FFmpeg's own syntax (what
``ffmpeg -vf`` takes: ``"fftdnoiz=sigma=10,unsharp=5:5:0.4"``) or as a list of
``{filter: NAME, options: STRING | MAPPING}`` (docs/enhance.md).

The chain runs where frames are decoded (``VideoSource``: the decoder thread of ``video run``,
a job's decode worker), before sampling's kept frames reach models, interpolation or the
encoder. Each input has its own graph, kept for the whole input: FFmpeg's filters keep state
between frames (a temporal denoiser averages neighbours, and holds frames back to see the ones
after them), so frames go in and come out in order, and each output frame is given back the
exact timestamp, index and keyframe of the input frame it came from. A graph that changes the
frame rate or the timestamps (``fps``, ``select``, ``setpts``, ``yadif=1`` ...) is refused:
interpolation is the way to a higher rate. A graph may change the frame size (``scale``,
``crop``, ``pad``): the input's header then reports the size the filters make, so encoders,
decode workers and job limits see the frames as they are.

Checked at load (``check_chain``): each filter exists in PyAV's FFmpeg, takes its options, and
the chain, run over a few ``PROBE_SIZE`` test frames, keeps their count and timestamps.
FFmpeg's own message (``Unable to parse "luma_amount" option value "abc"``) is part of the
error: FFmpeg logs it rather than returning it, so it is captured from FFmpeg's log while the
check runs (``_ffmpeg_log``).
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Annotated, Any

import av
import av.error
import av.filter
import av.logging
import numpy as np
from pydantic import PlainSerializer, PlainValidator

from frameserve.errors import VideoError
from frameserve.video.frames import Frame

PROBE_SIZE = (320, 240)  # the test frames of the load-time check (width, height)
PROBE_FRAMES = 6
PROBE_TIME_BASE = Fraction(1, 25)
_LOG_LOCK = threading.Lock()  # one capture of FFmpeg's log at a time: the level is global
_SPECIAL = set(",;[]'\\")  # FFmpeg's graph syntax


@dataclass(frozen=True, slots=True)
class FilterStep:
    """One filter: its FFmpeg name and option string (``""``: its defaults)."""

    name: str
    args: str = ""

    @property
    def text(self) -> str:
        return f"{self.name}={_quote(self.args)}" if self.args else self.name


@dataclass(frozen=True, slots=True)
class FilterChain:
    """A linear chain of FFmpeg filters, checked to exist and to take their options."""

    steps: tuple[FilterStep, ...]

    @property
    def text(self) -> str:
        """The chain in FFmpeg's syntax, as ``ffmpeg -vf`` takes it."""
        return ",".join(step.text for step in self.steps)

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """The frame size the chain makes of ``width`` x ``height`` frames (one test frame
        through it; remembered, as an input is opened more than once: probe, run, resume)."""
        return _output_size(self, width, height)


@functools.lru_cache(maxsize=64)
def _output_size(chain: FilterChain, width: int, height: int) -> tuple[int, int]:
    try:
        with _ffmpeg_log() as logs:
            frames = _run_probe(chain, (width, height), 1)
    except (_StepFailed, av.error.FFmpegError, ValueError) as err:
        cause = err.cause if isinstance(err, _StepFailed) else err
        raise VideoError(
            f"filters {chain.text!r}: cannot filter {width}x{height} frames: {_said(cause, logs)}"
        ) from None
    if not frames:  # a chain that drops frames (refused at load): its frames' checks stop it
        return width, height
    return frames[0].width, frames[0].height


# -- parsing and the load-time check ---------------------------------------------------------
def parse_filters(value: object) -> FilterChain:
    """A pipeline file's ``filters:`` (FFmpeg syntax, or a list of ``{filter, options}``
    mappings or ``name=options`` strings), checked against PyAV's FFmpeg (``check_chain``).
    Raises ``ValueError`` naming the filter and what FFmpeg said (pydantic adds the field)."""
    if isinstance(value, FilterChain):
        return value
    if isinstance(value, str):
        steps = _split_chain(value)
    elif isinstance(value, list):
        steps = [step for n, item in enumerate(value) for step in _list_item(item, n)]
    else:
        raise ValueError(
            "expected an FFmpeg filter chain such as 'fftdnoiz=sigma=10,unsharp=5:5:0.4' or a "
            f"list of {{filter, options}} mappings, got {type(value).__name__}"
        )
    if not steps:
        raise ValueError("expected at least one filter, got none")
    chain = FilterChain(tuple(steps))
    check_chain(chain)
    return chain


def _list_item(item: object, n: int) -> list[FilterStep]:
    if isinstance(item, str):
        steps = _split_chain(item)
        if len(steps) != 1:
            raise ValueError(f"item {n}: expected one filter, got {len(steps)} in {item!r}")
        return steps
    if not isinstance(item, dict) or set(item) - {"filter", "options"} or "filter" not in item:
        raise ValueError(
            f"item {n}: expected a mapping with 'filter' and optional 'options', got {item!r}"
        )
    name, options = item["filter"], item.get("options")
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"item {n}: filter: expected a filter name, got {name!r}")
    if options is None:
        args = ""
    elif isinstance(options, str):
        args = options
    elif isinstance(options, dict):
        args = ":".join(f"{k}={_escape_value(v, name)}" for k, v in options.items())
    elif isinstance(options, (int, float)) and not isinstance(options, bool):
        args = str(options)
    else:
        raise ValueError(
            f"item {n}: options of {name}: expected a string or a mapping of option names to "
            f"values, got {options!r}"
        )
    return [FilterStep(name.strip(), args)]


def _escape_value(value: object, name: str) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if not isinstance(value, (str, int, float)):
        raise ValueError(f"options of {name}: expected a string or number, got {value!r}")
    return "".join("\\" + c if c in ":\\'" else c for c in str(value))


def _quote(args: str) -> str:
    """Options quoted for the chain syntax where they hold its special characters."""
    if not _SPECIAL & set(args):
        return args
    return "".join("\\" + c if c in _SPECIAL else c for c in args)


def _split_chain(text: str) -> list[FilterStep]:
    """FFmpeg's chain syntax, one level: filters split at ``,``; quotes (``'...'``) and
    backslashes protect special characters and are removed, as ``avfilter_graph_parse``
    does before a filter reads its options. Labels (``[in]``) and ``;`` (graphs with several
    chains) are refused: the step has one input and one output."""
    steps: list[FilterStep] = []
    current: list[str] = []
    quoted = escaped = False
    for c in text:
        if escaped:
            current.append(c)
            escaped = False
        elif c == "\\":
            escaped = True
        elif c == "'":
            quoted = not quoted
        elif quoted:
            current.append(c)
        elif c in "[];":
            raise ValueError(
                f"expected a linear chain of filters separated by ',' (no labels or ';'), got "
                f"{c!r} in {text!r}"
            )
        elif c == ",":
            steps.append(_step("".join(current), text))
            current = []
        else:
            current.append(c)
    if quoted or escaped:
        raise ValueError(f"expected closed quotes and escapes, got an unfinished {text!r}")
    steps.append(_step("".join(current), text))
    return steps


def _step(item: str, text: str) -> FilterStep:
    name, _, args = item.strip().partition("=")
    if not name.strip():
        raise ValueError(f"expected a filter name before each '=' and between commas in {text!r}")
    return FilterStep(name.strip(), args.strip())


@functools.lru_cache(maxsize=64)
def check_chain(chain: FilterChain) -> None:
    """Every filter exists and takes its options, and the chain keeps the count and timestamps
    of ``PROBE_FRAMES`` test frames of ``PROBE_SIZE``; ``ValueError`` says what is wrong.
    Remembered once passed: a server parses a built-in pipeline for every job."""
    available = av.filter.filters_available
    for step in chain.steps:
        if step.name not in available:
            raise ValueError(
                f"filter {step.name!r}: not in PyAV's FFmpeg {av.ffmpeg_version_info} "
                "(it has no GPL filters such as hqdn3d or eq, and no zscale; see docs/enhance.md "
                "for what is there)"
            )
        _check_pads(step.name)
    try:
        with _ffmpeg_log() as logs:
            out = _run_probe(chain, PROBE_SIZE, PROBE_FRAMES)
    except _StepFailed as err:
        raise ValueError(
            f"filter {err.step.text!r}: FFmpeg refused it: {_said(err.cause, logs)}"
        ) from None
    except (av.error.FFmpegError, ValueError) as err:
        raise ValueError(
            f"filters {chain.text!r}: FFmpeg could not run them on {PROBE_SIZE[0]}x"
            f"{PROBE_SIZE[1]} test frames: {_said(err, logs)}"
        ) from None
    times_in = [i * PROBE_TIME_BASE for i in range(PROBE_FRAMES)]
    times_out = [f.pts * f.time_base if f.pts is not None else None for f in out]
    if times_out != times_in:
        raise ValueError(
            f"filters {chain.text!r}: expected the frames' count and timestamps kept ("
            f"{PROBE_FRAMES} frames in, at {_seconds(times_in)}), got {len(out)} frames at "
            f"{_seconds(times_out)}: filters that change the frame rate or drop, add or move "
            "frames are not supported (interpolate raises the frame rate)"
        )


_DYNAMIC_INPUTS, _DYNAMIC_OUTPUTS = 1, 2  # AVFILTER_FLAG_DYNAMIC_*


def _check_pads(name: str) -> None:
    """A chain's filters take one input and give one output (FFmpeg's own message for a
    source such as ``color`` is only "Invalid argument")."""
    spec: Any = av.filter.Filter(name)  # PyAV's stubs lack its pads
    inputs, outputs = len(spec.inputs), len(spec.outputs)
    if (inputs != 1 and not spec.flags & _DYNAMIC_INPUTS) or (
        outputs != 1 and not spec.flags & _DYNAMIC_OUTPUTS
    ):
        raise ValueError(
            f"filter {name!r}: takes {inputs} input(s) and gives {outputs} output(s), expected a "
            "filter with one input and one output (no sources, sinks or mixers in a chain)"
        )


def _seconds(times: Sequence[Fraction | None]) -> str:
    shown = [f"{float(t):g}" if t is not None else "none" for t in times[:8]]
    return "[" + ", ".join(shown) + (", ...]" if len(times) > 8 else "]") + " s"


class _StepFailed(Exception):
    """Adding one filter to a graph failed (an unknown option, a value it cannot parse)."""

    def __init__(self, step: FilterStep, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.step, self.cause = step, cause


@contextlib.contextmanager
def _ffmpeg_log() -> Iterator[list[tuple[int, str, str]]]:
    """FFmpeg's error messages of this thread while the block runs (PyAV's logging is off by
    default; it is switched to errors for the block and back after)."""
    with _LOG_LOCK:
        level = av.logging.get_level()
        av.logging.set_level(av.logging.ERROR)
        try:
            with av.logging.Capture(local=True) as logs:
                yield logs
        finally:
            av.logging.set_level(level)


def _said(err: BaseException, logs: list[tuple[int, str, str]]) -> str:
    """What FFmpeg said: its logged errors, else the error's own text."""
    lines = [message.strip() for _, _, message in logs if message.strip()]
    if lines:
        return "; ".join(dict.fromkeys(lines))
    return getattr(err, "strerror", None) or str(err)


def _run_probe(chain: FilterChain, size: tuple[int, int], count: int) -> list[Any]:
    """Run ``count`` grey-ramp test frames of ``size`` through a fresh graph of ``chain``."""
    width, height = size
    ramp = np.linspace(16, 235, width, dtype=np.uint8)
    image = np.repeat(np.broadcast_to(ramp, (height, width))[..., None], 3, axis=2)
    template = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
    template = template.reformat(format="yuv420p")
    graph = _Graph(chain, width, height, "yuv420p", PROBE_TIME_BASE, threads=1)
    out = []
    for i in range(count):
        picture = template.reformat(format="yuv420p")  # a copy: FFmpeg may keep references
        picture.pts, picture.time_base = i, PROBE_TIME_BASE
        out.extend(graph.push(picture))
    out.extend(graph.flush())
    return out


class _Graph:
    """One configured FFmpeg graph: buffer -> the chain -> buffersink."""

    def __init__(
        self,
        chain: FilterChain,
        width: int,
        height: int,
        pix_fmt: str,
        time_base: Fraction,
        threads: int,
        colours: dict[str, str] | None = None,
    ) -> None:
        graph = av.filter.Graph()
        graph.threads = max(1, threads)
        source = graph.add(
            "buffer", video_size=f"{width}x{height}", pix_fmt=pix_fmt,
            time_base=str(time_base), pixel_aspect="1/1", **(colours or {}),
        )  # fmt: skip
        nodes = [source]
        for step in chain.steps:
            try:
                nodes.append(graph.add(step.name, step.args or None))
            except (av.error.FFmpegError, ValueError) as err:
                raise _StepFailed(step, err) from None
        nodes.append(graph.add("buffersink"))
        graph.link_nodes(*nodes)
        graph.configure()
        self.graph = graph

    def push(self, picture: Any) -> list[Any]:
        self.graph.vpush(picture)
        return self._drain()

    def flush(self) -> list[Any]:
        """The end of the input: the frames the filters still hold."""
        self.graph.vpush(None)
        return self._drain()

    def _drain(self) -> list[Any]:
        out = []
        while True:
            try:
                out.append(self.graph.vpull())
            except (av.error.BlockingIOError, av.error.EOFError):
                return out


# -- running on an input's frames ------------------------------------------------------------
class FrameFilter:
    """The chain over one input's frames, in order (one graph per input: its state is that
    input's). Not thread-safe: the thread that decodes the input owns it."""

    def __init__(self, chain: FilterChain, threads: int, where: str) -> None:
        self.chain = chain
        self.threads = threads
        self.where = where  # names the input in errors
        self.seconds = 0.0  # busy time, for the profile
        self._graph: _Graph | None = None
        self._shape: tuple[int, int, str] | None = None
        self._pending: deque[Frame] = deque()  # in the graph, not out yet

    def push(self, frame: Frame) -> list[Frame]:
        """Give ``frame`` to the graph; returns the frames it lets out (none while a temporal
        filter waits for later frames)."""
        started = time.perf_counter()
        picture = frame.picture
        if picture is None:
            if frame.image is None:
                raise VideoError(f"{self.where}: frame {frame.index} has no picture to filter")
            picture = av.VideoFrame.from_ndarray(frame.image, format="rgb24")
        shape = (picture.width, picture.height, picture.format.name)
        out: list[Frame] = []
        if shape != self._shape:  # the first frame, or a new size: a graph for it
            if self._graph is not None:
                out = self._flush_graph()
            self._graph = self._build(picture, frame.time_base)
            self._shape = shape
        assert self._graph is not None
        picture.pts, picture.time_base = frame.pts, frame.time_base
        self._pending.append(frame)
        out.extend(self._claim(self._run(lambda g: g.push(picture))))
        self.seconds += time.perf_counter() - started
        return out

    def flush(self) -> list[Frame]:
        """The end of the input: the frames the graph still holds."""
        started = time.perf_counter()
        out = self._flush_graph() if self._graph is not None else []
        self.seconds += time.perf_counter() - started
        return out

    def _flush_graph(self) -> list[Frame]:
        assert self._graph is not None
        graph = self._graph
        out = self._claim(self._run(lambda _: graph.flush()))
        self._graph = None
        if self._pending:
            first = self._pending[0]
            raise VideoError(
                f"{self.where}: filters {self.chain.text!r} kept {len(self._pending)} frame(s) "
                f"from frame {first.index} on and never gave them back"
            )
        return out

    def _build(self, picture: Any, time_base: Fraction) -> _Graph:
        colours = {"colorspace": str(int(picture.colorspace)),
                   "range": str(int(picture.color_range))}  # fmt: skip
        try:
            with _ffmpeg_log() as logs:
                return _Graph(
                    self.chain, picture.width, picture.height, picture.format.name, time_base,
                    self.threads, colours,
                )  # fmt: skip
        except _StepFailed as err:
            raise VideoError(
                f"{self.where}: filter {err.step.text!r} on {picture.width}x{picture.height} "
                f"{picture.format.name} frames: {_said(err.cause, logs)}"
            ) from None
        except (av.error.FFmpegError, ValueError) as err:
            raise VideoError(
                f"{self.where}: filters {self.chain.text!r} on {picture.width}x"
                f"{picture.height} {picture.format.name} frames: {_said(err, logs)}"
            ) from None

    def _run(self, call: Any) -> list[Any]:
        assert self._graph is not None
        try:
            return call(self._graph)  # type: ignore[no-any-return]
        except av.error.FFmpegError as err:
            raise VideoError(f"{self.where}: filters {self.chain.text!r}: {err}") from None

    def _claim(self, pictures: list[Any]) -> list[Frame]:
        """Each filtered picture takes the place of the oldest frame still in the graph, which
        must have its timestamp (the chain keeps the frames' timing)."""
        out = []
        for picture in pictures:
            if not self._pending:
                raise VideoError(
                    f"{self.where}: filters {self.chain.text!r} gave more frames than they were "
                    f"given (one at pts {picture.pts}): expected one frame out per frame in"
                )
            frame = self._pending.popleft()
            seconds = picture.pts * picture.time_base if picture.pts is not None else None
            if seconds != frame.seconds:
                raise VideoError(
                    f"{self.where}: filters {self.chain.text!r} moved frame {frame.index} from "
                    f"{float(frame.seconds):g} s to "
                    f"{'no time' if seconds is None else f'{float(seconds):g} s'}: expected "
                    "the frames' timestamps kept"
                )
            picture.pts, picture.time_base = frame.pts, frame.time_base
            frame.picture, frame.image = picture, None
            out.append(frame)
        return out


def filter_frames(
    frames: Iterable[Frame], chain: FilterChain, threads: int, where: str
) -> Iterator[tuple[Frame, float]]:
    """``frames`` through ``chain``, in order, each with the filter time spent since the one
    before (for the decoder's profile)."""
    runner = FrameFilter(chain, threads, where)
    spent = 0.0
    for frame in frames:
        before = runner.seconds
        out = runner.push(frame)
        spent += runner.seconds - before
        for filtered in out:
            yield filtered, spent
            spent = 0.0
    before = runner.seconds
    out = runner.flush()
    spent += runner.seconds - before
    for filtered in out:
        yield filtered, spent
        spent = 0.0


def _serialize(chain: FilterChain) -> list[dict[str, str]]:
    return [{"filter": s.name, "options": s.args} if s.args else {"filter": s.name}
            for s in chain.steps]  # fmt: skip


# The type of a pipeline file's ``filters:`` (pydantic runs ``parse_filters`` on it).
FiltersField = Annotated[
    FilterChain, PlainValidator(parse_filters), PlainSerializer(_serialize, return_type=list)
]
