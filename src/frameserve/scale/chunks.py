"""Cutting one input into chunks at keyframes, by demuxing only (nothing is decoded).

A ``Chunk`` is what a node needs to process a stretch of the input as a resumed job would:
the keyframe to start from with the frame selector's state there (``SeekPoint``), the index
of its first frame, the end bound (the first index of the next chunk) and the kept frames of
the next chunk it runs on past its end (``overlap``: their track ids stitch the chunks).

``plan_chunks`` replays ``FrameSelector`` over the packet timestamps in presentation order,
so every chunk keeps exactly the frames a decode of the whole file keeps (indices are the rank
of a frame's pts among the packet pts, as ``VideoSource`` counts them). ``write_pieces`` copies
each chunk's packets (from its keyframe, in decode order, up to the last packet it needs) into
a small MP4 of its own with the source's exact timestamps: the piece is what the coordinator
ships through the object store, so inputs need no shared storage.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from frameserve.errors import VideoError
from frameserve.video.frames import FrameSelector, Sampling, SeekPoint
from frameserve.video.sinks import exact_mp4_options


@dataclass(frozen=True, slots=True)
class Chunk:
    """One stretch of an input: frames ``first`` to ``end`` (exclusive) in decoded indices."""

    number: int
    seek: SeekPoint
    first: int  # index of the keyframe it starts at
    end: int  # index of the next chunk's keyframe (the input's frame count for the last)
    kept: int  # frames of [first, end) the sampling keeps: the lines this chunk commits
    overlap: tuple[int, ...]  # kept indices of the next chunk this one also runs (stitching)
    bound_pts: int | None  # frames at this pts or later are not this chunk's (None: the end)
    packets: tuple[int, int]  # decode-order positions [from, to] the piece holds
    end_pts: int | None = None  # pts of frame ``end`` (None: the last chunk)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["seek"] = {
            "pts": self.seek.pts,
            "index": self.seek.index,
            "next_tick": str(self.seek.next_tick) if self.seek.next_tick is not None else None,
        }
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Chunk:
        s = d["seek"]
        tick = Fraction(s["next_tick"]) if s["next_tick"] is not None else None
        return cls(
            d["number"], SeekPoint(s["pts"], s["index"], tick), d["first"], d["end"], d["kept"],
            tuple(d["overlap"]), d["bound_pts"], (d["packets"][0], d["packets"][1]),
            d.get("end_pts"),
        )  # fmt: skip


@dataclass(frozen=True)
class ChunkPlan:
    """The chunks of one input and what was planned for (checked again on a resume)."""

    chunks: tuple[Chunk, ...]
    sampling: str
    frames: int  # decoded frames of the input
    kept: int  # frames every chunk together commits

    def to_json(self) -> str:
        return json.dumps(
            {
                "sampling": self.sampling,
                "frames": self.frames,
                "kept": self.kept,
                "chunks": [c.to_json() for c in self.chunks],
            }
        )

    @classmethod
    def from_json(cls, text: str) -> ChunkPlan:
        d = json.loads(text)
        chunks = tuple(Chunk.from_json(c) for c in d["chunks"])
        return cls(chunks, d["sampling"], d["frames"], d["kept"])


@dataclass(frozen=True, slots=True)
class _Packet:
    pts: int
    keyframe: bool


def _packets(path: Path) -> tuple[list[_Packet], Fraction]:
    """The video packets in decode order (demuxed only) and the stream's time base."""
    packets: list[_Packet] = []
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise VideoError(f"{path}: expected a video stream, found none")
        stream = container.streams.video[0]
        time_base = stream.time_base or Fraction(1, 90000)
        for packet in container.demux(stream):
            if packet.size == 0:  # the demuxer's final empty packet
                continue
            if packet.pts is None:
                raise VideoError(
                    f"{path}: packet {len(packets)} has no pts: chunking needs timestamps "
                    "(remux raw streams into MP4 or MKV first)"
                )
            packets.append(_Packet(int(packet.pts), bool(packet.is_keyframe)))
    if not packets:
        raise VideoError(f"{path}: expected video packets, found none")
    return packets, Fraction(time_base)


def plan_chunks(path: Path, sampling: Sampling, chunk_frames: int, overlap: int) -> ChunkPlan:
    """Chunks of at least ``chunk_frames`` decoded frames (the last may be shorter), each
    starting at a keyframe; each runs ``overlap`` kept frames of the next one as well."""
    if chunk_frames < 1 or overlap < 0:
        raise VideoError(f"chunks: expected chunk_frames >= 1 and overlap >= 0, got "
                         f"{chunk_frames} and {overlap}")  # fmt: skip
    packets, time_base = _packets(path)
    order = sorted(range(len(packets)), key=lambda n: packets[n].pts)  # presentation order
    sorted_pts = [packets[n].pts for n in order]
    selector = FrameSelector(sampling)
    kept: list[int] = []
    starts: list[tuple[int, SeekPoint]] = []  # (index, seek point) of usable keyframes
    for index, n in enumerate(order):
        p = packets[n]
        if p.keyframe:
            point = selector.seek_point(p.pts, index)
            if not starts or index - starts[-1][0] >= chunk_frames:
                starts.append((index, point))
        if selector.keep(index, p.pts, time_base, p.keyframe):
            kept.append(index)
    if not starts or starts[0][0] != 0:
        raise VideoError(f"{path}: the first frame is not a keyframe: cannot cut chunks")
    position = {packets[n].pts: n for n in range(len(packets))}  # pts -> decode position
    chunks = []
    total = len(order)
    for number, (first, seek) in enumerate(starts):
        end = starts[number + 1][0] if number + 1 < len(starts) else total
        lo, hi = bisect.bisect_left(kept, first), bisect.bisect_left(kept, end)
        tail = tuple(kept[hi : hi + overlap]) if end < total else ()
        last = tail[-1] if tail else end - 1  # the last index this chunk needs
        bound = sorted_pts[last + 1] if last + 1 < total else None
        start_pos = position[seek.pts]
        needed = [position[sorted_pts[i]] for i in range(first, last + 1)]
        end_pts = sorted_pts[end] if end < total else None
        held = (start_pos, max(needed))
        chunks.append(Chunk(number, seek, first, end, hi - lo, tail, bound, held, end_pts))
    return ChunkPlan(tuple(chunks), str(sampling), total, len(kept))


def write_pieces(path: Path, plan: ChunkPlan, folder: Path) -> list[Path]:
    """Copy each chunk's packets into ``folder/NNNNN.mp4`` in one pass over the input."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [piece_path(folder, c.number) for c in plan.chunks]
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        time_base = stream.time_base or Fraction(1, 90000)
        open_: dict[int, tuple[Any, Any]] = {}
        try:
            for n, packet in enumerate(_demuxed(container, stream)):
                for chunk in plan.chunks:
                    lo, hi = chunk.packets
                    if lo <= n <= hi:
                        out = open_.get(chunk.number)
                        if out is None:
                            out = open_[chunk.number] = _open_piece(paths[chunk.number],
                                                                    stream, time_base)  # fmt: skip
                        out[0].mux(_copy(packet, out[1]))
                    if n == hi and chunk.number in open_:
                        open_.pop(chunk.number)[0].close()
        finally:
            for dst, _ in open_.values():
                dst.close()
    return paths


def _demuxed(container: Any, stream: Any) -> Iterator[Any]:
    for packet in container.demux(stream):
        if packet.size != 0:
            yield packet


def _open_piece(path: Path, template: Any, time_base: Fraction) -> tuple[Any, Any]:
    dst = av.open(str(path), "w", format="mp4", options=exact_mp4_options(time_base))
    return dst, dst.add_stream_from_template(template)


def _copy(packet: Any, stream: Any) -> Any:
    """A copy of ``packet`` for ``stream``: muxing rescales a packet in place, and the packets
    a chunk runs past its end go into two pieces."""
    copy = av.Packet(bytes(packet))
    copy.pts, copy.dts, copy.time_base = packet.pts, packet.dts, packet.time_base
    copy.duration = packet.duration
    copy.is_keyframe = packet.is_keyframe
    copy.stream = stream
    return copy


def piece_path(folder: Path, number: int) -> Path:
    return folder / f"{number:05d}.mp4"
