"""Technical defects of each frame, found by FFmpeg's own filters: black, frozen, blocky, blurry.

A pipeline with a ``defects:`` block runs each input's kept frames, in order, through FFmpeg
filter graphs where they are decoded (the decoder thread of ``video run``, or a job's decode
worker process), before the model's pre-processing lets the decoded picture go. Each frame
gets ``Frame.defects``, the list its JSON line carries as ``"defects"`` (``[]`` when none);
the time ranges are made from those lines by the per-video summary.

What each flag means on a frame (FFmpeg's filters, measured on the decoder's own picture):

- ``black``: ``blackdetect`` (``d=0``): at least ``black_ratio`` of the pixels are darker than
  ``black_pixel`` (a fraction of the luma range). A black frame gets no other flag (with
  ``black: false`` it is judged like any other).
- ``frozen``: ``freezedetect`` (``d=0``): the frame repeats the last frame that changed (mean
  difference under ``freeze_noise_db``); the first frame of a still run is not frozen, the
  ones that repeat it are. Without a minimum length: a still title card is frozen too; how
  long a run must be to count is the summary's choice.
- ``blocky``: ``blockdetect``'s blockiness over ``block_threshold`` (measured with JPEG
  copies of three scikit-image photographs: about 1.1 for the originals, 3-4 at quality 50,
  6-10 at quality 20, 18-40 at quality 10). It looks for the codec's block grid, so it runs on
  the full frame; its number carries over from frame to frame within one graph, so each frame
  gets a graph of its own.
- ``blurry``: ``blurdetect``'s edge width over ``blur_threshold`` pixels, measured on a copy at
  most ``blur_width`` pixels wide (so the threshold means the same at every resolution, and
  it costs a quarter at 1280x720): 4.5-6.2 for the same photographs, 8-9 after a Gaussian blur
  of sigma 2, 12-14 after sigma 4.

Cost (1280x720, one core): black and frozen ~0.2 ms each, blocky ~6 ms, blurry ~7 ms at 640
wide (~27 ms at full size), counted in the run profile's decode stage. The filters see the
frames the pipeline samples: with
``--sample fps:2``, ``frozen`` compares frames half a second apart. A resumed job starts the
filters afresh at its checkpoint.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from fractions import Fraction
from typing import Annotated, Any

import av
from av.video.reformatter import VideoReformatter
from pydantic import BaseModel, ConfigDict, Field

from frameserve.errors import ConfigError
from frameserve.video.decode import DecodeStats
from frameserve.video.frames import Frame

FLAGS = ("black", "frozen", "blocky", "blurry")  # the order flags are listed in
FILTERS = ("blackdetect", "freezedetect", "blockdetect", "blurdetect")
_PLAIN_FORMATS = ("yuv420p", "yuvj420p", "gray")  # others are converted first


class DefectsSpec(BaseModel):
    """A pipeline's ``defects:`` block: which flags, and the thresholds of each filter."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    black: bool = True
    frozen: bool = True
    blocky: bool = True
    blurry: bool = True
    black_pixel: Annotated[float, Field(ge=0, le=1)] = 0.10  # blackdetect pix_th
    black_ratio: Annotated[float, Field(ge=0, le=1)] = 0.98  # blackdetect pic_th
    freeze_noise_db: Annotated[float, Field(lt=0)] = -60.0  # freezedetect n
    block_threshold: Annotated[float, Field(gt=0)] = 10.0
    blur_threshold: Annotated[float, Field(gt=0)] = 8.0
    blur_width: Annotated[int, Field(ge=32)] = 640


def check_filters() -> None:
    """Refuse a pipeline with defects where this FFmpeg lacks one of the filters."""
    missing = [name for name in FILTERS if name not in av.filter.filters_available]
    if missing:
        raise ConfigError(
            f"defects: this PyAV's FFmpeg has no {', '.join(missing)} filter; expected "
            f"{', '.join(FILTERS)}"
        )


class _Chain:
    """One filter graph: buffer -> filters -> buffersink, for one size and pixel format."""

    def __init__(self, filters: list[tuple[str, str]], width: int, height: int, fmt: str,
                 time_base: Fraction) -> None:  # fmt: skip
        self.graph = av.filter.Graph()
        pixels = av.VideoFormat(fmt)
        node = self.graph.add_buffer(width=width, height=height, format=pixels, time_base=time_base)
        for name, args in filters:
            step = self.graph.add(name, args)
            node.link_to(step)
            node = step
        sink = self.graph.add("buffersink")
        node.link_to(sink)
        self.graph.configure()

    def run(self, picture: Any) -> dict[str, str]:
        """The metadata the filters set on ``picture`` (pushed in, pulled out: one each)."""
        self.graph.push(picture)
        return dict(self.graph.pull().metadata)


class DefectDetector:
    """The flags of one input's frames, in order (its state is the run of frozen frames)."""

    def __init__(self, spec: DefectsSpec) -> None:
        self.spec = spec
        self._key: tuple[int, int, str] | None = None
        self._full: _Chain | None = None
        self._blur: _Chain | None = None
        self._blur_size = (0, 0)
        self._black = False
        self._frozen = False
        # kept (a new swscale context per frame costs more than the scaling), one per use so
        # neither is set up again for the other's sizes
        self._to_plain = VideoReformatter()
        self._shrink = VideoReformatter()

    def inspect(self, picture: Any, pts: int) -> list[str]:
        """The flags of one decoded picture (a PyAV ``VideoFrame``, presented at ``pts``), in
        ``FLAGS`` order."""
        if picture.pts is None:  # freezedetect measures time: give it the frame's own
            picture.pts = pts
        if picture.format.name not in _PLAIN_FORMATS:
            picture = self._to_plain.reformat(picture, format="yuv420p")
        self._open(picture)
        assert self._full is not None
        meta = self._full.run(picture)
        black = self._black_state(meta)
        frozen = self._frozen_state(meta)
        if black and self.spec.black:
            return ["black"]  # nothing else about a black frame is worth saying
        flags = []
        if frozen and self.spec.frozen:
            flags.append("frozen")
        if self.spec.blocky and self._blockiness(picture) > self.spec.block_threshold:
            flags.append("blocky")
        if self.spec.blurry and self._blur_width(picture) > self.spec.blur_threshold:
            flags.append("blurry")
        return flags

    def _open(self, picture: Any) -> None:
        """(Re)build the graphs for this size and format; the first frame, or a change."""
        key = (picture.width, picture.height, picture.format.name)
        if key == self._key:
            return
        s = self.spec
        tb = picture.time_base or Fraction(1, 90000)
        full = [
            ("blackdetect", f"d=0:pix_th={s.black_pixel}:pic_th={s.black_ratio}"),
            ("freezedetect", f"n={s.freeze_noise_db}dB:d=0"),
        ]
        self._full = _Chain(full, picture.width, picture.height, key[2], tb)
        self._blur = None
        if s.blurry:
            w = min(s.blur_width, picture.width)
            h = max(2, round(picture.height * w / picture.width / 2) * 2)
            self._blur_size = (w, h)
            self._blur = _Chain([("blurdetect", "")], w, h, "yuv420p", tb)
        self._key = key
        self._black = self._frozen = False

    def _black_state(self, meta: dict[str, str]) -> bool:
        if "lavfi.black_start" in meta:
            self._black = True
        if "lavfi.black_end" in meta:
            self._black = False
        return self._black

    def _frozen_state(self, meta: dict[str, str]) -> bool:
        # d=0: freezedetect marks a start on every changed frame and ends it there too, so a
        # frame is frozen when a start (or an earlier frozen frame) is not followed by an end.
        if "lavfi.freezedetect.freeze_start" in meta:
            self._frozen = True
        if "lavfi.freezedetect.freeze_end" in meta:
            self._frozen = False
        return self._frozen

    def _blockiness(self, picture: Any) -> float:
        # blockdetect's number carries over from the frames it saw before (a flat frame
        # repeats it): a graph of its own for each frame gives the frame's own (~0.4 ms).
        chain = _Chain([("blockdetect", "")], picture.width, picture.height,
                       picture.format.name, picture.time_base or Fraction(1, 90000))  # fmt: skip
        return _number(chain.run(picture).get("lavfi.block"))

    def _blur_width(self, picture: Any) -> float:
        assert self._blur is not None
        w, h = self._blur_size
        small = picture
        if (picture.width, picture.height) != (w, h) or picture.format.name != "yuv420p":
            small = self._shrink.reformat(
                picture, width=w, height=h, format="yuv420p", interpolation="AREA"
            )
            small.pts, small.time_base = picture.pts, picture.time_base
        return _number(self._blur.run(small).get("lavfi.blur"))


def _number(text: str | None) -> float:
    """A filter's number; missing or NaN (blurdetect on a flat picture) counts as 0."""
    if text is None:
        return 0.0
    try:
        value = float(text)
    except ValueError:
        return 0.0
    return value if math.isfinite(value) else 0.0


def with_defects(
    frames: Iterator[Frame], spec: DefectsSpec | None, stats: DecodeStats | None = None
) -> Iterator[Frame]:
    """``frames`` with ``Frame.defects`` set (unchanged when ``spec`` is None); runs in the
    thread or process that decodes them, before their pictures are converted. The filters'
    time is added to ``stats`` (the run's profile shows it under decode)."""
    if spec is None:
        yield from frames
        return
    detector = DefectDetector(spec)
    for frame in frames:
        if frame.picture is not None:
            started = time.perf_counter()
            frame.defects = detector.inspect(frame.picture, frame.pts)
            if stats is not None:
                stats.seconds += time.perf_counter() - started
        yield frame
