"""``frameserve tune``: find the model settings with the most throughput under a p99 target.

Each trial reloads the model in an in-process server with one candidate's settings (the same
``load`` with a config override that ``POST /v2/repository/models/{m}/load`` does) and climbs a
concurrency ladder (doubling, starting at the instance count) until p99 passes the target or
throughput stops growing; the trial's score is its best throughput within the target.

The search is a coordinate search, as Triton Model Analyzer's quick search is a hill climb:
from the model's current settings, each dimension in turn (precision, layout, batch size, queue
delay) is swept with the others fixed at the best so far, twice at most; the best few are then
measured again with longer windows (a last rung of successive halving, which removes most of the
noise of the short screening windows) and the winner is the best of that rung. Every trial is
kept for the report and the Pareto plot.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from frameserve.errors import FrameserveError, InvalidInput
from frameserve.serving.config import load_model_config, read_yaml
from frameserve.serving.local import LocalServer
from frameserve.serving.repository import version_numbers
from frameserve.serving.server import InferenceServer, ServerSettings
from frameserve.tools.bench import check_repository_model, preprocess_shapes
from frameserve.tools.loadgen import Load, measure
from frameserve.tools.targets import LocalTarget, ModelInfo, make_inputs
from frameserve.tools.tune_space import (
    DIMENSIONS,
    Candidate,
    SearchSpace,
    apply,
    batch_sizes,
    layouts_for,
    precisions_for,
)

log = logging.getLogger(__name__)

Search = Literal["coordinate", "grid"]


@dataclass(frozen=True)
class TuneSettings:
    p99_ms: float
    budget_s: float = 600.0
    max_batch: int = 16
    delays: tuple[float, ...] = (0.0, 1.0, 2.0, 5.0)
    screen_s: float = 1.0  # measured window per ladder point while screening
    final_s: float = 3.0  # ... and for the finalists
    warmup_s: float = 0.3
    finalists: int = 3
    max_concurrency: int = 64
    passes: int = 2
    request_batch: int = 1  # what one client request carries; the server batches requests
    search: Search = "coordinate"
    bf16: bool | None = None  # None: ask the runtime whether this CPU has bf16


@dataclass(frozen=True)
class LadderPoint:
    concurrency: int
    throughput: float
    p50_ms: float
    p99_ms: float


@dataclass(frozen=True)
class Trial:
    candidate: Candidate
    rung: str  # "screen" | "final"
    throughput: float  # best within the p99 target (0 when no point met it)
    p99_ms: float  # at that point (or the lowest p99 seen when none met the target)
    p50_ms: float
    concurrency: int
    feasible: bool
    points: tuple[LadderPoint, ...]
    seconds: float
    error: str = ""

    @property
    def score(self) -> tuple[int, float]:
        """Feasible before infeasible; then throughput, or the lower p99 for infeasible ones."""
        return (1, self.throughput) if self.feasible else (0, -self.p99_ms)

    def to_json(self) -> dict[str, Any]:
        return {
            "config": self.candidate.label(),
            "settings": self.candidate.settings() | {"max_queue_delay_ms": self.candidate.delay_ms},
            "version": self.candidate.precision.version,
            "rung": self.rung,
            "throughput": self.throughput,
            "p99_ms": self.p99_ms,
            "p50_ms": self.p50_ms,
            "concurrency": self.concurrency,
            "feasible": self.feasible,
            "points": [p.__dict__ for p in self.points],
            "seconds": self.seconds,
            "error": self.error,
        }


@dataclass
class TuneResult:
    model: str
    settings: TuneSettings
    space: SearchSpace
    start: Candidate
    best: Trial | None
    trials: list[Trial] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def screened(self) -> int:
        """How many distinct candidates were measured (the search's cost in trials)."""
        return len({t.candidate for t in self.trials if t.rung == "screen"})


class TrialRunner:
    """Loads candidates into an in-process server and measures them (on the server's loop)."""

    def __init__(
        self, server: InferenceServer, model: str, base: dict[str, Any], settings: TuneSettings
    ) -> None:
        self._server = server
        self._model = model
        self._base = base
        self._settings = settings
        self._inputs: dict[tuple[int, int], Any] = {}

    async def evaluate(self, candidate: Candidate, rung: str) -> Trial:
        started = time.perf_counter()
        config = apply(self._base, candidate)
        try:
            await self._server.load_model(self._model, json.dumps(config))
            points = await self._ladder(candidate, rung)
        except FrameserveError as err:
            log.warning("%s: %s", candidate.label(), err.message)
            return Trial(candidate, rung, 0.0, float("inf"), 0.0, 0, False, (),
                         time.perf_counter() - started, err.message)  # fmt: skip
        return _trial(candidate, rung, points, self._settings.p99_ms, time.perf_counter() - started)

    async def _ladder(self, candidate: Candidate, rung: str) -> list[LadderPoint]:
        s = self._settings
        window = s.final_s if rung == "final" else s.screen_s
        target = LocalTarget(self._server, self._model, str(candidate.precision.version))
        info = await target.open()
        prepared = target.prepare(self._tensors(info, candidate))
        cap = min(s.max_concurrency, max(2, 2 * candidate.instances * max(1, candidate.batch)))
        points: list[LadderPoint] = []
        concurrency = candidate.instances
        while concurrency <= cap:
            m = await measure(lambda: target.infer(prepared), Load(concurrency), window, s.warmup_s)
            if m.errors:
                raise InvalidInput(f"{m.errors} request(s) failed: {m.first_error}")
            point = LadderPoint(concurrency, m.request_rate * self._request_batch(candidate),
                                m.latency_ms["p50"],
                                m.latency_ms["p99"])  # fmt: skip
            points.append(point)
            if point.p99_ms > s.p99_ms or _plateau(points):
                break
            concurrency *= 2
        return points

    def _request_batch(self, candidate: Candidate) -> int:
        # Clients send what they have (one frame by default); the batcher joins requests up to
        # the candidate's max_batch_size. A model that cannot batch gets unbatched requests.
        return min(self._settings.request_batch, max(1, candidate.batch))

    def _tensors(self, info: ModelInfo, candidate: Candidate) -> dict[str, Any]:
        key = (candidate.precision.version, self._request_batch(candidate))
        if key not in self._inputs:
            fill = preprocess_shapes(self._server, self._model, str(key[0]))
            self._inputs[key] = make_inputs(info, key[1], fill(info))
        return self._inputs[key]


def _plateau(points: list[LadderPoint], gain: float = 1.03) -> bool:
    """Two doublings in a row that did not add ``gain`` over the best before them."""
    if len(points) < 3:
        return False
    best_before = max(p.throughput for p in points[:-2])
    return all(p.throughput < gain * best_before for p in points[-2:])


def _trial(
    candidate: Candidate, rung: str, points: list[LadderPoint], p99_ms: float, seconds: float
) -> Trial:
    within = [p for p in points if p.p99_ms <= p99_ms]
    if within:
        p = max(within, key=lambda q: q.throughput)
        return Trial(candidate, rung, p.throughput, p.p99_ms, p.p50_ms, p.concurrency, True,
                     tuple(points), seconds)  # fmt: skip
    p = min(points, key=lambda q: q.p99_ms)
    return Trial(candidate, rung, 0.0, p.p99_ms, p.p50_ms, p.concurrency, False, tuple(points),
                 seconds)  # fmt: skip


async def coordinate_search(
    evaluate: Callable[[Candidate], Any], space: SearchSpace, start: Candidate, passes: int,
    deadline: float,
) -> dict[Candidate, Trial]:  # fmt: skip
    """Sweep one dimension at a time around the best so far; stop when a pass changes nothing."""
    seen: dict[Candidate, Trial] = {start: await evaluate(start)}
    best = start
    for _ in range(passes):
        moved = False
        for dim in DIMENSIONS:
            line = [canonical(best.with_value(dim, v)) for v in space.values(dim)]
            for cand in line:
                if cand not in seen and time.monotonic() < deadline:
                    seen[cand] = await evaluate(cand)
            winner = max((seen[c] for c in line if c in seen), key=lambda t: t.score)
            if winner.candidate != best and winner.score > seen[best].score:
                best, moved = winner.candidate, True
        if not moved or time.monotonic() >= deadline:
            break
    return seen


async def grid_search(
    evaluate: Callable[[Candidate], Any], space: SearchSpace, deadline: float
) -> dict[Candidate, Trial]:
    """Every candidate of the space (what the coordinate search is measured against)."""
    seen: dict[Candidate, Trial] = {}
    for cand in dict.fromkeys(canonical(c) for c in space.grid()):
        if time.monotonic() >= deadline:
            break
        seen[cand] = await evaluate(cand)
    return seen


def canonical(c: Candidate) -> Candidate:
    """A batch of one never waits for company: its queue delay is 0."""
    return c.with_value("delay", 0.0) if c.batch <= 1 else c


def build_space(
    server: InferenceServer, repository: Path, model: str, settings: TuneSettings
) -> SearchSpace:
    """The space for this model: its versions and backend, the core budget, its batch limit."""
    from frameserve.backends import cpu_has_bf16

    folder = repository / model
    config = load_model_config(folder / "model.yaml")
    versions = server.repository.versions_of(model)
    bf16 = settings.bf16 if settings.bf16 is not None else cpu_has_bf16()
    mv = server.model_version(model)
    limit = settings.max_batch if mv.max_batch_size > 0 else 0
    return SearchSpace(
        precisions=precisions_for(config.backend, folder, version_numbers(folder), bf16)
        if config.backend == "openvino"
        else precisions_for(config.backend, folder, versions, False),
        layouts=layouts_for(server.budget.cores),
        batches=batch_sizes(limit),
        delays=settings.delays if limit > 1 else (0.0,),
    )


def tune_model(
    repository: Path,
    model: str,
    settings: TuneSettings,
    on_trial: Callable[[Trial], None] | None = None,
    server_settings: ServerSettings | None = None,
) -> TuneResult:
    """Search, then re-measure the finalists; returns every trial and the winner (or None)."""
    check_repository_model(repository, model)
    base = read_yaml(repository / model / "model.yaml")
    ss = server_settings or ServerSettings(
        repository=repository, model_control_mode="explicit", load_models=(model,)
    )
    started = time.monotonic()
    with LocalServer(ss) as local:
        space = build_space(local.server, repository, model, settings)
        config = load_model_config(repository / model / "model.yaml")
        start = canonical(space.nearest(config, local.server.repository.versions_of(model)))
        runner = TrialRunner(local.server, model, base, settings)
        result = TuneResult(model, settings, space, start, None)
        local.call(_search(runner, space, start, settings, result, on_trial, started))
    result.seconds = time.monotonic() - started
    return result


async def _search(
    runner: TrialRunner, space: SearchSpace, start: Candidate, settings: TuneSettings,
    result: TuneResult, on_trial: Callable[[Trial], None] | None, started: float,
) -> None:  # fmt: skip
    async def evaluate(c: Candidate, rung: str = "screen") -> Trial:
        trial = await runner.evaluate(c, rung)
        result.trials.append(trial)
        if on_trial is not None:
            on_trial(trial)
        return trial

    deadline = started + settings.budget_s
    if settings.search == "grid":
        seen = await grid_search(evaluate, space, deadline)
    else:
        seen = await coordinate_search(evaluate, space, start, settings.passes, deadline)
    # The last rung: the best few again with longer windows, and the start config beside them
    # so the report's tuned-vs-start ratio is measured side by side.
    ranked = sorted(seen.values(), key=lambda t: t.score, reverse=True)
    finalists = [t.candidate for t in ranked[: settings.finalists]]
    finals = [await evaluate(c, "final") for c in finalists]
    if start not in finalists:
        await evaluate(start, "final")
    result.best = max(finals, key=lambda t: t.score) if finals else None
