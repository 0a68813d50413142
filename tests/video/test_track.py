"""Track ids across frames: the real ``trackers`` ByteTrack on synthetic boxes.

Boxes are 100 px squares moving at known speeds, so each test knows which object every row is;
the end-to-end run on a real video with the face model lives with the pipeline tests.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from frameserve.errors import ConfigError, InvalidInput
from frameserve.processing.results import Detections
from frameserve.video.track import Tracker, TrackerSettings

FPS = 30.0


def box(x: float, y: float = 0.0, size: float = 100.0) -> list[float]:
    return [x, y, x + size, y + size]


def frame(
    boxes: list[list[float]], labels: list[str] | None = None, scores: list[float] | None = None
) -> Detections:
    n = len(boxes)
    return Detections(
        np.array(boxes, dtype=np.float64).reshape(-1, 4),
        np.array(scores if scores is not None else [0.9] * n),
        labels if labels is not None else ["face"] * n,
    )


def ids(tracker: Tracker, detections: Detections, seconds: float | None) -> list[int]:
    out = tracker.update(detections, seconds)
    assert out.track_ids is not None
    assert out.track_ids.shape == (len(detections),)
    assert (out.track_ids >= 1).all()
    return [int(i) for i in out.track_ids]


def test_first_frame_has_distinct_ids() -> None:
    tracker = Tracker()
    first = ids(tracker, frame([box(0), box(300), box(600)]), 0.0)
    assert len(set(first)) == 3


def test_steady_box_keeps_one_id_over_30_frames() -> None:
    tracker = Tracker()
    seen = [ids(tracker, frame([box(10 + 6 * i, 2 * i)]), i / FPS)[0] for i in range(30)]
    assert set(seen) == {seen[0]}


def test_parallel_boxes_keep_distinct_stable_ids() -> None:
    tracker = Tracker()
    seen = [ids(tracker, frame([box(5 * i, 0), box(5 * i, 150)]), i / FPS) for i in range(30)]
    assert all(row == seen[0] for row in seen)
    assert seen[0][0] != seen[0][1]


def test_gap_within_lost_seconds_keeps_the_id_and_longer_gap_gets_a_new_one() -> None:
    def run(missing_frames: int) -> set[int]:
        tracker = Tracker(TrackerSettings(lost_seconds=1.0))
        seen = set()
        for i in range(70):
            absent = 10 <= i < 10 + missing_frames
            detections = frame([]) if absent else frame([box(3 * i)])
            seen.update(ids(tracker, detections, i / FPS))
        return seen

    assert len(run(missing_frames=8)) == 1  # 0.27 s: the Kalman filter carries it through
    assert len(run(missing_frames=40)) == 2  # 1.33 s > lost_seconds


def test_new_object_gets_a_new_id_and_ids_are_never_reused() -> None:
    tracker = Tracker(TrackerSettings(lost_seconds=0.2))
    first = ids(tracker, frame([box(0)]), 0.0)[0]
    second = ids(tracker, frame([box(0), box(500)]), 0.1)
    assert second[0] == first and second[1] != first
    later = ids(tracker, frame([box(0)]), 5.0)[0]  # both tracks expired meanwhile
    assert later not in (first, second[1])


def test_empty_frames() -> None:
    tracker = Tracker()
    empty = tracker.update(Detections.empty(), 0.0)
    assert len(empty) == 0 and empty.track_ids is not None and empty.track_ids.shape == (0,)
    first = ids(tracker, frame([box(0)]), 1 / FPS)[0]
    assert ids(tracker, frame([]), 2 / FPS) == []
    assert ids(tracker, frame([box(2)]), 3 / FPS) == [first]


def test_input_order_is_kept_and_ids_follow_their_boxes() -> None:
    tracker = Tracker()
    rng = np.random.default_rng(0)
    starts = [0.0, 200.0, 400.0, 600.0]
    id_of: dict[int, int] = {}  # object -> its track id
    for i in range(20):
        order = rng.permutation(len(starts))
        detections = frame([box(starts[k] + 4 * i, 50.0 * k) for k in order])
        out = tracker.update(detections, i / FPS)
        np.testing.assert_array_equal(out.boxes, detections.boxes)
        assert out.track_ids is not None
        for row, k in enumerate(order):
            assert id_of.setdefault(int(k), int(out.track_ids[row])) == out.track_ids[row]
    assert len(set(id_of.values())) == len(starts)


def test_keypoints_and_labels_stay_with_their_rows() -> None:
    tracker = Tracker()
    for i in range(5):
        boxes = [box(4 * i), box(4 * i + 300)]
        labels = ["person", "face"] if i % 2 else ["face", "person"]
        if i % 2:
            boxes.reverse()
        keypoints = np.array([[[b[0], b[1]], [b[2], b[3]]] for b in boxes])
        detections = Detections(np.array(boxes), np.array([0.8, 0.7]), labels, keypoints)
        out = tracker.update(detections, i / FPS)
        assert out.labels == labels
        assert out.keypoints is not None
        np.testing.assert_array_equal(out.keypoints, keypoints)
        np.testing.assert_array_equal(out.scores, [0.8, 0.7])
        assert out.to_json()["detections"][0]["track_id"] >= 1


def test_labels_are_tracked_apart_with_ids_unique_across_labels() -> None:
    tracker = Tracker()
    both = ids(tracker, frame([box(0), box(0)], ["face", "person"]), 0.0)
    assert both[0] != both[1]  # same box, two labels: two tracks
    # The face is gone and a person box sits where it was: the face track must not take it.
    person_only = ids(tracker, frame([box(0), box(2)], ["person", "person"]), 1 / FPS)
    assert both[1] in person_only
    assert both[0] not in person_only
    assert ids(tracker, frame([box(4)], ["face"]), 2 / FPS) == [both[0]]


def test_irregular_timestamps_still_associate() -> None:
    tracker = Tracker()
    speed = 60.0  # px per second
    times = np.cumsum([0.0, 0.033, 0.2, 0.017, 0.5, 0.04, 0.3, 0.033, 0.7, 0.1, 0.05, 0.4])
    seen = [ids(tracker, frame([box(speed * t)]), float(t))[0] for t in times]
    assert set(seen) == {seen[0]}


def test_sparse_sampling_at_2_fps() -> None:
    """A face moving 150 px/s moves 75 % of its width between frames sampled at 2 fps."""
    tracker = Tracker()
    seen = [ids(tracker, frame([box(75.0 * i), box(75.0 * i, 400)]), i * 0.5) for i in range(12)]
    assert all(row == seen[0] for row in seen)
    # Twice the width in half a second does not overlap at all: a new id each time.
    tracker = Tracker()
    jumps = [ids(tracker, frame([box(200.0 * i)]), i * 0.5)[0] for i in range(4)]
    assert len(set(jumps)) == 4


def test_frames_without_timestamps_count_at_frame_rate() -> None:
    tracker = Tracker(TrackerSettings(lost_seconds=0.5), frame_rate=10.0)
    first = ids(tracker, frame([box(0)]), None)[0]
    for _ in range(4):  # 0.4 s at 10 fps: within lost_seconds
        ids(tracker, frame([]), None)
    assert ids(tracker, frame([box(0)]), None) == [first]
    for _ in range(7):
        ids(tracker, frame([]), None)
    assert ids(tracker, frame([box(0)]), None) != [first]


def test_repeated_pts_associates_without_warnings() -> None:
    tracker = Tracker()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        seen = [ids(tracker, frame([box(i)]), t)[0] for i, t in enumerate([0.0, 0.1, 0.1, 0.1])]
    assert set(seen) == {seen[0]}


def test_pts_going_back_restarts_tracks_with_new_ids() -> None:
    tracker = Tracker()
    before = {ids(tracker, frame([box(0)]), t)[0] for t in (10.0, 10.1, 10.2)}
    after = ids(tracker, frame([box(0)]), 0.0)[0]
    assert len(before) == 1 and after not in before
    assert ids(tracker, frame([box(1)]), 0.1) == [after]


def test_scores_below_activation_only_continue_tracks() -> None:
    tracker = Tracker(TrackerSettings(activation_score=0.5))
    first = ids(tracker, frame([box(0)], scores=[0.9]), 0.0)[0]
    # Low score continues the track; a lone low-score box starts none and gets a one-frame id.
    low = ids(tracker, frame([box(2), box(600)], scores=[0.3, 0.3]), 0.1)
    assert low[0] == first
    again = ids(tracker, frame([box(4), box(600)], scores=[0.3, 0.3]), 0.2)
    assert again[0] == first and again[1] not in (first, low[1])


@pytest.mark.parametrize(
    ("field", "value"),
    [("lost_seconds", -1.0), ("lost_seconds", float("nan")), ("min_iou", 1.5)],
)
def test_settings_are_validated(field: str, value: float) -> None:
    with pytest.raises(ConfigError, match=field):
        TrackerSettings(**{field: value})


def test_non_finite_pts_is_rejected() -> None:
    with pytest.raises(InvalidInput, match="seconds"):
        Tracker().update(frame([box(0)]), float("inf"))
