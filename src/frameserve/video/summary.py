"""Per-video summaries (``OUT/<stem>.summary.json``, ``GET /v1/jobs/{id}/summary``).

A summary is computed from the per-frame JSON lines alone, after the run: the same answer for
``video run``, for a job, and for a job resumed after a crash (its results file holds every
frame exactly once). It is pure: lines in, a JSON-ready dict out (``summarize``), plus the
file helpers around it. Which aggregators run is the pipeline's ``summary:`` block
(``video.summary_spec``); without one, the lines' own result kinds decide.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from frameserve.errors import InvalidInput
from frameserve.video.aggregators import AGGREGATORS, AUTO_KEYS, Aggregator, Point
from frameserve.video.summary_spec import AUTO, SummarySpec

SUMMARY_SUFFIX = ".summary.json"


def _aggregator(name: str, spec: SummarySpec) -> Aggregator:
    settings_cls, factory = AGGREGATORS[name]
    settings = getattr(spec, name) or settings_cls()
    return factory(settings)


def _time(line: dict[str, Any], where: str) -> tuple[int, float]:
    frame, t = line.get("frame"), line.get("t", line.get("pts"))
    if isinstance(frame, bool) or not isinstance(frame, int):
        raise InvalidInput(f"{where}: frame: expected the frame index, got {frame!r:.40}")
    if isinstance(t, bool) or not isinstance(t, int | float):
        raise InvalidInput(f"{where}: pts: expected the time in seconds, got {t!r:.40}")
    return frame, float(t)


def _step(times: list[float]) -> float:
    """How long one sampled frame stands for: the median gap between lines (0 for one)."""
    if len(times) < 2:
        return 0.0
    gaps = np.diff(np.asarray(times))
    gaps = gaps[gaps > 0]
    return float(np.median(gaps)) if len(gaps) else 0.0


def summarize(
    lines: Iterable[tuple[str, dict[str, Any]]],
    spec: SummarySpec = AUTO,
    pipeline: str | None = None,
) -> dict[str, Any]:
    """``(where, line)`` pairs in frame order -> the summary. ``where`` names a line in errors."""
    active: dict[str, Aggregator] = {name: _aggregator(name, spec) for name in spec.declared()}
    times: list[float] = []
    first: Point | None = None
    for seq, (where, line) in enumerate(lines):
        if not isinstance(line, dict):
            raise InvalidInput(f"{where}: expected a JSON object, got {line!r:.80}")
        frame, t = _time(line, where)
        point = Point(seq, frame, t)
        first = first or point
        times.append(t)
        if spec.auto:
            for key in line.keys() & AUTO_KEYS.keys():
                name = AUTO_KEYS[key]
                if name not in active:
                    active[name] = _aggregator(name, spec)
        for agg in active.values():
            agg.add(line, point, where)
    step = _step(times)
    out: dict[str, Any] = {
        "pipeline": pipeline,
        "frames": len(times),
        "start": round(times[0], 3) if times else 0.0,
        "end": round(times[-1] + step, 3) if times else 0.0,
        "step_s": round(step, 4),
    }
    for name in sorted(active, key=list(AGGREGATORS).index):
        out[name] = active[name].result(step, len(times))
    return out


def read_lines(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(path:line, object)`` for each line of a JSONL results file."""
    with path.open("rb") as f:
        for number, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            where = f"{path.name}:{number}"
            try:
                yield where, orjson.loads(raw)
            except orjson.JSONDecodeError as err:
                raise InvalidInput(f"{where}: not a JSON line: {err}") from None


def summarize_file(
    path: Path, spec: SummarySpec = AUTO, pipeline: str | None = None
) -> dict[str, Any]:
    return summarize(read_lines(path), spec, pipeline)


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    """Write whole or not at all: a reader never sees half a summary."""
    partial = path.with_name(path.name + ".partial")
    with partial.open("wb") as f:
        f.write(orjson.dumps(summary, option=orjson.OPT_INDENT_2) + b"\n")
        f.flush()
        os.fsync(f.fileno())
    partial.replace(path)


def summary_path(jsonl: Path) -> Path:
    """``OUT/<stem>.jsonl`` -> ``OUT/<stem>.summary.json``."""
    return jsonl.with_name(jsonl.name.removesuffix(".jsonl") + SUMMARY_SUFFIX)
