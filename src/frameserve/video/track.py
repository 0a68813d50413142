"""Track ids that follow each detected object from frame to frame of one video stream.

A detector sees every frame on its own; a pipeline that blurs a face through a clip, counts
people or follows an object needs to know that box 3 of frame 120 is the face that was box 1 of
frame 119. ``Tracker`` puts ByteTrack (a Kalman filter per track, IoU matching with the
Hungarian algorithm; our own in ``video.bytetrack``, with the behaviour of Roboflow's
``trackers`` 2.6.1 that it replaced) behind our ``Detections``:

- every detection gets an id >= 1 on the frame it first appears, rows stay in input order and
  keypoints and labels are untouched. A new track is confirmed at birth (the library waited
  for its second frame), so no row is ever left without an id;
- each label is tracked on its own, so a face track never continues on a person box; ids are
  unique across labels;
- time is the frame's pts in seconds: the Kalman filter predicts motion over the real gap, and a
  lost track is forgotten after ``lost_seconds`` of stream time, not after a number of processed
  frames, so variable frame rates and sampled frames (``every:N``, ``fps:F``) work unchanged.

Sparse sampling (e.g. 2 fps): a match needs IoU >= ``min_iou`` between the track's predicted box
and the new box. A track seen once has no velocity yet, so on its second processed frame the raw
boxes must overlap: at the default 0.1 an object may move up to ~80% of its width between
processed frames (a 100 px face moving 150 px/s keeps its id at 2 fps). From then on steady
motion is predicted; a faster object, or one that turns sharply between two processed frames,
gets a new id. ``lost_seconds`` of 1 s is one or two missed frames at 2 fps.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
from dataclasses import dataclass

import numpy as np

from frameserve.errors import ConfigError, InvalidInput
from frameserve.processing.results import Detections
from frameserve.video.bytetrack import ByteTrack

log = logging.getLogger(__name__)

# A repeated pts is passed on this much later, as it was to the library (which warned on every
# duplicate): the filter predicts over 1 us rather than not at all, so ids stay what they were.
_DUPLICATE_STEP_S = 1e-6


@dataclass(frozen=True)
class TrackerSettings:
    """How detections are matched to tracks and how long a lost track is kept.

    The defaults suit faces at video frame rates. Our detectors already drop boxes below their own
    score threshold (faces: 0.6), so ByteTrack's second, low-score association rarely applies:
    with ``activation_score`` 0 every detection the detector kept starts or continues a track.
    """

    lost_seconds: float = 1.0
    """Stream time a track survives without a detection (rounded to 1/30 s); within it, an
    object that comes back where the Kalman filter expects it keeps its id."""
    min_iou: float = 0.1
    """Overlap between a track's predicted box and a detection needed to match them."""
    activation_score: float = 0.0
    """Lowest score that starts a new track. Keep it at or below the detector's own threshold.
    A detection below it only continues an existing track (ByteTrack's low-score stage); one
    that continues none gets a fresh id of its own for that frame."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lost_seconds) and self.lost_seconds >= 0):
            raise ConfigError(
                f"TrackerSettings.lost_seconds: expected a finite number >= 0, "
                f"got {self.lost_seconds!r}"
            )
        for name in ("min_iou", "activation_score"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"TrackerSettings.{name}: expected 0..1, got {value!r}")


class Tracker:
    """Fills ``track_ids`` for the detections of one stream, one frame after the other.

    Not thread-safe: use one instance per stream, called in frame order by the one thread or
    task that owns that stream's results.
    """

    def __init__(
        self,
        settings: TrackerSettings | None = None,
        frame_rate: float = 30.0,
        *,
        import_now: bool = True,
    ) -> None:
        """``frame_rate`` is the rate of the frames passed when ``seconds`` is ``None``; with
        timestamps it only sets the Kalman filter's time unit (the source's rate is right).
        ``import_now=False``: ``scipy.optimize`` is imported when first needed (more than six
        tracks and boxes that overlap one another, ``bytetrack.ENUMERATED``), if ever."""
        if not (math.isfinite(frame_rate) and frame_rate > 0):
            raise ConfigError(f"Tracker.frame_rate: expected a number > 0, got {frame_rate!r}")
        self.settings = settings or TrackerSettings()
        self.frame_rate = frame_rate
        self._by_label: dict[str, ByteTrack] = {}
        self._next_id = itertools.count(1)  # shared by labels, never reused
        self._last_seconds: float | None = None  # the caller's last pts
        self._last_sent: float | None = None  # what the label trackers got for it
        if import_now:  # ~0.4 s, once per process: now rather than on a frame
            import scipy.optimize  # noqa: F401

    def update(self, detections: Detections, seconds: float | None) -> Detections:
        """Return ``detections`` with ``track_ids`` filled: one id >= 1 per row, rows unchanged.

        ``seconds`` is the frame's pts; pass it for every frame, or ``None`` for every frame
        (each call then counts as one frame at ``frame_rate``). A pts earlier than the previous
        one (a stream that restarted or looped) ends every track; new tracks get new ids.
        """
        timestamp = self._tracker_time(seconds)
        labels = set(detections.labels) | self._by_label.keys()
        if len(labels) == 1:  # one label (a face detector): no split
            (label,) = labels
            ids = self._update_label(label, detections.boxes, detections.scores, timestamp)
            return dataclasses.replace(detections, track_ids=ids)
        rows_by_label: dict[str, list[int]] = {label: [] for label in self._by_label}
        for row, label in enumerate(detections.labels):
            rows_by_label.setdefault(label, []).append(row)
        ids = np.zeros(len(detections), dtype=np.int64)
        # Labels absent from this frame are updated too, so their lost tracks age.
        for label, rows in rows_by_label.items():
            index = np.asarray(rows, dtype=np.int64)
            ids[index] = self._update_label(
                label, detections.boxes[index], detections.scores[index], timestamp
            )
        return dataclasses.replace(detections, track_ids=ids)

    def _tracker_time(self, seconds: float | None) -> float | None:
        """Map the caller's pts to a strictly increasing timestamp, restarting on a jump back."""
        if seconds is None:
            self._last_seconds = self._last_sent = None
            return None
        if not math.isfinite(seconds):
            raise InvalidInput(f"Tracker.update: seconds must be a finite pts, got {seconds!r}")
        if self._last_seconds is not None and seconds < self._last_seconds:
            log.info(
                "pts went back from %.3f s to %.3f s: tracks restart", self._last_seconds, seconds
            )
            self._by_label.clear()
            self._last_sent = None
        sent = seconds
        if self._last_sent is not None and sent <= self._last_sent:
            sent = self._last_sent + _DUPLICATE_STEP_S
        self._last_seconds, self._last_sent = seconds, sent
        return sent

    def _update_label(
        self, label: str, boxes: np.ndarray, scores: np.ndarray, timestamp: float | None
    ) -> np.ndarray:
        """Run one label's tracker on that label's rows; return one id per row."""
        tracker = self._by_label.get(label)
        if tracker is None:
            settings = self.settings
            tracker = self._by_label[label] = ByteTrack(
                self._next_id.__next__,
                lost_seconds=settings.lost_seconds,
                min_iou=settings.min_iou,
                activation_score=settings.activation_score,
                frame_rate=self.frame_rate,
            )
        return tracker.update(boxes, scores, timestamp)
