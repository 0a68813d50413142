"""A job's encoded video, written in segments so that a checkpoint can close what it covers.

``SegmentedVideo`` is the job's encoder: ``segments/00000.mp4``, ``00001.mp4``, ... Each
checkpoint ``cut``s the current segment (the encoder flushed, the file complete and synced),
and the next frame opens a new one; after a crash, segments from the checkpoint's count on are
incomplete and deleted. At the end ``join_segments`` remuxes them into one MP4 (packets copied,
nothing re-encoded) with the source's audio copied in as ``VideoSink`` does.

Each segment is an H.264 stream of its own (a keyframe first, the same encoder settings), and
keeps the source's timestamps exactly (``exact_mp4_options``), so joining is concatenation.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from frameserve.errors import VideoError
from frameserve.video.config import VideoOutSpec
from frameserve.video.decode import VideoInfo
from frameserve.video.sinks import AudioCopy, VideoSink, exact_mp4_options


def segment_path(folder: Path, number: int) -> Path:
    return folder / f"{number:05d}.mp4"


def segment_number(path: Path) -> int | None:
    """The number of a segment file, None for anything else."""
    if path.suffix != ".mp4" or not (path.stem.isascii() and path.stem.isdigit()):
        return None
    return int(path.stem)


def fsync_file(path: Path) -> None:
    with path.open("rb") as f:
        os.fsync(f.fileno())


class SegmentedVideo:
    """An ``Encoder`` writing numbered segments; written from one sink thread only."""

    def __init__(
        self,
        folder: Path,
        first: int,
        source: VideoInfo,
        time_base: Fraction,
        rate: Fraction | None,
        spec: VideoOutSpec,
        threads: int,
    ) -> None:
        """``first``: the number of the next segment (segments before it are complete)."""
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.complete = first
        self.seconds = 0.0  # encode time, for the profile
        self._args = (source, time_base, rate, spec, threads)
        self._current: VideoSink | None = None
        self._closed_seconds = 0.0

    def write(self, image: np.ndarray, pts: int) -> None:
        if self._current is None:
            source, time_base, rate, spec, threads = self._args
            self._current = VideoSink(
                segment_path(self.folder, self.complete), source, time_base, rate, spec,
                threads, audio=False, options=exact_mp4_options(time_base),
            )  # fmt: skip
        self._current.write(image, pts)
        self.seconds = self._closed_seconds + self._current.seconds

    def cut(self) -> int:
        """Complete the current segment (if it has frames) and sync it to disk; returns the
        number of complete segments, which a checkpoint records."""
        current, self._current = self._current, None
        if current is not None:
            current.finish()
            fsync_file(current.path)
            self._closed_seconds += current.seconds
            self.seconds = self._closed_seconds
            self.complete += 1
        return self.complete

    def finish(self) -> None:
        self.cut()

    def close(self) -> None:
        """Close the current segment as it is: past the last checkpoint, a resume deletes it."""
        current, self._current = self._current, None
        if current is not None:
            current.close()


def join_segments(segments: list[Path], source: Path, out: Path) -> int:
    """Remux ``segments`` (in order) into ``out`` with ``source``'s audio; returns the number
    of video packets. Written beside ``out`` and renamed, so ``out`` is whole or absent."""
    if not segments:
        raise VideoError(f"{out}: expected at least one video segment to join, got none")
    partial = out.with_name(out.name + ".partial")
    with av.open(str(segments[0])) as first:
        template = first.streams.video[0]
        time_base = template.time_base
        if time_base is None:
            raise VideoError(f"{segments[0]}: the video stream has no time base")
        dst = av.open(str(partial), "w", format="mp4", options=exact_mp4_options(time_base))
        try:
            video = dst.add_stream_from_template(template)
            audio = AudioCopy(dst, source)
            try:
                packets = _copy_video(segments, time_base, video, dst, audio)
                audio.until(None)
            finally:
                audio.close()
        finally:
            dst.close()
    fsync_file(partial)
    os.replace(partial, out)
    return packets


def _copy_video(
    segments: list[Path], time_base: Fraction, video: Any, dst: Any, audio: AudioCopy
) -> int:
    """Mux every segment's video packets, keeping decode timestamps increasing across joins."""
    last_dts: int | None = None
    count = 0
    for path in segments:
        with av.open(str(path)) as src:
            stream = src.streams.video[0]
            if stream.time_base != time_base:
                raise VideoError(
                    f"{path}: expected the time base {time_base} of the first segment, "
                    f"got {stream.time_base}"
                )
            for packet in src.demux(stream):
                if packet.dts is None or packet.size == 0:  # the demuxer's final empty packet
                    continue
                last_dts = _monotonic_dts(packet, last_dts, path)
                audio.until(packet.dts * time_base)
                packet.stream = video
                dst.mux(packet)
                count += 1
    return count


def _monotonic_dts(packet: Any, last_dts: int | None, path: Path) -> int:
    """The encoder invents decode times before a segment's first keyframe (B-frame delay);
    where they fall at or before the previous segment's last one, move them just after it."""
    if last_dts is not None and packet.dts <= last_dts:
        if packet.pts is not None and last_dts + 1 > packet.pts:
            raise VideoError(
                f"{path}: cannot join: decode time {packet.dts} of the packet at pts "
                f"{packet.pts} must come after {last_dts}, the previous segment's last"
            )
        packet.dts = last_dts + 1
    return int(packet.dts)
