"""The tuner's coordinate search against the exhaustive grid, on a small space, side by side.

One run measures every configuration of a small space (the grid), then runs the coordinate
search live on the same model; both use the same screening windows. The search's choice is
then looked up in the grid's table, so "within 5% of the grid's best" compares measurements
taken the same way. Because one live run is one sample, the search is also replayed on the
grid's measurements from every possible start: how often it lands within 5%, and how many
trials it needs.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from frameserve.tools.tune import (
    Trial,
    TuneSettings,
    canonical,
    coordinate_search,
    tune_model,
)
from frameserve.tools.tune_space import Candidate, SearchSpace


def small_settings(p99_ms: float, search: str, budget_s: float = 1800) -> TuneSettings:
    return TuneSettings(
        p99_ms=p99_ms,
        budget_s=budget_s,
        max_batch=16,
        delays=(0.0, 2.0, 5.0),
        screen_s=1.0,
        final_s=3.0,
        finalists=1,
        search=search,  # type: ignore[arg-type]
    )


def replay(grid: dict[Candidate, Trial], space: SearchSpace) -> dict[str, Any]:
    """The coordinate search run on the grid's numbers from every start."""
    best = max(t.throughput for t in grid.values() if t.feasible)
    results = []
    for start in grid:
        calls: list[Candidate] = []

        async def evaluate(c: Candidate, calls: list[Candidate] = calls) -> Trial:
            calls.append(c)
            return grid[canonical(c)]

        seen = asyncio.run(coordinate_search(evaluate, space, start, 2, time.monotonic() + 60))
        pick = max(seen.values(), key=lambda t: t.score)
        results.append((pick.throughput / best, len(set(calls))))
    within = sum(1 for r, _ in results if r >= 0.95)
    trials = sorted(n for _, n in results)
    return {
        "starts": len(results),
        "within_5pct": within,
        "median_trials": trials[len(trials) // 2],
        "max_trials": trials[-1],
        "worst_ratio": min(r for r, _ in results),
    }


def run(repository: Path, model: str, p99_ms: float, log: Any) -> dict[str, Any]:
    """Grid, then the live coordinate search, on ``repository/model``."""
    grid_result = tune_model(repository, model, small_settings(p99_ms, "grid"), log)
    grid = {t.candidate: t for t in grid_result.trials if t.rung == "screen"}
    live = tune_model(repository, model, small_settings(p99_ms, "coordinate"), log)
    best_grid = max(grid.values(), key=lambda t: t.score)
    screened = [t for t in live.trials if t.rung == "screen"]
    live_pick = max(screened, key=lambda t: t.score).candidate
    chosen = live.best.candidate if live.best else live_pick
    return {
        "model": model,
        "p99_ms": p99_ms,
        "space": grid_result.space.size,
        "grid_trials": len(grid),
        "grid_best": best_grid.candidate.label(),
        "grid_best_throughput": best_grid.throughput,
        "grid_seconds": grid_result.seconds,
        "search_trials": live.screened,
        "search_seconds": live.seconds,
        "search_choice": chosen.label(),
        "search_choice_in_grid": grid[canonical(chosen)].throughput,
        "replay": replay(grid, grid_result.space),
    }
