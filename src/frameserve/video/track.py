"""Track ids that follow each detected object from frame to frame of one video stream.

A detector sees every frame on its own; a pipeline that blurs a face through a clip, counts
people or follows an object needs to know that box 3 of frame 120 is the face that was box 1 of
frame 119. ``Tracker`` puts ByteTrack from Roboflow's ``trackers`` (a Kalman filter per track,
IoU matching with the Hungarian algorithm) behind our ``Detections``:

- every detection gets an id >= 1 on the frame it first appears, rows stay in input order and
  keypoints and labels are untouched. The library returns -1 for a track it has not confirmed
  yet (until its second frame); we confirm each new track at birth instead, with an id from our
  own counter that the library then reports on every later match, so -1 never leaves here;
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
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from frameserve.errors import ConfigError, InvalidInput
from frameserve.processing.results import Detections

if TYPE_CHECKING:
    from trackers import ByteTrackTracker

log = logging.getLogger(__name__)

# The library counts its lost-track buffer in frames of a 30 fps video, whatever the real rate.
_LIBRARY_FPS = 30.0
# A repeated pts is sent this much later: the library warns on every duplicate otherwise.
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


def preload() -> threading.Thread:
    """Import the tracking library in a background thread (~0.4-1.5 s, once per process),
    for a caller that has other start-up work to overlap it with (models loading); the
    thread is returned so the caller may wait for it."""

    def load() -> None:
        try:
            import trackers  # noqa: F401
        except ImportError as err:  # the Tracker reports it where it is used
            log.debug("preloading trackers failed: %s", err)

    thread = threading.Thread(target=load, name="preload-trackers", daemon=True)
    thread.start()
    return thread


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
        ``import_now=False``: the library is imported on the first update (or by ``preload``)."""
        if not (math.isfinite(frame_rate) and frame_rate > 0):
            raise ConfigError(f"Tracker.frame_rate: expected a number > 0, got {frame_rate!r}")
        self.settings = settings or TrackerSettings()
        self.frame_rate = frame_rate
        self._by_label: dict[str, ByteTrackTracker] = {}
        self._next_id = itertools.count(1)  # shared by labels, never reused
        self._last_seconds: float | None = None  # the caller's last pts
        self._last_sent: float | None = None  # what the library got for it
        if import_now:  # ~0.5-1.5 s, once per process: now rather than on the first frame
            import trackers  # noqa: F401

    def update(self, detections: Detections, seconds: float | None) -> Detections:
        """Return ``detections`` with ``track_ids`` filled: one id >= 1 per row, rows unchanged.

        ``seconds`` is the frame's pts; pass it for every frame, or ``None`` for every frame
        (each call then counts as one frame at ``frame_rate``). A pts earlier than the previous
        one (a stream that restarted or looped) ends every track; new tracks get new ids.
        """
        timestamp = self._library_time(seconds)
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

    def _library_time(self, seconds: float | None) -> float | None:
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
        """Run one label's library tracker on that label's rows; return one id per row."""
        import supervision as sv

        tracker = self._by_label.get(label)
        if tracker is None:
            tracker = self._by_label[label] = self._library_tracker()
        rows = np.arange(len(scores))
        # ``data`` rides along through the library's reordering: it maps outputs back to rows.
        tracked = tracker.update(
            sv.Detections(xyxy=boxes, confidence=scores, data={"row": rows}), timestamp=timestamp
        )
        ids = np.full(len(rows), -1, dtype=np.int64)
        if len(tracked) and tracked.tracker_id is not None:
            out_rows = np.asarray(tracked.data["row"], dtype=np.int64)
            ids[out_rows] = tracked.tracker_id
        else:
            out_rows = np.zeros(0, dtype=np.int64)
        self._confirm_new_tracks(tracker, ids, scores, out_rows)
        return ids

    def _confirm_new_tracks(
        self, tracker: ByteTrackTracker, ids: np.ndarray, scores: np.ndarray, out_rows: np.ndarray
    ) -> None:
        """Give an id to every row the library left at -1, in place.

        With ``minimum_consecutive_frames=1`` and every track confirmed at birth, the rows still
        at -1 are (trackers 2.6.1) exactly the tracks started on this frame, returned in the
        order they were appended to ``tracker.tracks``, plus low-score rows that continued
        nothing and start no track. Setting a new track's ``tracker_id`` makes the library
        report that id from the next match on, and keeps the track for ``lost_seconds``.
        """
        unconfirmed = [track for track in tracker.tracks if track.tracker_id == -1]
        started = [
            row
            for row in out_rows
            if ids[row] == -1 and scores[row] >= self.settings.activation_score
        ]
        if len(started) != len(unconfirmed):
            raise RuntimeError(
                f"trackers: expected one new track per new detection, got {len(unconfirmed)} "
                f"tracks for {len(started)} detections; this module is written for trackers 2.6.1"
            )
        for row, track in zip(started, unconfirmed, strict=True):
            track.tracker_id = ids[row] = next(self._next_id)
        for row in np.flatnonzero(ids == -1):
            ids[row] = next(self._next_id)

    def _library_tracker(self) -> ByteTrackTracker:
        # Imported here: importing trackers (and supervision) takes ~1.5 s.
        from trackers import ByteTrackTracker

        settings = self.settings
        return ByteTrackTracker(
            lost_track_buffer=round(settings.lost_seconds * _LIBRARY_FPS),
            frame_rate=self.frame_rate,
            # One threshold for both: every detection at or above it is "high" and may start a
            # track; below it ByteTrack only uses it to continue one.
            track_activation_threshold=settings.activation_score,
            high_conf_det_threshold=settings.activation_score,
            minimum_consecutive_frames=1,
            minimum_iou_threshold=settings.min_iou,
        )
