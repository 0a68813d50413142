"""Motion regions: the example script model (``example-script``) of the script engine.

Installed by ``frameserve zoo pull example-script`` as ``example-script/1/model.py`` and run by
the Python backend. It uses the four calls of the script interface (``docs/scripts.md``):

- ``setup(config)``: the defaults from ``model.yaml`` ``parameters`` (threshold, min_area,
  label, max_regions), checked once;
- ``warmup()``: one frame through the detector, so the first stream pays no first-call cost;
- ``configure(stream_config)``: once per stream before its first frame: that stream's
  ``params`` over the defaults (a bad value raises: the client gets 400 with the message),
  and a fresh state (no previous frame);
- ``process(batch, streams, profiling)``: a batch mixes rows of several streams; each row is
  compared with the previous frame of *its* stream, and the regions that changed by more than
  the stream's ``threshold`` come back as boxes (the ``script_detections`` postprocess turns
  them into detections that video pipelines track, draw and write). With ``profiling`` it
  reports its two stages (``diff``, ``regions``) into the run's profile.

Rows of online requests (``streams`` entry None) have no previous frame: no motion. The state
is per stream, so frames of one stream must be processed in order: keep ``instances: 1``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

DEFAULTS: dict[str, Any] = {"threshold": 25, "min_area": 0.002, "label": "motion"}
MAX_REGIONS = 8  # rows of the boxes/scores/labels outputs; unused rows have score 0


@dataclass(frozen=True)
class Settings:
    """One stream's settings: pixel change (0..255) that counts, the least region area (a
    fraction of the frame) and the label of its boxes."""

    threshold: float
    min_area: float
    label: str

    @classmethod
    def parse(cls, values: dict[str, Any], where: str) -> Settings:
        unknown = sorted(set(values) - set(DEFAULTS))
        if unknown:
            raise ValueError(f"{where}: unknown {unknown}; expected keys {sorted(DEFAULTS)}")
        merged = {**DEFAULTS, **values}
        threshold, min_area, label = merged["threshold"], merged["min_area"], merged["label"]
        if isinstance(threshold, bool) or not isinstance(threshold, int | float):
            raise ValueError(f"{where}.threshold: expected a number 0..255, got {threshold!r}")
        if not 0 <= threshold <= 255:
            raise ValueError(f"{where}.threshold: expected 0..255, got {threshold}")
        if isinstance(min_area, bool) or not isinstance(min_area, int | float):
            raise ValueError(f"{where}.min_area: expected a fraction 0..1, got {min_area!r}")
        if not 0 <= min_area <= 1:
            raise ValueError(f"{where}.min_area: expected a fraction 0..1, got {min_area}")
        if not isinstance(label, str) or not label:
            raise ValueError(f"{where}.label: expected a non-empty string, got {label!r}")
        return cls(float(threshold), float(min_area), label)


class Model:
    """``image`` (N, H, W, 3) UINT8 -> ``boxes`` (N, K, 4), ``scores`` (N, K), ``labels``."""

    def setup(self, config: dict[str, Any]) -> None:
        params = {k: v for k, v in config["parameters"].items() if k in DEFAULTS}
        self.defaults = Settings.parse(params, "model.yaml parameters")
        self._lock = threading.Lock()  # configure/release and batches run on other threads
        self._settings: dict[str, Settings] = {}
        self._previous: dict[str, np.ndarray] = {}  # stream -> its last grey frame

    def warmup(self) -> None:
        grey = np.zeros((144, 256), np.uint8)
        self._regions(grey, grey, self.defaults)

    def configure(self, stream_config: dict[str, Any]) -> None:
        settings = Settings.parse(stream_config["params"], "params")
        stream = stream_config["stream"]
        with self._lock:
            self._settings[stream] = settings
            self._previous.pop(stream, None)

    def release(self, stream: str) -> None:
        with self._lock:
            self._settings.pop(stream, None)
            self._previous.pop(stream, None)

    def process(
        self,
        batch: dict[str, np.ndarray],
        streams: list[str | None] | None = None,
        profiling: bool = False,
    ) -> Any:
        images = batch["image"]
        n = len(images)
        boxes = np.zeros((n, MAX_REGIONS, 4), np.float32)
        scores = np.zeros((n, MAX_REGIONS), np.float32)
        labels = np.full((n, MAX_REGIONS), b"", dtype=object)
        stages = {"diff": 0.0, "regions": 0.0}
        for i, stream in enumerate(streams or [None] * n):
            started = time.perf_counter()
            grey = cv2.cvtColor(images[i], cv2.COLOR_RGB2GRAY)
            settings = previous = None
            if stream is not None:
                with self._lock:
                    settings = self._settings.get(stream)
                    if settings is not None:  # configured: compare with its last frame
                        previous = self._previous.get(stream)
                        self._previous[stream] = grey
            stages["diff"] += time.perf_counter() - started
            if settings is None or previous is None:
                continue  # an online request, or a stream's first frame: nothing to compare
            started = time.perf_counter()
            found = self._regions(previous, grey, settings)
            for k, (box, score) in enumerate(found):
                boxes[i, k], scores[i, k], labels[i, k] = box, score, settings.label.encode()
            stages["regions"] += time.perf_counter() - started
        outputs = {"boxes": boxes, "scores": scores, "labels": labels}
        return (outputs, stages) if profiling else outputs

    @staticmethod
    def _regions(
        previous: np.ndarray, grey: np.ndarray, settings: Settings
    ) -> list[tuple[tuple[int, int, int, int], float]]:
        """The largest changed regions: (x1, y1, x2, y2) in input pixels, and the share of
        changed pixels inside each box as its score."""
        diff = cv2.absdiff(previous, grey)
        changed = (diff > settings.threshold).astype(np.uint8)
        grown = cv2.dilate(changed, np.ones((5, 5), np.uint8))  # join nearby specks
        count, _, stats, _ = cv2.connectedComponentsWithStats(grown, connectivity=8)
        least = settings.min_area * grey.size
        found = []
        for x, y, w, h, area in stats[1:count]:  # label 0 is the background
            if area >= least and area > 0:
                found.append(((int(x), int(y), int(x + w), int(y + h)), float(area) / (w * h)))
        found.sort(key=lambda r: (r[0][2] - r[0][0]) * (r[0][3] - r[0][1]), reverse=True)
        return found[:MAX_REGIONS]
