"""Per-video aggregators: each reads the per-frame lines of one result kind and answers a
JSON-ready summary (``video.summary`` drives them).

Every aggregator sees each line once, in frame order, with the line's time and its position
in the file (``Point``), and keeps only what its answer needs. Time ranges come from
``ranges``: flagged frames that are neighbours in the file always join; others join when the
unflagged stretch between them is at most the aggregator's gap. A range ends one sampling
step after its last frame (that frame is on screen until the next one).
"""

from __future__ import annotations

import base64
import binascii
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import cv2
import numpy as np

from frameserve.errors import InvalidInput
from frameserve.video.summary_spec import (
    ClassesSummarySpec,
    DetectionsSummarySpec,
    MasksSummarySpec,
    ModerationSummarySpec,
    QualitySummarySpec,
    TextsSummarySpec,
)

DEFECT_KINDS = ("black", "frozen", "blocky", "blurry")


@dataclass(frozen=True, slots=True)
class Point:
    """One line: its position in the file, frame index and time in seconds."""

    seq: int
    frame: int
    t: float


def _r(x: float) -> float:
    return round(float(x), 3)


def when(p: Point) -> dict[str, Any]:
    return {"t": _r(p.t), "frame": p.frame}


def ranges(points: Sequence[Point], step: float, gap: float) -> list[list[Point]]:
    """Flagged points -> runs: neighbours in the file join, others across at most ``gap``
    seconds of unflagged frames (measured from the end of the earlier frame)."""
    runs: list[list[Point]] = []
    for p in points:
        if runs:
            last = runs[-1][-1]
            if p.seq == last.seq + 1 or p.t - (last.t + step) <= gap + 1e-9:
                runs[-1].append(p)
                continue
        runs.append([p])
    return runs


def range_json(run: Sequence[Point], step: float) -> dict[str, Any]:
    first, last = run[0], run[-1]
    return {
        "start": _r(first.t),
        "end": _r(last.t + step),
        "start_frame": first.frame,
        "end_frame": last.frame,
        "frames": len(run),
    }


def seconds(runs: Sequence[Sequence[Point]], step: float) -> float:
    return _r(sum(run[-1].t + step - run[0].t for run in runs))


def _items(line: dict[str, Any], key: str, where: str) -> list[dict[str, Any]]:
    items = line.get(key)
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise InvalidInput(f"{where}: {key}: expected a list of objects, got {items!r:.80}")
    return items


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(f"{where}: expected a number, got {value!r:.80}")
    return float(value)


class Aggregator(Protocol):
    def add(self, line: dict[str, Any], point: Point, where: str) -> None: ...

    def result(self, step: float, frames: int) -> dict[str, Any]: ...


@dataclass
class _Track:
    first: Point
    last: Point
    frames: int = 0
    score: float = 0.0


@dataclass
class _Label:
    count: int = 0
    max_per_frame: int = 0
    points: list[Point] = field(default_factory=list)
    tracks: dict[int, _Track] = field(default_factory=dict)


class DetectionsAggregator:
    """Counts, presence ranges and tracks per label."""

    def __init__(self, spec: DetectionsSummarySpec) -> None:
        self.spec = spec
        self.labels: dict[str, _Label] = defaultdict(_Label)
        self.frames_with = 0
        self.max_per_frame = 0
        self.tracked = False

    def add(self, line: dict[str, Any], point: Point, where: str) -> None:
        if "detections" not in line:
            return
        kept = [
            d
            for d in _items(line, "detections", where)
            if _number(d.get("score", 1.0), f"{where}: score") >= self.spec.min_score
        ]
        per_label: Counter[str] = Counter(str(d.get("label", "")) for d in kept)
        self.frames_with += bool(kept)
        self.max_per_frame = max(self.max_per_frame, len(kept))
        for label, n in per_label.items():
            state = self.labels[label]
            state.count += n
            state.max_per_frame = max(state.max_per_frame, n)
            state.points.append(point)
        for d in kept:
            if d.get("track_id") is not None:
                self.tracked = True
                self._track(self.labels[str(d.get("label", ""))], d, point)

    @staticmethod
    def _track(state: _Label, d: dict[str, Any], point: Point) -> None:
        track = state.tracks.setdefault(int(d["track_id"]), _Track(point, point))
        if track.last.seq != point.seq or track.frames == 0:
            track.frames += 1
        track.last = point
        track.score += float(d.get("score", 1.0))

    def result(self, step: float, frames: int) -> dict[str, Any]:
        return {
            "frames_with_detections": self.frames_with,
            "max_per_frame": self.max_per_frame,
            "tracked": self.tracked,
            "labels": {k: self._label(v, step, frames) for k, v in sorted(self.labels.items())},
        }

    def _label(self, state: _Label, step: float, frames: int) -> dict[str, Any]:
        runs = ranges(state.points, step, self.spec.merge_gap_s)
        out: dict[str, Any] = {
            "count": state.count,
            "frames": len(state.points),
            "share": _r(len(state.points) / frames) if frames else 0.0,
            "max_per_frame": state.max_per_frame,
            "first_seen": when(state.points[0]),
            "last_seen": when(state.points[-1]),
            "seconds": seconds(runs, step),
            "ranges": [range_json(run, step) for run in runs],
        }
        if self.tracked:
            kept = [
                (i, t) for i, t in state.tracks.items() if t.frames >= self.spec.min_track_frames
            ]
            kept.sort(key=lambda it: (-it[1].frames, it[1].first.t, it[0]))
            out["track_count"] = len(kept)
            out["tracks"] = [
                {
                    "track_id": i,
                    "first_seen": when(t.first),
                    "last_seen": when(t.last),
                    "frames": t.frames,
                    "mean_score": round(t.score / t.frames, 4),
                }
                for i, t in kept[: self.spec.max_tracks]
            ]
        return out


class ClassesAggregator:
    """Per label: the share of sampled frames where it was top-1 and its mean score (0 on
    frames where it was outside the top-k)."""

    def __init__(self, spec: ClassesSummarySpec) -> None:
        self.spec = spec
        self.frames = 0
        self.top1: Counter[str] = Counter()
        self.scores: defaultdict[str, float] = defaultdict(float)

    def add(self, line: dict[str, Any], point: Point, where: str) -> None:
        if "classes" not in line:
            return
        items = _items(line, "classes", where)
        self.frames += 1
        for i, c in enumerate(items):
            label = str(c.get("label", ""))
            if i == 0:
                self.top1[label] += 1
            self.scores[label] += _number(c.get("score"), f"{where}: classes[{i}].score")

    def result(self, step: float, frames: int) -> dict[str, Any]:
        n = max(1, self.frames)
        ranked = sorted(
            self.scores.items(), key=lambda it: (-self.top1[it[0]], -it[1], it[0])
        )  # top-1 frames, then total score: the order of share, then mean score
        return {
            "frames": self.frames,
            "top": [
                {
                    "label": label,
                    "share": _r(self.top1[label] / n),
                    "mean_score": round(total / n, 4),
                    "top1_frames": self.top1[label],
                }
                for label, total in ranked[: self.spec.top_k]
            ],
        }


class ModerationAggregator:
    """Unsafe ranges from each line's ``verdict``; the video is unsafe if any range counts."""

    def __init__(self, spec: ModerationSummarySpec) -> None:
        self.spec = spec
        self.frames = 0
        self.unsafe: list[Point] = []
        self.details: dict[int, tuple[list[str], float]] = {}  # seq -> labels, score

    def add(self, line: dict[str, Any], point: Point, where: str) -> None:
        verdict = line.get("verdict")
        if verdict is None:
            return
        if not isinstance(verdict, dict) or verdict.get("label") not in ("safe", "unsafe"):
            raise InvalidInput(
                f"{where}: verdict: expected {{'label': 'safe'|'unsafe', ...}}, got {verdict!r:.80}"
            )
        self.frames += 1
        if verdict["label"] == "unsafe":
            labels = [str(x) for x in verdict.get("labels", [])]
            self.unsafe.append(point)
            self.details[point.seq] = (labels, float(verdict.get("score", 1.0)))

    def result(self, step: float, frames: int) -> dict[str, Any]:
        runs = [
            r
            for r in ranges(self.unsafe, step, self.spec.merge_gap_s)
            if len(r) >= self.spec.min_frames
        ]
        out_ranges, found = [], set()
        for run in runs:
            labels = sorted({lb for p in run for lb in self.details[p.seq][0]})
            found.update(labels)
            score = max(self.details[p.seq][1] for p in run)
            out_ranges.append({**range_json(run, step), "labels": labels, "max_score": _r(score)})
        unsafe_frames = sum(len(r) for r in runs)
        return {
            "verdict": {
                "label": "unsafe" if runs else "safe",
                "labels": sorted(found),
                "unsafe_seconds": seconds(runs, step),
                "unsafe_frames": unsafe_frames,
                "frames": self.frames,
            },
            "ranges": out_ranges,
        }


class QualityAggregator:
    """Score statistics, the worst low-score ranges, and ranges per defect kind."""

    def __init__(self, spec: QualitySummarySpec) -> None:
        self.spec = spec
        self.points: list[Point] = []
        self.scores: list[float] = []
        self.methods: Counter[str] = Counter()
        self.defects: dict[str, list[Point]] = {k: [] for k in DEFECT_KINDS}

    def add(self, line: dict[str, Any], point: Point, where: str) -> None:
        quality = line.get("quality")
        if quality is not None:
            if not isinstance(quality, dict):
                raise InvalidInput(f"{where}: quality: expected an object, got {quality!r:.80}")
            self.points.append(point)
            self.scores.append(_number(quality.get("score"), f"{where}: quality.score"))
            self.methods[str(quality.get("method", ""))] += 1
        if "defects" in line:
            kinds = line["defects"]
            if not isinstance(kinds, list):
                raise InvalidInput(f"{where}: defects: expected a list, got {kinds!r:.80}")
            for kind in dict.fromkeys(str(k) for k in kinds):
                self.defects.setdefault(kind, []).append(point)

    def result(self, step: float, frames: int) -> dict[str, Any]:
        out: dict[str, Any] = {"frames": len(self.scores)}
        if self.scores:
            out.update(self._scores(step))
        out["defects"] = {
            kind: {
                "seconds": seconds(runs, step),
                "ranges": [range_json(run, step) for run in runs],
            }
            for kind, points in self.defects.items()
            for runs in [ranges(points, step, self.spec.merge_gap_s)]
        }
        return out

    def _scores(self, step: float) -> dict[str, Any]:
        s = np.asarray(self.scores)
        worst = int(np.argmin(s))
        by_seq = {p.seq: v for p, v in zip(self.points, self.scores, strict=True)}
        low = [p for p, v in zip(self.points, self.scores, strict=True) if v < self.spec.low_score]
        rows = []
        for run in ranges(low, step, self.spec.merge_gap_s):
            values = [by_seq[p.seq] for p in run]
            rows.append(
                {
                    **range_json(run, step),
                    "mean_score": _r(float(np.mean(values))),
                    "min_score": _r(min(values)),
                }
            )
        rows.sort(key=lambda r: (r["mean_score"], r["start"]))
        return {
            "method": self.methods.most_common(1)[0][0],
            "mean": _r(s.mean()),
            "p10": _r(np.percentile(s, 10)),
            "min": _r(s.min()),
            "max": _r(s.max()),
            "worst_frame": {**when(self.points[worst]), "score": _r(s[worst])},
            "low_score": self.spec.low_score,
            "low_seconds": seconds(ranges(low, step, self.spec.merge_gap_s), step),
            "worst_ranges": rows[: self.spec.worst_ranges],
        }


@dataclass
class _Text:
    first: Point
    last: Point
    frames: int = 0
    max_score: float = 0.0


class TextsAggregator:
    """Distinct recognised texts (stripped), with first and last seen."""

    def __init__(self, spec: TextsSummarySpec) -> None:
        self.spec = spec
        self.texts: dict[str, _Text] = {}

    def add(self, line: dict[str, Any], point: Point, where: str) -> None:
        if "texts" not in line:
            return
        for item in _items(line, "texts", where):
            text = str(item.get("text", "")).strip()
            score = float(item.get("score", 1.0))
            if not text or score < self.spec.min_score:
                continue
            state = self.texts.setdefault(text, _Text(point, point))
            if state.frames == 0 or state.last.seq != point.seq:
                state.frames += 1
            state.last = point
            state.max_score = max(state.max_score, score)

    def result(self, step: float, frames: int) -> dict[str, Any]:
        rows = sorted(self.texts.items(), key=lambda kv: (-kv[1].frames, kv[1].first.t, kv[0]))
        return {
            "distinct": len(rows),
            "texts": [
                {
                    "text": text,
                    "frames": s.frames,
                    "first_seen": when(s.first),
                    "last_seen": when(s.last),
                    "max_score": round(s.max_score, 4),
                }
                for text, s in rows[: self.spec.max_texts]
            ],
        }


def mask_coverage(mask: Any, where: str) -> float:
    """The fraction of the frame a line's ``mask`` (base64 PNG, 0/255) covers."""
    try:
        data = base64.b64decode(mask["png"], validate=True)
    except (TypeError, KeyError, binascii.Error):
        raise InvalidInput(f"{where}: mask: expected {{'png': base64}}, got {mask!r:.80}") from None
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise InvalidInput(f"{where}: mask.png: not a PNG image")
    return float(np.count_nonzero(image)) / image.size if image.size else 0.0


class MasksAggregator:
    """Ranges where the mask covers at least ``min_coverage`` of the frame."""

    def __init__(self, spec: MasksSummarySpec) -> None:
        self.spec = spec
        self.frames = 0
        self.total = 0.0
        self.present: list[Point] = []
        self._measured: tuple[float, float] | None = None  # (time, coverage) last decoded

    def add(self, line: dict[str, Any], point: Point, where: str) -> None:
        if "mask" not in line:
            return
        last = self._measured
        if last is not None and 0 <= point.t - last[0] < self.spec.check_every_s:
            coverage = last[1]
        else:
            coverage = mask_coverage(line["mask"], where)
            self._measured = (point.t, coverage)
        self.frames += 1
        self.total += coverage
        if coverage >= self.spec.min_coverage and coverage > 0:
            self.present.append(point)

    def result(self, step: float, frames: int) -> dict[str, Any]:
        runs = ranges(self.present, step, self.spec.merge_gap_s)
        return {
            "frames": self.frames,
            "frames_with_mask": len(self.present),
            "mean_coverage": round(self.total / self.frames, 4) if self.frames else 0.0,
            "seconds": seconds(runs, step),
            "ranges": [range_json(run, step) for run in runs],
        }


# aggregator name -> (settings class, aggregator class)
Factory = Callable[[Any], Aggregator]
AGGREGATORS: dict[str, tuple[type, Factory]] = {
    "detections": (DetectionsSummarySpec, DetectionsAggregator),
    "classes": (ClassesSummarySpec, ClassesAggregator),
    "moderation": (ModerationSummarySpec, ModerationAggregator),
    "quality": (QualitySummarySpec, QualityAggregator),
    "texts": (TextsSummarySpec, TextsAggregator),
    "masks": (MasksSummarySpec, MasksAggregator),
}
# a line's result key -> the aggregator a pipeline without a summary block gets for it
AUTO_KEYS = {
    "detections": "detections",
    "classes": "classes",
    "verdict": "moderation",
    "quality": "quality",
    "defects": "quality",
    "texts": "texts",
    "mask": "masks",
}
