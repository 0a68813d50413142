"""Encoded output of a distributed job: each chunk's segment, drawn with the joined track ids.

Overlays draw track ids (``#7`` and a colour per id), and a chunk's own ids are only known
once the chunks before it are joined. So a job with ``video_out`` runs in two passes: the
first commits every chunk's lines; the coordinator joins them; the second runs each chunk
again with ``video_out`` on, its tracker replaced by ``GivenIds`` (the joined ids of each
frame, by pts), and encodes only the chunk's own frames (``OwnFrames``) into a segment of its
own (an H.264 stream starting with a keyframe, the source's exact timestamps). The segments
are joined as a local job's are (``join_segments``, audio copied from the source).
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from frameserve.processing.results import Detections
from frameserve.video.config import VideoOutSpec
from frameserve.video.decode import VideoInfo
from frameserve.video.sinks import Encoder, VideoSink, exact_mp4_options

IdsByPts = dict[float, list[int]]  # a frame's pts in seconds -> its rows' joined track ids


class GivenIds:
    """A tracker that gives each frame's rows the ids the join gave them (rows unchanged)."""

    def __init__(self, ids: IdsByPts) -> None:
        self.ids = ids

    def update(self, detections: Detections, seconds: float | None) -> Detections:
        given = self.ids.get(seconds) if seconds is not None else None
        if given is None or len(given) != len(detections):
            return detections  # a frame of the overlap: it is not encoded
        return dataclasses.replace(detections, track_ids=np.asarray(given, dtype=np.int64))


class OwnFrames:
    """An ``Encoder`` that writes frames before ``end_pts`` only (the chunk's own)."""

    def __init__(self, sink: VideoSink, end_pts: int | None) -> None:
        self.sink = sink
        self.end_pts = end_pts
        self.seconds = 0.0

    def write(self, image: np.ndarray, pts: int) -> None:
        if self.end_pts is None or pts < self.end_pts:
            self.sink.write(image, pts)
            self.seconds = self.sink.seconds

    def finish(self) -> None:
        self.sink.finish()
        self.seconds = self.sink.seconds

    def close(self) -> None:
        self.sink.close()


def segment_encoder(end_pts: int | None) -> Any:
    """An ``EncoderFactory`` for a chunk's segment: video only, exact timestamps."""

    def make(
        path: Path,
        source: VideoInfo,
        time_base: Fraction,
        rate: Fraction | None,
        spec: VideoOutSpec,
        threads: int,
    ) -> Encoder:
        options = exact_mp4_options(time_base)
        sink = VideoSink(path, source, time_base, rate, spec, threads, audio=False,
                         options=options)  # fmt: skip
        return OwnFrames(sink, end_pts)

    return make


def ids_by_chunk(lines: list[bytes], ends: list[int]) -> list[IdsByPts]:
    """Split joined lines by chunk (``ends``: each chunk's end bound) into ids by pts."""
    import orjson

    out: list[IdsByPts] = [{} for _ in ends]
    chunk = 0
    for raw in lines:
        line = orjson.loads(raw)
        while line["frame"] >= ends[chunk]:
            chunk += 1
        dets = line.get("detections")
        if isinstance(dets, list) and dets and "track_id" in dets[0]:
            out[chunk][float(line["pts"])] = [int(d["track_id"]) for d in dets]
    return out
