"""Where results go: JSON lines, mask-track polygons, and re-encoded video with overlays.

Each sink belongs to one stream and is written from that stream's sink thread only, in frame
order. Lines are flushed as they are written, so a run that fails or is interrupted keeps
every result it produced. The video sink encodes H.264 with PyAV at the source's size and
timestamps and copies the audio packets through untouched, interleaved by time.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import IO, Any, Protocol

import av
import av.error
import numpy as np
import orjson

from frameserve.errors import VideoError
from frameserve.processing.results import Mask, Result
from frameserve.video.config import MaskTrackSpec, VideoOutSpec
from frameserve.video.decode import VideoInfo, open_video
from frameserve.video.masks import mask_polygons, polygons_to_json

log = logging.getLogger(__name__)


def frame_fields(index: int, pts: int, time_base: Fraction) -> dict[str, Any]:
    """The fields every line starts with: the frame index and its time, exact and in seconds."""
    # int * int / int: correctly rounded, as float(Fraction) is, without a Fraction per frame
    seconds = pts * time_base.numerator / time_base.denominator
    return {"frame": index, "pts": seconds, "pts_ticks": pts}


class JsonlSink:
    """``OUT/<stem>.jsonl``: one JSON object per processed frame.

    ``append``: continue a file (a resumed job, which cut it back to its checkpoint first).
    """

    def __init__(self, path: Path, append: bool = False) -> None:
        self.path = path
        self._file: IO[bytes] = path.open("ab" if append else "wb")

    def write(self, line: dict[str, Any]) -> None:
        self._file.write(orjson.dumps(line, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")
        self._file.flush()

    def sync(self) -> int:
        """Force the lines written so far to disk; returns the file's length in bytes."""
        self._file.flush()
        os.fsync(self._file.fileno())
        return self._file.tell()

    def close(self) -> None:
        self._file.close()


class MaskTrackSink:
    """``OUT/<stem>.masks.jsonl``: simplified outer polygons of the mask, per frame."""

    def __init__(self, path: Path, spec: MaskTrackSpec) -> None:
        self.spec = spec
        self._lines = JsonlSink(path)

    def write(self, fields: dict[str, Any], result: Result | None) -> None:
        if not isinstance(result, Mask):
            raise VideoError(f"--mask-track needs masks, the pipeline gave {type(result).__name__}")
        s = self.spec
        polygons = mask_polygons(result.mask, s.epsilon, s.min_area, s.max_points)
        self._lines.write({**fields, "polygons": polygons_to_json(polygons)})

    def close(self) -> None:
        self._lines.close()


class Encoder(Protocol):
    """What a stream's video output does (``VideoSink``; jobs write segments)."""

    seconds: float  # encode time, for the profile

    def write(self, image: np.ndarray, pts: int) -> None: ...

    def finish(self) -> None: ...

    def close(self) -> None: ...


class AudioCopy:
    """Copies the first audio stream of a source into ``out`` untouched, interleaved by time:
    call ``until(t)`` before muxing a video packet at ``t`` seconds, ``until(None)`` at the end."""

    def __init__(self, out: Any, source: Path) -> None:
        self._out = out
        self._input: Any = open_video(source)
        self._pending: Any = None  # the next audio packet, read but not muxed yet
        self.stream: Any = None
        self._packets: Iterator[Any] = iter(())
        if self._input.streams.audio:
            template = self._input.streams.audio[0]  # added by template: codec parameters kept
            self.stream = out.add_stream_from_template(template)
            self._packets = self._input.demux(template)

    def until(self, seconds: Fraction | None) -> None:
        """Copy audio packets up to ``seconds`` (all when None)."""
        if self.stream is None:
            return
        while True:
            if self._pending is None:
                self._pending = next(self._packets, None)
                if self._pending is None:
                    return
            packet = self._pending
            if packet.dts is None or packet.size == 0:  # the demuxer's final empty packet
                self._pending = None
                continue
            if seconds is not None and packet.dts * packet.time_base > seconds:
                return
            packet.stream = self.stream
            self._out.mux(packet)
            self._pending = None

    def close(self) -> None:
        if self._input is not None:
            self._input.close()
            self._input = None


def exact_mp4_options(time_base: Fraction) -> dict[str, str]:
    """MP4 muxer options that keep a track's start exact: the movie time scale (edit lists)
    is 1/1000 s by default, which moves a segment starting at 4/3 s by 30 ticks of 1/90000."""
    return {"movie_timescale": str(time_base.denominator)}


class VideoSink:
    """``OUT/<stem>.mp4``: H.264, the source's size and timestamps, audio copied through.

    ``audio=False`` writes the video only (job segments: the audio is copied when they are
    joined); ``options`` are the muxer's.
    """

    def __init__(
        self,
        path: Path,
        source: VideoInfo,
        time_base: Fraction,
        rate: Fraction | None,
        spec: VideoOutSpec,
        threads: int,
        audio: bool = True,
        options: dict[str, str] | None = None,
    ) -> None:
        self.path = path
        self.time_base = time_base
        self.seconds = 0.0  # encode time, for the profile
        self.frames = 0
        self._out: Any = av.open(str(path), "w", options=options or {})
        self._audio: AudioCopy | None = None
        self._finished = False
        self._video: Any = None
        try:
            self._video = self._video_stream(source, time_base, rate, spec, threads)
            if audio:
                self._audio = AudioCopy(self._out, source.path)
        except BaseException:
            self.close()
            raise

    def _video_stream(
        self,
        source: VideoInfo,
        time_base: Fraction,
        rate: Fraction | None,
        spec: VideoOutSpec,
        threads: int,
    ) -> Any:
        stream = self._out.add_stream(spec.codec, rate=rate or Fraction(30))
        stream.width, stream.height = source.width, source.height
        even = source.width % 2 == 0 and source.height % 2 == 0
        stream.pix_fmt = "yuv420p" if even else "yuv444p"  # 4:2:0 needs even sizes
        stream.time_base = time_base  # keep the source's ticks: no rounding of timestamps
        stream.codec_context.time_base = time_base
        stream.codec_context.thread_count = max(1, threads)
        stream.options = {"preset": spec.preset, "crf": str(spec.crf)}
        return stream

    def write(self, image: np.ndarray, pts: int) -> None:
        started = time.perf_counter()
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = pts
        frame.time_base = self.time_base
        for packet in self._video.encode(frame):
            self._mux_video(packet)
        self.frames += 1
        self.seconds += time.perf_counter() - started

    def _mux_video(self, packet: Any) -> None:
        if self._audio is not None and packet.dts is not None and packet.time_base is not None:
            self._audio.until(packet.dts * packet.time_base)
        self._out.mux(packet)

    def finish(self) -> None:
        """Flush the encoder and the remaining audio; the file is complete afterwards."""
        started = time.perf_counter()
        self._finished = True
        for packet in self._video.encode():
            self._mux_video(packet)
        if self._audio is not None:
            self._audio.until(None)
        self.seconds += time.perf_counter() - started
        self.close()

    def close(self) -> None:
        """Close the file; after an error or Ctrl-C, first write the frames the encoder holds."""
        if self._out is not None and self._video is not None and not self._finished:
            self._finished = True
            try:
                for packet in self._video.encode():
                    self._out.mux(packet)
            except (av.error.FFmpegError, ValueError) as err:
                log.warning("%s: could not flush the encoder while closing: %s", self.path, err)
        if self._audio is not None:
            self._audio.close()
            self._audio = None
        if self._out is not None:
            self._out.close()
            self._out = None
