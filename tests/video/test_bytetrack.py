"""Our ByteTrack against the one it replaced: Roboflow's ``trackers`` 2.6.1, run side by side.

``LibraryTracker`` is ``Tracker`` as it was: the same pts handling and per-label split, each
label's ids from ``trackers.ByteTrackTracker`` configured as ``track.py`` configured it, with new
tracks confirmed at birth. Both run on the same synthetic detection sequences (objects moving at
constant and varying speeds, crossing, missed for short and long gaps, appearing, low scores,
clutter, several labels, irregular and repeated timestamps); ids must be equal frame by frame and
the Kalman boxes of the live tracks equal to rounding. No real detector output is stored here,
so the sequences are synthetic; ``trackers`` is a test dependency only, imported in the tests.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pytest

from frameserve.processing.results import Detections
from frameserve.video.bytetrack import ByteTrack, box_iou
from frameserve.video.track import Tracker, TrackerSettings


class LibraryByteTrack:
    """``trackers.ByteTrackTracker`` for one label, ids confirmed at birth (the old track.py)."""

    def __init__(
        self,
        next_id: Callable[[], int],
        *,
        lost_seconds: float,
        min_iou: float,
        activation_score: float,
        frame_rate: float,
    ) -> None:
        from trackers import ByteTrackTracker

        self.library = ByteTrackTracker(
            lost_track_buffer=round(lost_seconds * 30.0),
            frame_rate=frame_rate,
            track_activation_threshold=activation_score,
            high_conf_det_threshold=activation_score,
            minimum_consecutive_frames=1,
            minimum_iou_threshold=min_iou,
        )
        self.next_id = next_id
        self.activation_score = activation_score

    @property
    def tracks(self) -> tuple[np.ndarray, np.ndarray]:
        tracks = self.library.tracks
        boxes = np.array([t.get_state_bbox() for t in tracks]).reshape(-1, 4)
        return np.array([t.tracker_id for t in tracks], dtype=np.int64), boxes

    def update(self, boxes: np.ndarray, scores: np.ndarray, seconds: float | None) -> np.ndarray:
        import supervision as sv

        rows = np.arange(len(scores))
        tracked = self.library.update(
            sv.Detections(xyxy=boxes, confidence=scores, data={"row": rows}), timestamp=seconds
        )
        ids = np.full(len(rows), -1, dtype=np.int64)
        out_rows = np.zeros(0, dtype=np.int64)
        if len(tracked) and tracked.tracker_id is not None:
            out_rows = np.asarray(tracked.data["row"], dtype=np.int64)
            ids[out_rows] = tracked.tracker_id
        unconfirmed = [t for t in self.library.tracks if t.tracker_id == -1]
        started = [r for r in out_rows if ids[r] == -1 and scores[r] >= self.activation_score]
        assert len(started) == len(unconfirmed)
        for row, track in zip(started, unconfirmed, strict=True):
            track.tracker_id = ids[row] = self.next_id()
        for row in np.flatnonzero(ids == -1):
            ids[row] = self.next_id()
        return ids


class LibraryTracker(Tracker):
    """``Tracker`` with each label's ids from the library: what ``Tracker`` returned before."""

    def _update_label(
        self, label: str, boxes: np.ndarray, scores: np.ndarray, timestamp: float | None
    ) -> np.ndarray:
        tracker = self._by_label.get(label)
        if tracker is None:
            s = self.settings
            tracker = self._by_label[label] = LibraryByteTrack(  # type: ignore[assignment]
                self._next_id.__next__,
                lost_seconds=s.lost_seconds,
                min_iou=s.min_iou,
                activation_score=s.activation_score,
                frame_rate=self.frame_rate,
            )
        return tracker.update(boxes, scores, timestamp)


@dataclass
class Scene:
    """Objects moving over a frame sequence; ``make`` turns them into detections."""

    frames: int = 60
    objects: int = 8
    size: tuple[float, float] = (40.0, 120.0)
    speed: float = 600.0  # px/s, at most, per axis
    accel: float = 0.0  # px/s^2, at most
    wobble: float = 0.0  # px, sinusoidal sideways motion
    jitter: float = 1.0  # px of detector noise
    gaps: tuple[int, ...] = ()  # lengths (frames) of missed runs to scatter
    dropout: float = 0.02  # chance a detection is missed on its own
    late_births: bool = True  # some objects appear part way through
    low: float = 0.0  # chance a detection scores 0.21-0.44 instead of 0.76-0.99
    clutter: float = 0.0  # expected one-frame boxes per frame (score 0.3 or 0.8)
    labels: tuple[str, ...] = ("face",)
    times: str = "regular"  # regular | variable | none
    fps: float = 30.0
    settings: TrackerSettings = field(default_factory=TrackerSettings)

    def make(self, seed: int) -> Iterator[tuple[Detections, float | None]]:
        rng = np.random.default_rng(seed)
        n, times = self.objects, self._times(rng)
        size = rng.uniform(*self.size, (n, 1)) * np.column_stack(
            [np.ones(n), rng.uniform(0.8, 1.3, n)]
        )
        start = rng.uniform(0, 1000, (n, 2))
        velocity = rng.uniform(-self.speed, self.speed, (n, 2))
        accel = rng.uniform(-self.accel, self.accel, (n, 2))
        phase = rng.uniform(0, 2 * np.pi, n)
        seen = self._visibility(rng)
        labels = [self.labels[i % len(self.labels)] for i in range(n)]
        for i, t in enumerate(times):
            clock = i / self.fps if t is None else t - 5.0
            wobble = self.wobble * np.sin(4.0 * clock + phase)[:, None] * [1.0, -1.0]
            corner = start + velocity * clock + 0.5 * accel * clock**2 + wobble
            boxes = np.hstack([corner, corner + size]) + rng.normal(0, self.jitter, (n, 4))
            rows = [k for k in range(n) if seen[i, k]]
            scores = np.where(rng.random(len(rows)) < self.low, 0.35, 0.9)
            scores += rng.uniform(-0.14, 0.09, len(rows))
            out_boxes, out_labels = list(boxes[rows]), [labels[k] for k in rows]
            for _ in range(rng.poisson(self.clutter)):
                corner = rng.uniform(0, 1000, 2)
                out_boxes.append(np.hstack([corner, corner + rng.uniform(20, 80, 2)]))
                out_labels.append(self.labels[int(rng.integers(len(self.labels)))])
                scores = np.append(scores, rng.choice([0.3, 0.8]))
            order = rng.permutation(len(out_boxes))  # row order must not matter
            detections = Detections(
                np.array(out_boxes).reshape(-1, 4)[order],
                scores[order],
                [out_labels[j] for j in order],
            )
            yield detections, t

    def _times(self, rng: np.random.Generator) -> list[float | None]:
        if self.times == "none":
            return [None] * self.frames
        if self.times == "regular":
            return [5.0 + i / self.fps for i in range(self.frames)]
        # From 1/60 s to 0.4 s, a repeated pts now and then, and a jump back (the stream looped).
        gaps = rng.choice([1 / 60, 1 / 30, 1 / 30, 0.05, 0.1, 0.2, 0.4, 0.0], self.frames)
        times = list(np.round(5.0 + np.cumsum(gaps), 6))
        loop = self.frames * 3 // 4
        return times[:loop] + [t - times[loop] + 0.5 for t in times[loop:]]

    def _visibility(self, rng: np.random.Generator) -> np.ndarray:
        seen = rng.random((self.frames, self.objects)) >= self.dropout
        if self.late_births:
            for k in rng.choice(self.objects, self.objects // 3, replace=False):
                seen[: rng.integers(1, self.frames // 2), k] = False
        for length in self.gaps:
            k, at = rng.integers(self.objects), rng.integers(1, max(2, self.frames - length))
            seen[at : at + length, k] = False
        return seen


@dataclass
class Comparison:
    """What a scene made the trackers do, to check that it made them decide something."""

    frames: int = 0
    rows: int = 0
    low_rows_continuing: int = 0  # low-score rows that kept a track's id (the second stage)
    ids: set[int] = field(default_factory=set)


def compare(scene: Scene, seed: int) -> Comparison:
    """Run both trackers over the scene; fail on the first frame where they differ."""
    ours = Tracker(scene.settings, frame_rate=scene.fps)
    theirs = LibraryTracker(scene.settings, frame_rate=scene.fps)
    seen = Comparison()
    for i, (detections, seconds) in enumerate(scene.make(seed)):
        got, want = ours.update(detections, seconds), theirs.update(detections, seconds)
        assert got.track_ids is not None and want.track_ids is not None
        np.testing.assert_array_equal(got.track_ids, want.track_ids, err_msg=f"frame {i}")
        np.testing.assert_array_equal(got.boxes, detections.boxes)
        assert got.labels == detections.labels
        assert list(ours._by_label) == list(theirs._by_label)
        for label, tracker in ours._by_label.items():
            ids, boxes = tracker.tracks
            want_ids, want_boxes = theirs._by_label[label].tracks
            np.testing.assert_array_equal(ids, want_ids, err_msg=f"frame {i} {label}")
            np.testing.assert_allclose(boxes, want_boxes, rtol=1e-9, atol=1e-6)
        low = detections.scores < scene.settings.activation_score
        seen.low_rows_continuing += int(np.isin(got.track_ids[low], list(seen.ids)).sum())
        seen.ids.update(int(k) for k in got.track_ids)
        seen.frames, seen.rows = seen.frames + 1, seen.rows + len(detections)
    return seen


SCENES = {
    # Up to 900 px/s of 60-120 px boxes at 30 fps: the fastest only match by predicted motion.
    "constant_speed": Scene(speed=900.0, size=(60.0, 120.0), dropout=0.0),
    "varying_speed": Scene(speed=500.0, accel=1500.0, wobble=60.0),
    # 14 objects on 1000 px: paths cross and boxes compete for tracks.
    "crossing": Scene(objects=14, speed=400.0, size=(60.0, 160.0), wobble=30.0),
    "gaps_short_and_long": Scene(
        frames=90, gaps=(2, 5, 10, 14, 16, 30, 45), settings=TrackerSettings(lost_seconds=0.5)
    ),
    "low_scores_and_clutter": Scene(
        low=0.35, clutter=1.5, speed=300.0, settings=TrackerSettings(activation_score=0.5)
    ),
    "labels": Scene(objects=9, labels=("face", "person", "car"), clutter=0.5),
    "variable_times": Scene(frames=80, times="variable", speed=150.0, accel=200.0, gaps=(3, 8, 20)),
    "no_timestamps_12fps": Scene(times="none", fps=12.0, gaps=(3, 6, 9, 14)),
    "crowd_of_20": Scene(objects=20, size=(50.0, 90.0), speed=150.0, wobble=20.0),
    # Without timestamps a zero buffer still matches on the next frame; with timestamps it
    # matches nothing (a track has aged by one frame when it is matched), in both trackers.
    "no_lost_buffer": Scene(
        times="none", fps=25.0, gaps=(1, 3), settings=TrackerSettings(lost_seconds=0.0)
    ),
    "strict_iou": Scene(speed=300.0, settings=TrackerSettings(min_iou=0.6, lost_seconds=0.3)),
}


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("name", list(SCENES))
def test_same_ids_and_kalman_boxes_as_the_library(name: str, seed: int) -> None:
    scene = SCENES[name]
    seen = compare(scene, seed)
    assert seen.frames == scene.frames and seen.rows > 3 * scene.frames
    # Neither one id per row nor one id for everything: the scenes make tracking decisions.
    assert scene.objects <= len(seen.ids) < seen.rows // 2
    if scene.low:
        assert seen.low_rows_continuing > 10


def test_a_zero_buffer_with_timestamps_continues_no_track_in_either() -> None:
    """The library ages a track by the frame's gap before matching it, so with timestamps a
    buffer under one frame interval forgets every track first: each row gets a new id."""
    scene = Scene(frames=20, settings=TrackerSettings(lost_seconds=0.0))
    seen = compare(scene, seed=0)
    assert len(seen.ids) == seen.rows


def test_the_second_stage_keeps_a_low_score_box_on_its_track() -> None:
    """A box that drops below the activation score keeps its track only through the second
    (low-score) stage; a box scoring exactly the activation score starts a track."""
    settings = TrackerSettings(activation_score=0.5)

    def face(*boxes: tuple[float, float]) -> Detections:
        xs = np.array([[x, 0.0, x + 100, 100] for x, _ in boxes])
        return Detections(xs, np.array([score for _, score in boxes]), ["face"] * len(boxes))

    frames = [face((0, 0.9)), face((8, 0.9)), face((16, 0.3), (400, 0.5))]
    frames.append(face((24, 0.3), (400, 0.9)))
    ours, theirs = Tracker(settings), LibraryTracker(settings)
    seen = []
    for i, detections in enumerate(frames):
        got, want = ours.update(detections, i / 30), theirs.update(detections, i / 30)
        np.testing.assert_array_equal(got.track_ids, want.track_ids)
        seen.append(got.track_ids.tolist() if got.track_ids is not None else None)
    assert seen == [[1], [1], [1, 2], [1, 2]]


def test_the_assignment_maximises_the_total_overlap() -> None:
    """X overlaps track A best (0.6), but giving X to B (0.48) and Y to A (0.54) overlaps more
    in total than A-X with Y left to B (0.05): a greedy match would differ."""

    def boxes(*xs: float) -> Detections:
        rows = np.array([[x, 0.0, x + 100, 100] for x in xs])
        return Detections(rows, np.full(len(xs), 0.9), ["face"] * len(xs))

    ours, theirs = Tracker(), LibraryTracker()
    seen = []
    for i, detections in enumerate([boxes(0, 60), boxes(25, -30)]):
        got, want = ours.update(detections, i / 30), theirs.update(detections, i / 30)
        np.testing.assert_array_equal(got.track_ids, want.track_ids)
        seen.append(got.track_ids.tolist() if got.track_ids is not None else None)
    assert seen == [[1, 2], [2, 1]]


def run_bytetracks(frames: Iterator[tuple[Detections, float | None]]) -> list[list[int]]:
    """``ByteTrack`` and the library's on the same frames, with timestamps passed as given."""
    settings = {"lost_seconds": 0.4, "min_iou": 0.1, "activation_score": 0.0, "frame_rate": 30.0}
    ours = ByteTrack(itertools.count(1).__next__, **settings)
    theirs = LibraryByteTrack(itertools.count(1).__next__, **settings)
    seen = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the library warns on each repeated timestamp
        for i, (detections, t) in enumerate(frames):
            want = theirs.update(detections.boxes, detections.scores, t)
            got = ours.update(detections.boxes, detections.scores, t)
            np.testing.assert_array_equal(got, want, err_msg=f"frame {i}")
            np.testing.assert_allclose(ours.tracks[1], theirs.tracks[1], rtol=1e-9, atol=1e-6)
            seen.append(got.tolist())
    return seen


def test_repeated_and_missing_timestamps_inside_bytetrack() -> None:
    """``Tracker`` never repeats a timestamp to ByteTrack, but ByteTrack follows the library
    there too (no motion, no ageing), and after ``None`` restarts its clock like it."""
    times = [0.0, 0.033, 0.033, 0.1, None, None, 0.3, 0.3, 0.3, 0.35, 0.5, 0.9, 0.9, 1.0]
    times += [1.0 + k / 30 for k in range(1, 47)]
    scene = Scene(objects=6, speed=400.0, gaps=(4, 12))
    run_bytetracks((d, t) for (d, _), t in zip(scene.make(3), times, strict=True))
    # Frames without timestamps zero the stream time a lost track has been missing.
    one = Detections(np.array([[10.0, 10, 60, 60]]), np.array([0.9]), ["face"])
    none = Detections.empty()
    ids = run_bytetracks(iter([(one, 0.0), (none, 0.38), (none, None), (one, 1.0)]))
    assert ids[0] == ids[-1]
    # Nor does a repeated timestamp age it (which shows once frames are counted).
    ids = run_bytetracks(iter([(one, 0.0)] + [(none, 0.0)] * 15 + [(none, None), (one, None)]))
    assert ids[0] == ids[-1]


def test_iou_is_the_library_s_to_the_bit() -> None:
    import supervision as sv

    rng = np.random.default_rng(7)
    corner = rng.uniform(0, 300, (30, 2))
    a = np.hstack([corner, corner + rng.uniform(1, 100, (30, 2))])
    b = np.vstack([a[:10] + rng.normal(0, 5, (10, 4)), [[5, 5, 5, 9]], [[1, 1, 2, 2]]])
    np.testing.assert_array_equal(box_iou(a, b), sv.box_iou_batch(a, b))
    assert box_iou(a, b).dtype == np.float32


def test_match_finds_the_hungarian_total_without_scipy_for_small_groups() -> None:
    """Crossing faces are solved by enumeration (no 0.4 s scipy import on a frame); the
    total IoU kept equals scipy's optimum on random overlaps, crowds included."""
    from scipy.optimize import linear_sum_assignment

    from frameserve.video.bytetrack import match

    rng = np.random.default_rng(7)
    for _ in range(3000):
        n, m = (int(v) for v in rng.integers(1, 12, 2))
        iou = (rng.random((n, m)) * (rng.random((n, m)) < 0.35)).astype(np.float32)
        rows, cols = match(iou, 0.1)
        assert list(rows) == sorted(rows) and len(set(cols)) == len(cols)
        ref_r, ref_c = linear_sum_assignment(iou, maximize=True)
        keep = iou[ref_r, ref_c] >= 0.1
        assert iou[rows, cols].sum() == pytest.approx(iou[ref_r[keep], ref_c[keep]].sum())


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("timestamps", ["regular", "irregular", "none"])
def test_one_track_in_python_floats_is_the_array_path_to_the_bit(
    seed: int, timestamps: str
) -> None:
    """At most one track and one box, ``update`` runs in Python floats (``_update_one``). On
    one object that moves, drops out for short and long gaps, scores low or at the activation
    score, jumps away and comes back, with min_iou values numpy rounds up and down in float32,
    both paths give the same ids and bit-identical Kalman state on every frame."""
    rng = np.random.default_rng(seed)
    min_iou = [0.1, 0.7, 0.0, 0.3][seed % 4]  # float32(0.7) < 0.7 <= float32(0.1) ...
    trackers = []
    for _ in range(2):
        counter = itertools.count(1)
        tracker = ByteTrack(counter.__next__, lost_seconds=0.3, min_iou=min_iou,
                            activation_score=0.5, frame_rate=25.0)  # fmt: skip
        trackers.append(tracker)
    trackers[1]._update_one = trackers[1]._update_arrays  # type: ignore[method-assign]
    fast_path, used = trackers[0]._update_one, [0]

    def counted(*args: object) -> np.ndarray:
        used[0] += 1
        return fast_path(*args)  # type: ignore[arg-type]

    trackers[0]._update_one = counted  # type: ignore[method-assign]
    box, velocity, t = np.array([100.0, 80.0, 160.0, 150.0]), rng.normal(0, 1, 4), 0.0
    for _ in range(400):
        t += {"regular": 0.04, "irregular": float(rng.choice([0.0, 0.02, 0.04, 0.2, 0.5]))}.get(
            timestamps, 0.04)  # fmt: skip
        box = box + velocity + rng.normal(0, 0.5, 4)
        if rng.random() < 0.03:  # a jump: a box the track does not overlap
            box = box + 400.0
        present = rng.random() > 0.25
        rows = box[None] if present else np.zeros((0, 4))
        scores = np.array([rng.choice([0.9, 0.3, 0.5])] if present else [], dtype=np.float32)
        seconds = None if timestamps == "none" else t
        fast, full = (tr.update(rows, scores, seconds) for tr in trackers)
        np.testing.assert_array_equal(fast, full)
        for got, want in zip(trackers[0].tracks, trackers[1].tracks, strict=True):
            np.testing.assert_array_equal(got, want)
        state = [trackers[i]._tracks for i in (0, 1)]
        for name in ("velocity", "cov", "missed_frames", "missed_seconds"):
            np.testing.assert_array_equal(getattr(state[0], name), getattr(state[1], name))
    assert used[0] > 30  # both paths ran, one after the other, on one tracker's state
