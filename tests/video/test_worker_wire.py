"""What a decode worker's pipe carries for each group's frames (``pack_frames`` /
``unpack_frames``): what the frames share is sent once, and every frame comes back as it was."""

from __future__ import annotations

import pickle
from fractions import Fraction

import numpy as np

from frameserve.processing.transform import Geometry
from frameserve.video.frames import Frame, SeekPoint
from frameserve.video.prepare import Prepared
from frameserve.video.shipping import pack_frames, unpack_frames

SQUARE = Geometry((1280, 720), (192, 192), (0.15, 0.15), (0.0, 42.0))
WIDE = Geometry((960, 540), (192, 192), (0.2, 0.2), (0.0, 42.0))
TB = Fraction(1, 15360)


def prepared(index: int, geometry: Geometry | None, time_base: Fraction = TB) -> Prepared:
    seek = SeekPoint(index * 512, index, Fraction(1, 3)) if index == 0 else None
    frame = Frame(3, index, index * 512, time_base, None, index == 0, seek=seek,
                  defects=["frozen"] if index == 2 else None)  # fmt: skip
    seconds = {"preprocess": 0.001 * index} if geometry is not None else {}
    return Prepared(frame, geometry=geometry, seconds=seconds)


def round_trip(frames: list[Prepared]) -> tuple[list[Prepared], Geometry | None]:
    time_base, shared, metas = pack_frames(frames, [None] * len(frames))
    message = pickle.loads(pickle.dumps((time_base, shared, metas)))
    return unpack_frames(3, *message), shared


def same(a: Prepared, b: Prepared) -> bool:
    fa, fb = a.frame, b.frame
    return (
        (fa.stream, fa.index, fa.pts, fa.time_base, fa.keyframe, fa.seek, fa.defects)
        == (fb.stream, fb.index, fb.pts, fb.time_base, fb.keyframe, fb.seek, fb.defects)
        and a.geometry == b.geometry
        and a.seconds == b.seconds
    )


def test_a_group_of_one_geometry_sends_it_once_and_its_frames_come_back() -> None:
    frames = [prepared(k, SQUARE) for k in range(8)]
    back, shared = round_trip(frames)
    assert shared == SQUARE
    assert all(same(a, b) for a, b in zip(back, frames, strict=True))


def test_frames_that_differ_from_the_first_keep_their_own_geometry_and_time_base() -> None:
    """A picture that changed size mid-group, a time base a filter changed, a frame that is not
    a model input: each comes back with its own."""
    frames = [prepared(0, SQUARE), prepared(1, WIDE), prepared(2, SQUARE, Fraction(1, 90000))]
    back, shared = round_trip(frames)
    assert shared is None
    assert all(same(a, b) for a, b in zip(back, frames, strict=True))
    back, shared = round_trip([prepared(4, None)])
    assert shared is None and back[0].geometry is None and back[0].seconds == {}


def test_whole_images_come_out_of_the_slot_as_copies() -> None:
    slot = np.arange(2 * 4 * 6 * 3, dtype=np.uint8)
    frames = [prepared(0, SQUARE), prepared(1, SQUARE)]
    images = [(0, (4, 6, 3)), (72, (4, 6, 3))]
    time_base, shared, metas = pack_frames(frames, images)
    back = unpack_frames(3, time_base, shared, metas, memoryview(slot))
    first, second = back[0].frame.image, back[1].frame.image
    assert first is not None and second is not None
    assert np.array_equal(first.ravel(), slot[:72]) and np.array_equal(second.ravel(), slot[72:])
    slot[:] = 0  # the ring's bytes are reused: the frames keep theirs
    assert first.any() and second.any()
