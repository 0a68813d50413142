"""``FrameSelector.keep``: which decoded frames a sampling keeps."""

from __future__ import annotations

from fractions import Fraction

from frameserve.video.frames import FrameSelector, Sampling


def test_only_fps_sampling_reads_a_frames_time() -> None:
    """The modes that decide from the index or the keyframe flag alone never read the time
    (a decoder calls ``keep`` for every frame: no ``Fraction`` product there)."""
    untimed = FrameSelector(Sampling.parse("every:3"))
    no_time = Fraction(0)  # a time base that would make every frame's time 0
    assert [untimed.keep(i, 10**9 + i, no_time, False) for i in range(7)] == [
        True, False, False, True, False, False, True,
    ]  # fmt: skip
    fps = FrameSelector(Sampling.parse("fps:5"))
    kept = [fps.keep(i, i, Fraction(1, 30), False) for i in range(13)]
    assert [i for i, k in enumerate(kept) if k] == [0, 6, 12]  # 30 fps to 5: every 6th
