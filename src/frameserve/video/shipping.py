"""What a decode worker sends the server for each group (``video.worker``), and what the server
makes of it again.

A group is its frames' pixels in the shared ring (pictures at model size stacked, or the rows
their sampling reads: ``Room``) and one pipe message: where in the ring, the tensor's shape,
and the frames' timestamps and geometry (``pack_frames``). The message is built once per group
on the decoder's core, which is the run's limit on content that is hard to decode: plain
tuples, not dataclasses.
"""

from __future__ import annotations

from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.shared_memory import SharedMemory
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from frameserve.processing.transform import Geometry
from frameserve.video.frames import Frame, SeekPoint
from frameserve.video.prepare import FramePreparer, Prepared
from frameserve.video.ring import RingWriter

if TYPE_CHECKING:
    from fractions import Fraction

    from frameserve.video.worker import WorkerSpec


class FrameMeta(NamedTuple):
    """One frame of a group, as the pipe carries it (the pixels are in the slot).

    Sent as a plain tuple (``tuple(meta)``; ``FrameMeta._make`` on the server's side), with
    what its group's frames share (the time base, a geometry) sent once per group: a decode
    worker ships every group, and pickling eight dataclasses with a ``Fraction`` and a
    ``Geometry`` each took five times as long as the tuples (30 against 6 us a group, more
    with the decoder's data in the caches)."""

    frame_index: int
    pts: int
    time_base: Fraction | None  # None: the group's (``pack_frames``)
    keyframe: bool
    seek: SeekPoint | None
    geometry: Geometry | None  # None: the group's
    preprocess_s: float | None  # seconds spent preparing it (None: not prepared)
    image: tuple[int, tuple[int, ...]] | None  # (offset in the slot, shape) of a whole frame
    defects: list[str] | None = None


@dataclass(frozen=True, slots=True)
class Room:
    """A group's room in the ring, taken at its first frame when it ships rows: each frame's
    rows are copied there as soon as it is decoded, while the picture is in the cache."""

    base: int
    view: np.ndarray  # flat uint8, at least ``slot_bytes``
    per_frame: int  # bytes of one frame's rows

    def frame(self, k: int) -> np.ndarray:
        return self.view[k * self.per_frame : (k + 1) * self.per_frame]


def reserve(frame: Frame, ring: RingWriter, shm: SharedMemory, preparer: FramePreparer,
             spec: WorkerSpec) -> Room | None:  # fmt: skip
    """At a group's first frame: take the server's asks; room for the group's rows where it
    asks for rows and they take at most half the ring (a picture's size can change within a
    stream), else None (pictures, stacked when shipped)."""
    ring.poll()
    n = preparer.gathers(frame) if ring.rows else 0
    if n == 0 or 2 * spec.group * n > ring.size:
        return None
    need = max(spec.slot_bytes, spec.group * n)
    base = ring.place(need)
    return Room(base, np.ndarray((need,), np.uint8, buffer=shm.buf, offset=base), n)


def ship(conn: Connection, shm: SharedMemory, ring: RingWriter, preparer: FramePreparer,
          pending: list[Prepared], spec: WorkerSpec, room: Room | None) -> int:  # fmt: skip
    """Write one group into the ring (its rows are there already) and tell the server; the
    frames shipped as rows."""
    if room is None:
        at = ring.place(spec.slot_bytes)
        room = Room(at, np.ndarray((spec.slot_bytes,), np.uint8, buffer=shm.buf, offset=at), 0)
    base = room.base
    # the server normalises (fewer bytes); pictures are stacked straight into the ring
    group = preparer.group(pending, normalize=False, out=room.view)
    offset = 0
    tensor_info = None
    if group.tensor is not None:
        t = group.tensor
        if not np.may_share_memory(t, room.view):  # made elsewhere (normalised one by one)
            np.ndarray(t.shape, t.dtype, buffer=shm.buf, offset=base)[...] = t
        tensor_info = (t.shape, t.dtype.str, group.normalized)
        offset = t.nbytes
    images = []
    for p in group.frames:
        image = None
        if p.frame.image is not None and spec.full:
            im = p.frame.image
            np.ndarray(im.shape, np.uint8, buffer=shm.buf, offset=base + offset)[...] = im
            image = (offset, im.shape)
            offset += im.nbytes
        images.append(image)
    time_base, shared, metas = pack_frames(group.frames, images)
    conn.send(("group", base, tensor_info, time_base, shared, metas, group.rows))
    return len(metas) if group.rows is not None else 0


def pack_frames(
    frames: list[Prepared], images: list[tuple[int, tuple[int, ...]] | None]
) -> tuple[Fraction, Geometry | None, list[tuple[Any, ...]]]:
    """A group's frames as the pipe carries them: the time base and the geometry its frames
    share, sent once, and a ``FrameMeta`` tuple per frame (``images``: where each frame's
    whole image is in the slot) that names its own only where it differs."""
    time_base = frames[0].frame.time_base
    shared = frames[0].geometry
    if any(p.geometry != shared for p in frames):
        shared = None
    metas = []
    for p, image in zip(frames, images, strict=True):
        f = p.frame
        geometry = p.geometry if shared is None else None
        own = None if f.time_base is time_base or f.time_base == time_base else f.time_base
        seconds = p.seconds.get("preprocess")
        metas.append((f.index, f.pts, own, f.keyframe, f.seek, geometry, seconds, image, f.defects))
    return time_base, shared, metas


def unpack_frames(
    stream: int,
    time_base: Fraction,
    geometry: Geometry | None,
    metas: list[tuple[Any, ...]],
    slot: memoryview | None = None,
) -> list[Prepared]:
    """``pack_frames``' frames of input ``stream`` again, their whole images copied out of
    ``slot`` (the group's bytes in the ring) where they have one."""
    frames = []
    for fields in metas:
        m = FrameMeta._make(fields)
        image = None
        if m.image is not None:
            assert slot is not None
            offset, shape = m.image
            image = np.ndarray(shape, np.uint8, buffer=slot, offset=offset).copy()
        base_of = m.time_base if m.time_base is not None else time_base
        frame = Frame(stream, m.frame_index, m.pts, base_of, image, m.keyframe, seek=m.seek,
                      defects=m.defects)  # fmt: skip
        seconds = {} if m.preprocess_s is None else {"preprocess": m.preprocess_s}
        placed = m.geometry if m.geometry is not None else geometry
        frames.append(Prepared(frame, geometry=placed, seconds=seconds))
    return frames
