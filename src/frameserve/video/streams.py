"""One input of a video run: its source, its queue of frames in flight, tracker and sinks.

A ``StreamRun`` is written to by its sink thread only (the decoder thread only submits to
its ``pump``), so its sinks and tracker need no locks. A ``StreamPlan`` says what an input
writes and where it starts: ``video run`` plans fresh files per input; a job names its own
files, starts from its checkpoint and encodes video in segments.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from frameserve.errors import VideoError
from frameserve.processing.results import Result
from frameserve.video.config import VideoOutSpec, VideoPipelineConfig
from frameserve.video.decode import VideoInfo, VideoSource
from frameserve.video.frames import Frame, SeekPoint
from frameserve.video.overlay import OverlayStyle, draw
from frameserve.video.sinks import Encoder, JsonlSink, MaskTrackSink, VideoSink, frame_fields
from frameserve.video.track import Tracker

if TYPE_CHECKING:
    from frameserve.video.plan import RunOptions
    from frameserve.video.profile import StageProfile
    from frameserve.video.pump import FramePump


@dataclass(frozen=True)
class StreamOutputs:
    """The files one input writes; None where the run did not ask for it."""

    jsonl: Path
    masks: Path | None
    video: Path | None
    summary: Path | None = None  # written from the JSON lines once the input is done

    @property
    def files(self) -> list[Path]:
        return [f for f in (self.jsonl, self.masks, self.video, self.summary) if f is not None]

    @classmethod
    def plan(
        cls, out: Path, stem: str, options: RunOptions, config: VideoPipelineConfig
    ) -> StreamOutputs:
        video = options.video_out or config.transforms  # a transformation's product is video
        return cls(
            out / f"{stem}.jsonl",
            out / f"{stem}.masks.jsonl" if options.mask_track else None,
            out / f"{stem}.mp4" if video else None,
            out / f"{stem}.summary.json"
            if options.summary and config.summary_spec() is not None
            else None,
        )


# Makes a stream's encoder: (path, source, time base, rate, spec, threads), as ``VideoSink``.
EncoderFactory = Callable[[Path, VideoInfo, Fraction, Fraction | None, VideoOutSpec, int], Encoder]


@dataclass(frozen=True)
class StreamStart:
    """Where a resumed input starts: the keyframe to decode from, the index of the first frame
    to write (kept frames below it were written before) and how many lines were written."""

    seek: SeekPoint
    next_frame: int
    written: int


@dataclass(frozen=True)
class StreamPlan:
    """What one input writes and where it starts (None: from the beginning, fresh files)."""

    outputs: StreamOutputs
    start: StreamStart | None = None
    encoder: EncoderFactory = VideoSink


def overlay_style(config: VideoPipelineConfig) -> OverlayStyle:
    o = config.overlay
    return OverlayStyle(mask=o.mask, draw_keypoints=o.keypoints, draw_labels=o.labels)


@dataclass(frozen=True)
class InputSummary:
    """What one input of a run did, as ``video run --json`` shows it under ``streams``."""

    input: Path
    decoded: int
    processed: int  # kept by the sampling and run through the pipeline
    written: int
    resize: str  # where its frames were resized (which pre-processing path)
    corrupt_skipped: int
    jsonl: Path
    masks: Path | None
    video: Path | None
    summary: Path | None = None
    decoder_cores: tuple[int, ...] = ()  # the cores its decode worker was bound to; () none
    # frames whose rows the decode worker shipped for the run to sample (``video.balance``)
    sampled_by_server: int = 0
    second_decoder_frames: int = 0  # frames a second decode worker decoded (``video.split``)

    def to_json(self) -> dict[str, Any]:
        return {
            "input": str(self.input),
            "decoded": self.decoded,
            "processed": self.processed,
            "written": self.written,
            "resize": self.resize,
            "corrupt_skipped": self.corrupt_skipped,
            "jsonl": str(self.jsonl),
            "masks": str(self.masks) if self.masks else None,
            "video": str(self.video) if self.video else None,
            "summary": str(self.summary) if self.summary else None,
            "decoder_cores": list(self.decoder_cores),
            "sampled_by_server": self.sampled_by_server,
            "second_decoder_frames": self.second_decoder_frames,
        }


@dataclass
class StreamRun:
    source: VideoSource
    outputs: StreamOutputs
    config: VideoPipelineConfig
    threads: int
    tracker: Tracker | None
    pump: FramePump
    written: int = 0  # lines written, those of a run this one resumes included
    encoder: EncoderFactory = VideoSink
    append: bool = False  # continue the JSONL file (a resumed job cut it to its checkpoint)
    finished: bool = False  # every frame of the input was written
    resize: str | None = None  # where a decode worker resized the frames (its summary)
    decoder_cores: tuple[int, ...] = ()  # the cores its decode worker was bound to
    sampled_by_server: int = 0  # frames its decode worker shipped as rows
    second_decoder_frames: int = 0  # frames its second decode worker decoded (``video.split``)
    _video: Encoder | None = None  # kept after close: its encode seconds feed the profile
    _sinks: dict[str, Any] = field(default_factory=dict)
    _opened: bool = False
    _closed: bool = False

    def _open(self) -> None:
        """Open the sinks on the first frame (in the sink thread that writes them)."""
        o, info = self.outputs, self.source.info
        self._opened = True
        if o.video is not None:
            scale = 2 if self.config.interpolates else 1
            rate = info.rate * scale if info.rate else None
            tb = info.time_base / scale
            self._video = self._sinks["video"] = self.encoder(
                o.video, info, tb, rate, self.config.video_out, self.threads
            )
        self._sinks["jsonl"] = JsonlSink(o.jsonl, self.append)
        if o.masks is not None:
            self._sinks["masks"] = MaskTrackSink(o.masks, self.config.mask_track)
        self._style = overlay_style(self.config)

    def write(self, frame: Frame, result: Result | None, image: np.ndarray | None) -> None:
        if self._closed:
            raise VideoError(f"{self.outputs.jsonl}: written after its run ended")
        if not self._opened:
            self._open()
        fields = frame_fields(
            self.written if self.config.interpolates else frame.index, frame.pts, frame.time_base
        )
        line: dict[str, Any] = dict(fields)
        if self.config.interpolates:
            line["generated"] = frame.spare
            if frame.spare:
                line["between"] = [frame.index, frame.index + 1]
        if result is not None:
            line.update(result.to_json())
        if frame.defects is not None:
            line["defects"] = frame.defects
        self._sinks["jsonl"].write(line)
        if "masks" in self._sinks:
            self._sinks["masks"].write(fields, result)
        video: Encoder | None = self._sinks.get("video")
        if video is not None:
            picture = image if image is not None else frame.image
            assert picture is not None
            if result is not None:
                picture = draw(picture.copy(), result, self._style)
            video.write(picture, frame.pts)
        self.written += 1

    @property
    def encode_seconds(self) -> float:
        return self._video.seconds if self._video is not None else 0.0

    def sync(self) -> int:
        """Force the JSON lines written so far to disk; returns the file's length in bytes."""
        if not self._opened:
            self._open()
        jsonl: JsonlSink = self._sinks["jsonl"]
        return jsonl.sync()

    def finish(self) -> None:
        if not self._opened:  # no frame at all: still leave (empty) outputs behind
            self._open()
        video: Encoder | None = self._sinks.get("video")
        if video is not None:
            video.finish()
        self.close()
        self.finished = True

    def close(self) -> None:
        """Close every sink; results written so far stay on disk."""
        for sink in self._sinks.values():
            sink.close()
        self._sinks.clear()
        self._closed = True

    def summary(self, resize: str) -> InputSummary:
        """What the input did; ``resize`` says where its frames were resized."""
        s, o = self.source.stats, self.outputs
        return InputSummary(
            self.source.path, s.decoded, s.kept, self.written, resize, s.corrupt, o.jsonl,
            o.masks, o.video, o.summary, self.decoder_cores, self.sampled_by_server,
            self.second_decoder_frames,
        )  # fmt: skip


@dataclass
class RunSummary:
    """What a run did: per-input counts and outputs, wall time and the stage profile."""

    pipeline: str
    streams: list[InputSummary]
    wall_s: float
    frames: int
    profile: StageProfile
    batches: dict[str, float] = field(default_factory=dict)  # model -> mean batch size
    inference_cores: tuple[int, ...] = ()  # the cores inference was bound to; () none

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "frames": self.frames,
            "wall_s": round(self.wall_s, 4),
            "fps": round(self.fps, 2),
            "mean_batch_size": {k: round(v, 2) for k, v in self.batches.items()},
            "stages": self.profile.to_json(),
            **({"script_stages": self.profile.script_json()} if self.profile.script else {}),
            "streams": [stream.to_json() for stream in self.streams],
            "inference_cores": list(self.inference_cores),
        }


def plan_outputs(
    inputs: list[Path], options: RunOptions, config: VideoPipelineConfig
) -> list[StreamOutputs]:
    """Output files per input: ``<stem>``, else ``<stem>-2``, ``-3``, ... so that no output is
    an input or another input's output (``x.mov`` and ``x.mp4`` in ``--out``'s folder)."""
    taken = {p.resolve() for p in inputs}
    planned = []
    for path in inputs:
        n = 1
        while True:
            stem = path.stem if n == 1 else f"{path.stem}-{n}"
            outputs = StreamOutputs.plan(options.out, stem, options, config)
            files = {f.resolve() for f in outputs.files}
            if not files & taken:
                break
            n += 1
        taken |= files
        planned.append(outputs)
    return planned


def describe_input(info: VideoInfo) -> str:
    rate = f"{float(info.rate):.3g} fps" if info.rate else "unknown rate"
    return (
        f"{info.path.name}: {info.codec} {info.width}x{info.height}, {rate}, {info.frames} frames"
    )
