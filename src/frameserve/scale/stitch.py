"""Joining the chunks' result lines into one file with track ids stitched across borders.

Each chunk tracked with a tracker of its own, so its ids are local. A chunk also ran the
first kept frames of the next chunk (the overlap), with its tracker warm there. For those
frames the joined file takes the earlier chunk's lines (ids as a run over the whole input
gives them), and the later chunk's local tracks are matched to them by IoU summed over the
overlap frames (one to one, same label, best first); a local track that matches nothing gets
a new id. Rows are never changed, only their ``track_id``: boxes equal a single-node run's.
Lines whose ids do not change are copied byte for byte.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from frameserve.processing.results import pair_iou

MIN_IOU = 0.3  # mean IoU over the overlap below which two tracks are not the same


def _tracked(line: dict[str, Any]) -> list[dict[str, Any]]:
    dets = line.get("detections")
    if not isinstance(dets, list):
        return []
    return [d for d in dets if isinstance(d, dict) and "track_id" in d and "box" in d]


@dataclass
class TrackStitcher:
    """Feeds chunks in order; yields the joined lines (bytes, newline-ended)."""

    next_id: int = 1
    _previous: dict[int, bytes] = field(default_factory=dict)  # overlap frame -> joined line

    def add(self, lines: bytes, overlap: bytes) -> Iterator[bytes]:
        own = [orjson.loads(raw) for raw in lines.splitlines() if raw]
        raws = [raw for raw in lines.splitlines() if raw]
        mapping = self._match(own)
        for line, raw in zip(own, raws, strict=True):
            joined = self._previous.get(line["frame"])
            yield joined if joined is not None else self._mapped(line, raw, mapping)
        self._previous = {}
        for raw in overlap.splitlines():
            if raw:
                line = orjson.loads(raw)
                self._previous[line["frame"]] = self._mapped(line, raw, mapping)

    def _match(self, own: list[dict[str, Any]]) -> dict[int, int]:
        """Local id -> joined id, from the frames both this chunk and the previous one ran."""
        scores: dict[tuple[int, int], float] = {}
        for line in own:
            joined = self._previous.get(line["frame"])
            if joined is None:
                continue
            theirs = _tracked(orjson.loads(joined))
            for det in _tracked(line):
                for prev in theirs:
                    if det.get("label") != prev.get("label"):
                        continue
                    key = (int(det["track_id"]), int(prev["track_id"]))
                    scores[key] = scores.get(key, 0.0) + pair_iou(det["box"], prev["box"])
        frames = max(1, len(self._previous))
        mapping: dict[int, int] = {}
        used: set[int] = set()
        for (mine, other), total in sorted(scores.items(), key=lambda kv: -kv[1]):
            if mine in mapping or other in used or total / frames < MIN_IOU:
                continue
            mapping[mine] = other
            used.add(other)
        self.next_id = max([self.next_id, *(v + 1 for v in used)])
        return mapping

    def _mapped(self, line: dict[str, Any], raw: bytes, mapping: dict[int, int]) -> bytes:
        changed = False
        for det in _tracked(line):
            local = int(det["track_id"])
            if local not in mapping:
                mapping[local] = self.next_id
                self.next_id += 1
            if mapping[local] != local:
                det["track_id"] = mapping[local]
                changed = True
        return (orjson.dumps(line) if changed else raw) + b"\n"


def stitch(chunks: Iterable[tuple[bytes, bytes]]) -> Iterator[bytes]:
    """Joined lines of ``(lines, overlap)`` per chunk, in chunk order."""
    stitcher = TrackStitcher()
    for lines, overlap in chunks:
        yield from stitcher.add(lines, overlap)
