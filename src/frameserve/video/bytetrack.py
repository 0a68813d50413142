"""ByteTrack for one label of one stream: our own, with the behaviour of Roboflow's ``trackers``.

``video.track.Tracker`` used ``trackers.ByteTrackTracker`` (2.6.1) until importing it (through
``supervision``) became the largest part of a pipeline's start-up, and it pulled the GUI build
of OpenCV into an install. This module reproduces what ``Tracker`` got from it, for the way
``Tracker`` configured it (one score threshold, tracks confirmed at birth); the tests run both on
the same detections and compare ids and Kalman boxes frame by frame.

The algorithm, per frame:

1. every track's Kalman filter predicts its box over the time since the last frame (constant
   velocity per box corner; the process noise grows with the gap);
2. detections scoring at or above ``activation_score`` are matched to all tracks, by the
   assignment of greatest total IoU (the Hungarian algorithm); a pair below ``min_iou`` does
   not match;
3. the other detections (ByteTrack's low-score stage) are matched the same way to the tracks
   step 2 left unmatched, so a partly occluded object keeps its id;
4. an unmatched high-score detection starts a track, with its id at once (the library keeps new
   tracks at -1 for a frame); an unmatched low-score one gets an id of its own that no track
   keeps;
5. a track unmatched for longer than the lost-track budget is forgotten.

Exact to the library in everything that decides ids (the order of tracks, the float32 IoU the
assignment sees, the budgets); the Kalman arithmetic is the same algebra written per coordinate
instead of with 8x8 matrices, so boxes agree to rounding (~1e-12 px), not bit for bit.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from frameserve.errors import InvalidInput
from frameserve.processing.results import pair_iou

# The library counts its lost-track buffer in frames of a 30 fps video, whatever the real rate.
_BUFFER_FPS = 30.0
# Original ByteTrack tuning of the Kalman noise (per box coordinate, for one nominal frame).
_MEASUREMENT_VAR = 0.1
_PROCESS_VAR = 0.01
# A time step within 4 ms of one frame counts as one frame (clock rounding and capture jitter).
_NOMINAL_JITTER_S = 0.004


@dataclass(frozen=True)
class _Step:
    """How far this frame is from the previous one."""

    frames: float
    """Time in frames at ``frame_rate``: how far the Kalman filter predicts (0: not at all)."""
    seconds: float | None
    """Stream time, or ``None`` without timestamps (lost tracks are then aged in frames)."""
    tolerance: float
    """Distance from 1 frame within which the one-frame process noise applies as is."""


class _Tracks:
    """The live tracks as parallel arrays, in birth order (the order breaks assignment ties).

    The filter state of one track is its box ``[x1, y1, x2, y2]`` and the velocity of each
    coordinate. Every coordinate starts with the same covariance and goes through the same
    predict and update steps, so they share one 2x2 covariance ``[[pp, pv], [pv, vv]]``
    (``cov`` columns): no 8x8 matrices, and all tracks are stepped in one numpy operation.
    """

    def __init__(self) -> None:
        self.ids = np.zeros(0, dtype=np.int64)
        self.boxes = np.zeros((0, 4))
        self.velocity = np.zeros((0, 4))
        self.cov = np.zeros((0, 3))
        self.missed_frames = np.zeros(0, dtype=np.int64)
        self.missed_seconds = np.zeros(0)

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, boxes: np.ndarray, ids: np.ndarray) -> None:
        """Start tracks at rest on ``boxes``, with unit covariance (the library's start)."""
        n = len(ids)
        if n == 0:  # most frames: six concatenations of nothing saved
            return
        self.ids = np.concatenate([self.ids, ids])
        self.boxes = np.concatenate([self.boxes, boxes])
        self.velocity = np.concatenate([self.velocity, np.zeros((n, 4))])
        self.cov = np.concatenate([self.cov, np.tile([1.0, 0.0, 1.0], (n, 1))])
        self.missed_frames = np.concatenate([self.missed_frames, np.zeros(n, dtype=np.int64)])
        self.missed_seconds = np.concatenate([self.missed_seconds, np.zeros(n)])

    def keep(self, mask: np.ndarray) -> None:
        """Forget the tracks where ``mask`` is False; the others keep their order."""
        if mask.all():
            return
        for name in ("ids", "boxes", "velocity", "cov", "missed_frames", "missed_seconds"):
            setattr(self, name, getattr(self, name)[mask])

    def predict(self, step: _Step) -> None:
        """Move every box by its velocity over ``step`` and count the step as missed."""
        if step.frames > 0:  # 0 for a repeated timestamp: nothing moves, nothing ages
            dt = step.frames
            q_pp, q_pv, q_vv = _process_noise(dt, step.tolerance)
            pp, pv, vv = self.cov.T
            self.boxes = self.boxes + dt * self.velocity
            self.cov = np.stack(
                [pp + 2 * dt * pv + dt * dt * vv + q_pp, pv + dt * vv + q_pv, vv + q_vv], axis=1
            )
            self.missed_frames = self.missed_frames + 1
        if step.seconds is None:
            self.missed_seconds = np.zeros(len(self))
        else:
            self.missed_seconds = self.missed_seconds + step.seconds

    def correct(self, index: np.ndarray, measured: np.ndarray) -> None:
        """Kalman update of the tracks at ``index`` with their matched boxes."""
        if len(index) == 0:
            return
        pp, pv, vv = self.cov[index].T
        residual = measured - self.boxes[index]
        gain_p = pp / (pp + _MEASUREMENT_VAR)
        gain_v = pv / (pp + _MEASUREMENT_VAR)
        self.boxes[index] += gain_p[:, None] * residual
        self.velocity[index] += gain_v[:, None] * residual
        # Joseph form, as the library: (I - KH) P (I - KH)' + K R K'.
        r, keep = _MEASUREMENT_VAR, 1.0 - gain_p
        self.cov[index] = np.stack(
            [
                keep * keep * pp + r * gain_p * gain_p,
                keep * (pv - gain_v * pp) + r * gain_p * gain_v,
                gain_v * gain_v * pp - 2 * gain_v * pv + vv + r * gain_v * gain_v,
            ],
            axis=1,
        )
        self.missed_frames[index] = 0
        self.missed_seconds[index] = 0.0


def _process_noise(frames: float, tolerance: float) -> tuple[float, float, float]:
    """Process noise (pp, pv, vv) of one coordinate for a predict over ``frames``.

    Near one frame it is the tuned one-frame noise; over another step it is white-noise
    acceleration with the same velocity variance per frame, so a long gap widens the search.
    """
    if abs(frames - 1.0) <= tolerance:
        return _PROCESS_VAR, 0.0, _PROCESS_VAR
    dt2 = frames * frames
    return _PROCESS_VAR * (dt2 * dt2) / 4.0, _PROCESS_VAR * (dt2 * frames) / 2.0, _PROCESS_VAR * dt2


def _corrected(
    box: list[float], vel: list[float], cov: list[float], measured: list[float]
) -> tuple[list[float], list[float], list[float]]:
    """``_Tracks.correct`` of one track in Python floats (the same order of operations)."""
    pp, pv, vv = cov
    gain_p = pp / (pp + _MEASUREMENT_VAR)
    gain_v = pv / (pp + _MEASUREMENT_VAR)
    residual = [m - b for m, b in zip(measured, box, strict=True)]
    box = [b + gain_p * r for b, r in zip(box, residual, strict=True)]
    vel = [v + gain_v * r for v, r in zip(vel, residual, strict=True)]
    r, keep = _MEASUREMENT_VAR, 1.0 - gain_p
    cov = [
        keep * keep * pp + r * gain_p * gain_p,
        keep * (pv - gain_v * pp) + r * gain_p * gain_v,
        gain_v * gain_v * pp - 2 * gain_v * pv + vv + r * gain_v * gain_v,
    ]
    return box, vel, cov


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` with every box of ``b``, as float32.

    float32 because the library (``supervision``) returns that: the assignment and the
    ``min_iou`` test must see the same rounded values to pick the same pairs.
    """
    width = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    height = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(width, 0.0, None) * np.clip(height, 0.0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    out = np.zeros(inter.shape, dtype=np.float32)
    np.divide(inter, union, out=out, where=union > 0)
    return out


def match(iou: np.ndarray, min_iou: float) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the assignment of greatest total ``iou``, pairs below ``min_iou``
    left out (both sorted by row)."""
    if iou.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    overlaps = iou > 0
    if min_iou > 0 and overlaps.sum(axis=0).max() <= 1 and overlaps.sum(axis=1).max() <= 1:
        # No box overlaps two tracks nor a track two boxes (the usual case): every optimal
        # assignment holds all the overlapping pairs, and the rest are 0 < min_iou. The same
        # answer as the Hungarian algorithm, without it.
        rows, cols = np.nonzero(overlaps)
    else:
        rows, cols = _assign(iou, overlaps)
    good = iou[rows, cols] >= min_iou
    return rows[good], cols[good]


ENUMERATED = 720  # assignments tried one by one at most (6 tracks x 6 boxes)


def _assign(iou: np.ndarray, overlaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The overlapping pairs of a maximum-total-``iou`` assignment, sorted by row.

    Pairs that do not overlap add nothing, so each group of tracks and boxes that overlap
    one another (a connected component) is solved alone: small groups (faces that cross)
    by trying every assignment, larger ones by scipy's Hungarian solver. scipy.optimize
    takes ~0.4 s to import, holding the GIL while frames wait: most videos never need it.
    """
    out_rows: list[int] = []
    out_cols: list[int] = []
    for rows, cols in _components(overlaps):
        sub = iou[np.ix_(rows, cols)]
        small = math.perm(max(sub.shape), min(sub.shape)) <= ENUMERATED
        r, c = _enumerate(sub) if small else _hungarian(sub)
        out_rows.extend(rows[r])
        out_cols.extend(cols[c])
    order = np.argsort(out_rows, kind="stable")
    return np.asarray(out_rows, np.int64)[order], np.asarray(out_cols, np.int64)[order]


def _components(overlaps: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """(rows, columns) of each connected group of overlapping pairs, by their first row."""
    n_rows = overlaps.shape[0]
    parent = list(range(n_rows + overlaps.shape[1]))  # rows, then columns

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for r, c in zip(*np.nonzero(overlaps), strict=True):
        parent[root(int(r))] = root(n_rows + int(c))
    groups: dict[int, tuple[list[int], list[int]]] = {}
    for r, c in zip(*np.nonzero(overlaps), strict=True):
        rows, cols = groups.setdefault(root(int(r)), ([], []))
        if int(r) not in rows:
            rows.append(int(r))
        if int(c) not in cols:
            cols.append(int(c))
    return [(np.asarray(sorted(r)), np.asarray(sorted(c))) for r, c in groups.values()]


def _enumerate(iou: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every assignment of the smaller side into the larger one; the first of the best."""
    flip = iou.shape[0] > iou.shape[1]
    m = iou.T if flip else iou
    picks = np.asarray(list(itertools.permutations(range(m.shape[1]), m.shape[0])))
    totals = m.astype(np.float64)[np.arange(m.shape[0]), picks].sum(axis=1)
    best = picks[int(np.argmax(totals))]
    rows, cols = np.arange(m.shape[0]), best
    if flip:
        rows, cols = cols, rows
        order = np.argsort(rows)
        rows, cols = rows[order], cols[order]
    return rows, cols


def _hungarian(iou: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(iou, maximize=True)
    return np.asarray(rows), np.asarray(cols)


class ByteTrack:
    """Track ids for the boxes of one label, one frame after the other.

    ``lost_seconds`` is rounded to 1/30 s (the library's buffer of 30 fps frames). With
    timestamps a track is forgotten once it has been unmatched for more than that stream time;
    without, after ``ceil(lost_seconds * frame_rate)`` unmatched frames (at least one), and it
    may still match on the frame after the last one (as in the library).
    New ids come from ``next_id``, so several trackers may share one sequence.
    Not thread-safe: one owner calls ``update`` in frame order.
    """

    def __init__(
        self,
        next_id: Callable[[], int],
        *,
        lost_seconds: float,
        min_iou: float,
        activation_score: float,
        frame_rate: float,
    ) -> None:
        buffer = round(lost_seconds * _BUFFER_FPS)
        self._lost_seconds = buffer / _BUFFER_FPS
        self._lost_frames = (
            0 if buffer == 0 else max(1, math.ceil(frame_rate / _BUFFER_FPS * buffer))
        )
        self._next_id = next_id
        self._min_iou = min_iou
        self._activation_score = activation_score
        self._frame_rate = frame_rate
        self._tracks = _Tracks()
        self._last_seconds: float | None = None
        self._min_iou32 = float(np.float32(min_iou))  # what numpy compares float32 IoUs with

    @property
    def tracks(self) -> tuple[np.ndarray, np.ndarray]:
        """Ids and Kalman boxes of the live tracks (after the last update), in birth order."""
        return self._tracks.ids.copy(), self._tracks.boxes.copy()

    def update(self, boxes: np.ndarray, scores: np.ndarray, seconds: float | None) -> np.ndarray:
        """One id >= 1 per row of ``boxes`` ([N, 4] x1, y1, x2, y2), in row order.

        ``seconds`` (the frame's time) must not decrease; ``None`` counts the call as one frame
        at ``frame_rate``. A track keeps its id on every frame it matches.
        """
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(scores)
        if not np.isfinite(boxes).all():
            bad = boxes[~np.isfinite(boxes).all(axis=1)][0]
            raise InvalidInput(f"ByteTrack.update: boxes must be finite, got {bad.tolist()}")
        step = self._step(seconds)
        if len(self._tracks) <= 1 and len(scores) <= 1:
            return self._update_one(boxes, scores, step)
        return self._update_arrays(boxes, scores, step)

    def _update_arrays(self, boxes: np.ndarray, scores: np.ndarray, step: _Step) -> np.ndarray:
        """``update`` on every track and box at once."""
        tracks = self._tracks
        tracks.predict(step)
        if step.seconds is not None:  # expired in stream time: not even matched any more
            tracks.keep(tracks.missed_seconds <= self._lost_seconds)
        high = scores >= self._activation_score
        high_rows, low_rows = np.flatnonzero(high), np.flatnonzero(~high)
        matched, rows = self._associate(boxes, high_rows, low_rows)
        ids = np.zeros(len(scores), dtype=np.int64)
        ids[rows] = tracks.ids[matched]
        tracks.correct(matched, boxes[rows])
        if step.seconds is None:  # counted in frames: a track gets one more chance to match
            tracks.keep(tracks.missed_frames <= self._lost_frames)
        unmatched = np.ones(len(scores), dtype=bool)
        unmatched[rows] = False
        new_rows = high_rows[unmatched[high_rows]]
        ids[new_rows] = [self._next_id() for _ in new_rows]
        tracks.add(boxes[new_rows], ids[new_rows])
        lone_rows = low_rows[unmatched[low_rows]]  # low score and no track: an id for one frame
        ids[lone_rows] = [self._next_id() for _ in lone_rows]
        return ids

    def _update_one(self, boxes: np.ndarray, scores: np.ndarray, step: _Step) -> np.ndarray:
        """``update`` for at most one track and one box (one face in view: most frames of most
        videos), in Python floats: the same steps and the same IEEE arithmetic in the same
        order as the array path, so the same ids and bit-identical Kalman state, without
        its ~80 numpy calls on arrays of one row."""
        t = self._tracks
        alive = len(t) == 1
        box: list[float] = []
        vel: list[float] = []
        cov: list[float] = []
        missed_frames, missed_seconds = 0, 0.0
        if alive:
            (box,), (vel,), (cov,) = t.boxes.tolist(), t.velocity.tolist(), t.cov.tolist()
            missed_frames, missed_seconds = int(t.missed_frames[0]), float(t.missed_seconds[0])
            if step.frames > 0:
                dt = step.frames
                q_pp, q_pv, q_vv = _process_noise(dt, step.tolerance)
                pp, pv, vv = cov
                box = [b + dt * v for b, v in zip(box, vel, strict=True)]
                cov = [pp + 2 * dt * pv + dt * dt * vv + q_pp, pv + dt * vv + q_pv, vv + q_vv]
                missed_frames += 1
            missed_seconds = 0.0 if step.seconds is None else missed_seconds + step.seconds
            alive = step.seconds is None or missed_seconds <= self._lost_seconds
        ids = np.zeros(len(scores), dtype=np.int64)
        matched = False
        if alive and len(scores):
            measured = boxes[0].tolist()
            iou = float(np.float32(pair_iou(box, measured)))  # as ``box_iou`` rounds it
            if iou > 0 and iou >= self._min_iou32:
                matched = True
                ids[0] = t.ids[0]
                box, vel, cov = _corrected(box, vel, cov, measured)
                missed_frames, missed_seconds = 0, 0.0
        if alive and step.seconds is None:
            alive = missed_frames <= self._lost_frames
        if alive:
            t.boxes, t.velocity, t.cov = np.array([box]), np.array([vel]), np.array([cov])
            t.missed_frames = np.array([missed_frames], dtype=np.int64)
            t.missed_seconds = np.array([missed_seconds], dtype=np.float64)
        else:
            t.keep(np.zeros(len(t), dtype=bool))
        if len(scores) and not matched:
            ids[0] = self._next_id()
            if scores[0] >= self._activation_score:  # a new track; a low one keeps no track
                t.add(boxes, ids)
        return ids

    def _step(self, seconds: float | None) -> _Step:
        if seconds is None:
            self._last_seconds = None  # a later timestamp starts over, as the first one
            return _Step(frames=1.0, seconds=None, tolerance=0.0)
        last = self._last_seconds
        if not math.isfinite(seconds) or (last is not None and seconds < last):
            raise InvalidInput(
                f"ByteTrack.update: seconds must be finite and >= the previous {last!r}, "
                f"got {seconds!r}"
            )
        # The first timestamp has no previous one: it counts as one frame (the library's).
        elapsed = 1.0 / self._frame_rate if last is None else seconds - last
        self._last_seconds = seconds
        tolerance = _NOMINAL_JITTER_S * self._frame_rate
        return _Step(frames=elapsed * self._frame_rate, seconds=elapsed, tolerance=tolerance)

    def _associate(
        self, boxes: np.ndarray, high_rows: np.ndarray, low_rows: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Matched tracks and rows: high-score rows to every track, then low-score rows to
        the tracks still unmatched (both against the predicted boxes)."""
        predicted = self._tracks.boxes
        first_tracks, first = match(box_iou(predicted, boxes[high_rows]), self._min_iou)
        free = np.ones(len(predicted), dtype=bool)
        free[first_tracks] = False
        left = np.flatnonzero(free)
        if len(left) == 0 or len(low_rows) == 0:  # nothing to match in the low-score stage
            return first_tracks, high_rows[first]
        second_tracks, second = match(box_iou(predicted[left], boxes[low_rows]), self._min_iou)
        return (
            np.concatenate([first_tracks, left[second_tracks]]),
            np.concatenate([high_rows[first], low_rows[second]]),
        )
