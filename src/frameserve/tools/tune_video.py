"""``frameserve tune --pipeline``: decode threads, frames in flight and model settings for a
target frame rate, found on the real video pipeline in this process.

A trial is a real ``VideoRun`` over the inputs with one point's settings: the pipeline's
models reloaded with a config override (the in-process ``load_model`` that the model tuner
uses), then the run stopped once its measured window is over. The window starts after a short
warm-up; it measures frames per second and the process's CPU seconds per frame (every thread:
decoding, pre-processing, the runtimes, sinks). A point *meets* the target when its fps
reaches it; among those, the tuner prefers the least CPU per frame (the cores it leaves to
other work), and when none does, the most fps.

The search is the model tuner's coordinate search with early stopping along each line: from
what ``frameserve video run`` does today, each dimension (per model: instances x threads and
max batch size; then decode threads and frames in flight) is walked outward from the best
value so far, a direction ending at its first worse trial; at most two passes, within the
budget. The best few are then measured again, beside the start and the leader's models run
with ``video run``'s own decode threads and frames in flight (neither the pipeline file nor
``video run`` can set those two yet), in alternating rounds so that a slow spell of a shared
machine hits all of them; the winner is the best of those combined rounds.

Measured at full speed, CPU per frame is what a file or a backlog costs; a live source paced
below the pipeline's speed forms smaller batches and may cost somewhat more per frame.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from frameserve.cpu import CpuBudget, cpu_seconds
from frameserve.errors import ConfigError, FrameserveError, InvalidInput, NotFound
from frameserve.serving.config import load_model_config, read_yaml
from frameserve.serving.local import LocalServer
from frameserve.serving.repository import ModelRepository
from frameserve.serving.server import ServerSettings
from frameserve.tools.tune_report import TUNED_KEYS
from frameserve.tools.tune_space import Candidate, Precision, SearchSpace, apply, layouts_for
from frameserve.video import warm
from frameserve.video.config import VideoPipelineConfig, load_video_pipeline
from frameserve.video.decode import VideoInfo, default_decode_threads, probe
from frameserve.video.run import RunOptions, VideoRun
from frameserve.video.streams import RunSummary

MIN_FRAMES = 10  # a measured window holds at least this many frames (else: the whole clip)
BATCHES = (4, 8, 16, 32, 64)  # video batches are worth more than 1 or 2 frames


@dataclass(frozen=True)
class VideoTuneSettings:
    target_fps: float
    budget_s: float = 600.0
    trial_s: float = 3.0  # measured seconds per screening trial (3 x --window)
    final_s: float = 3.0  # ... and per finalist in each round (--final-window)
    final_rounds: int = 3
    warmup_s: float = 0.5  # run before the window opens (model warm-up, queues filling)
    max_batch: int = 16
    inflight: tuple[int, ...] = (4, 8, 16, 32)
    finalists: int = 3
    passes: int = 2


@dataclass(frozen=True)
class PipelinePoint:
    """One trial's settings: per input, decode threads and frames in flight; per model, a
    candidate of the model tuner (its precision and queue delay stay what model.yaml says)."""

    decode_threads: int
    inflight: int  # 0: what ``video run`` picks (2 x max_batch_size x instances / inputs)
    models: tuple[tuple[str, Candidate], ...]

    def model(self, name: str) -> Candidate:
        return dict(self.models)[name]

    def label(self) -> str:
        models = ", ".join(f"{m} {c.instances}x{c.threads} b{c.batch}" for m, c in self.models)
        return f"decode {self.decode_threads} inflight {self.inflight or 'auto'}; {models}"

    def value(self, dim: str) -> Any:
        if dim == "decode":
            return self.decode_threads
        if dim == "inflight":
            return self.inflight
        kind, _, model = dim.partition(":")
        return self.model(model).value(kind)

    def with_value(self, dim: str, value: Any) -> PipelinePoint:
        if dim == "decode":
            return replace(self, decode_threads=value)
        if dim == "inflight":
            return replace(self, inflight=value)
        kind, _, name = dim.partition(":")
        models = tuple((m, c.with_value(kind, value) if m == name else c) for m, c in self.models)
        return replace(self, models=models)


@dataclass(frozen=True)
class VideoSpace:
    decode_threads: tuple[int, ...]
    inflight: tuple[int, ...]
    layouts: tuple[tuple[int, int], ...]
    batches: tuple[tuple[str, tuple[int, ...]], ...]  # per model; (0,) when it cannot batch

    def dimensions(self) -> tuple[str, ...]:
        """Model settings first (the largest effect), then the decoder's."""
        per_model = [f"{kind}:{m}" for m, _ in self.batches for kind in ("layout", "batch")]
        return (*per_model, "decode", "inflight")

    def values(self, dim: str) -> tuple[Any, ...]:
        if dim == "decode":
            return self.decode_threads
        if dim == "inflight":
            return self.inflight
        kind, _, model = dim.partition(":")
        return self.layouts if kind == "layout" else dict(self.batches)[model]

    @property
    def size(self) -> int:
        n = 1
        for dim in self.dimensions():
            n *= len(self.values(dim))
        return n


@dataclass(frozen=True)
class VideoTrial:
    point: PipelinePoint
    rung: str  # "screen", "round" (one round of the finals), "final" (their rounds combined)
    fps: float
    cpu_ms_per_frame: float  # CPU (every thread, decode workers too) per frame, in the window
    cores_busy: float  # CPU seconds per wall second in the window
    frames: int  # measured frames
    feasible: bool
    inflight_used: int  # frames in flight per input the run had (resolves "auto")
    batches: tuple[tuple[str, float], ...] = ()  # mean batch size per model (whole run)
    bottleneck: str = ""  # the busiest stage of the run's profile, with its share
    whole_clip: bool = False  # the clip ended before the window: measured over all of it
    seconds: float = 0.0  # the trial's cost, reloads included
    error: str = ""

    @property
    def score(self) -> tuple[int, float]:
        """Meets the target before not; then less CPU per frame, or more fps."""
        return (1, -self.cpu_ms_per_frame) if self.feasible else (0, self.fps)

    def to_json(self) -> dict[str, Any]:
        p = self.point
        return {
            "config": p.label(),
            "decode_threads": p.decode_threads,
            "inflight": p.inflight or None,
            "inflight_used": self.inflight_used,
            "models": {m: c.settings() for m, c in p.models},
            "rung": self.rung,
            "fps": round(self.fps, 2),
            "cpu_ms_per_frame": round(self.cpu_ms_per_frame, 3),
            "cores_busy": round(self.cores_busy, 2),
            "frames": self.frames,
            "feasible": self.feasible,
            "mean_batch_size": dict(self.batches),
            "bottleneck": self.bottleneck,
            "whole_clip": self.whole_clip,
            "seconds": round(self.seconds, 2),
            "error": self.error,
        }


@dataclass(frozen=True)
class PipelinePlan:
    """A resolved ``--pipeline`` with its checked inputs."""

    name: str
    config: VideoPipelineConfig
    inputs: tuple[Path, ...]
    infos: tuple[VideoInfo, ...]


@dataclass
class VideoTuneResult:
    plan: PipelinePlan
    settings: VideoTuneSettings
    space: VideoSpace
    start: PipelinePoint
    cores: int
    best: VideoTrial | None = None
    trials: list[VideoTrial] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def screened(self) -> int:
        return len({t.point for t in self.trials if t.rung == "screen"})


def resolve_pipeline(
    spec: str, repository: Path, inputs: list[Path], target_fps: float
) -> PipelinePlan:
    """Everything checked before a model loads: the target, the pipeline, its models, inputs."""
    if not target_fps > 0:
        raise InvalidInput(f"--target-fps: expected frames per second > 0, got {target_fps:g}")
    if not inputs:
        raise InvalidInput("--input: expected at least one video, got none")
    name, config = load_video_pipeline(spec, repository)
    if not config.models:
        raise InvalidInput(f"--pipeline {spec}: expected a pipeline with models to tune, got "
                           "one with FFmpeg filters only")  # fmt: skip
    found = ModelRepository(repository, CpuBudget(1, "check"), None).model_folders()
    missing = [m for m in config.models if m not in found]
    if missing:
        raise NotFound(
            f"--pipeline {spec}: models {missing} have no folder in the repository "
            f"{repository} (expected {repository / missing[0] / 'model.yaml'}); it has {found}"
        )
    infos = tuple(probe(p) for p in inputs)  # a missing file or a non-video fails here
    return PipelinePlan(name, config, tuple(inputs), infos)


def check_writable(repository: Path, models: list[str]) -> None:
    """Refuse before tuning when a model.yaml could not be replaced afterwards."""
    for model in models:
        folder = repository / model
        if not os.access(folder, os.W_OK) or not os.access(folder / "model.yaml", os.R_OK):
            raise ConfigError(
                f"{folder / 'model.yaml'}: expected a readable file in a writable folder to "
                "write the tuned settings into (use --dry-run to only report)"
            )


def model_settings(base: dict[str, Any], candidate: Candidate) -> dict[str, Any]:
    """The tuned keys of one model's ``model.yaml`` (its version and queue delay unchanged)."""
    merged = apply(base, candidate, delays=False)
    out = {k: merged[k] for k in TUNED_KEYS if k in merged and k != "version_policy"}
    if candidate.batch == 0:
        out.pop("dynamic_batching", None)
    return out


class _Window:
    """The progress callback of a trial's run: opens the window after the warm-up, stops the
    run once it is over. Runs in the thread that called ``VideoRun.run``."""

    def __init__(
        self,
        stop: threading.Event,
        warmup_s: float,
        measure_s: float,
        cpu_time: Callable[[], float] = time.process_time,
    ) -> None:
        self._stop = stop
        self._cpu_time = cpu_time
        self._warmup_s = warmup_s
        self._measure_s = measure_s
        self._started = time.perf_counter()
        self._frames = 0
        self.first: tuple[float, int, float] | None = None  # (wall, frames, cpu) at the opening
        self.last: tuple[float, int, float] | None = None

    def __call__(self, frames: int) -> None:
        self._frames += frames
        mark = (time.perf_counter(), self._frames, self._cpu_time())
        if self.first is None:
            if mark[0] - self._started >= self._warmup_s:
                self.first = mark
            return
        self.last = mark
        elapsed, counted = mark[0] - self.first[0], mark[1] - self.first[1]
        if (elapsed >= self._measure_s and counted >= MIN_FRAMES) or elapsed >= 3 * self._measure_s:
            self._stop.set()


class PipelineTrials:
    """Runs points on one in-process server: reloads the models whose settings changed, then
    a bounded run of the pipeline over the inputs (results to a scratch folder)."""

    def __init__(
        self,
        local: LocalServer,
        plan: PipelinePlan,
        bases: dict[str, dict[str, Any]],
        settings: VideoTuneSettings,
        out: Path,
    ) -> None:
        self._local = local
        self._plan = plan
        self._bases = bases
        self._settings = settings
        self._out = out
        self._loaded: dict[str, Candidate | None] = dict.fromkeys(bases)

    def evaluate(self, point: PipelinePoint, rung: str) -> VideoTrial:
        started = time.perf_counter()
        try:
            self._load(point)
            return self._measure(point, rung, started)
        except FrameserveError as err:
            if "interrupted (Ctrl-C)" in err.message:  # VideoRun turns Ctrl-C into an error
                raise KeyboardInterrupt from err
            return VideoTrial(point, rung, 0.0, 0.0, 0.0, 0, False, point.inflight,
                              seconds=time.perf_counter() - started, error=err.message)  # fmt: skip

    def _load(self, point: PipelinePoint) -> None:
        for model, cand in point.models:
            if self._loaded[model] == cand:
                continue
            self._loaded[model] = None  # a failed load leaves the old settings serving
            config = apply(self._bases[model], cand, delays=False)
            self._local.call(self._local.server.load_model(model, json.dumps(config)))
            self._loaded[model] = cand

    def _measure(self, point: PipelinePoint, rung: str, started: float) -> VideoTrial:
        plan = self._plan
        options = RunOptions(
            out=self._out,
            decode_threads=point.decode_threads,
            inflight=point.inflight,
            summary=False,  # a trial measures the pipeline, not the summary at its end
        )
        # decoded as ``video run`` decodes (in warm workers where it would); the window below
        # leaves out the workers' start-up
        workers = warm.start(len(plan.inputs))
        try:
            run = VideoRun(
                self._local, plan.name, plan.config, list(plan.inputs), options, warm=workers
            )
            pids = [w.process.pid for w in workers if w.process.pid is not None]
            return self._window(run, point, rung, started, lambda: cpu_seconds(pids))
        finally:
            for worker in workers:
                worker.close()

    def _window(
        self,
        run: VideoRun,
        point: PipelinePoint,
        rung: str,
        started: float,
        cpu_time: Callable[[], float],
    ) -> VideoTrial:
        """Run the trial and measure its steady window (``cpu_time``: this process's CPU
        seconds and its decode workers')."""
        s = self._settings
        inflight = run.streams[0].pump.depth
        measure_s = s.trial_s if rung == "screen" else s.final_s
        window = _Window(run.stop, s.warmup_s, measure_s, cpu_time)
        cpu0, wall0 = cpu_time(), time.perf_counter()
        summary = run.run(window)
        cpu, wall = cpu_time() - cpu0, time.perf_counter() - wall0
        frames, whole = summary.frames, True
        if window.first and window.last and window.last[1] - window.first[1] >= MIN_FRAMES:
            (w0, f0, c0), (w1, f1, c1) = window.first, window.last
            frames, wall, cpu, whole = f1 - f0, w1 - w0, c1 - c0, False
        fps = frames / wall if wall > 0 else 0.0
        return VideoTrial(
            point, rung, fps, 1000 * cpu / max(1, frames), cpu / wall if wall > 0 else 0.0,
            frames, frames > 0 and fps >= s.target_fps, inflight,
            tuple(sorted(summary.batches.items())), _bottleneck(summary), whole,
            time.perf_counter() - started,
        )  # fmt: skip


def _bottleneck(summary: RunSummary) -> str:
    """The stage with the most busy seconds and its share (queue wait is waiting, not work)."""
    busy = {k: v for k, v in summary.profile.seconds.items() if k != "queue wait"}
    stage = max(busy, key=lambda k: busy[k])
    return f"{stage} {busy[stage] / (sum(busy.values()) or 1.0):.0%}"


Evaluate = Callable[[PipelinePoint], VideoTrial]


def coordinate_search(
    evaluate: Evaluate, space: VideoSpace, start: VideoTrial, passes: int, deadline: float
) -> dict[PipelinePoint, VideoTrial]:
    """One dimension at a time around the best so far; stop when a pass changes nothing."""
    seen = {start.point: start}
    best = start.point
    for _ in range(passes):
        moved = False
        for dim in space.dimensions():
            winner = _walk(evaluate, seen, best, dim, space.values(dim), deadline)
            if seen[winner].score > seen[best].score:
                best, moved = winner, True
        if not moved or time.monotonic() >= deadline:
            break
    return seen


def _walk(
    evaluate: Evaluate, seen: dict[PipelinePoint, VideoTrial], best: PipelinePoint, dim: str,
    values: tuple[Any, ...], deadline: float,
) -> PipelinePoint:  # fmt: skip
    """The line through ``best`` along ``dim``, walked outward; each direction stops at its
    first trial worse than the one before it (the early stop that makes a line cheap)."""
    here = values.index(best.value(dim))
    winner = best
    for step in (1, -1):
        previous, i = seen[best], here + step
        while 0 <= i < len(values):
            point = best.with_value(dim, values[i])
            if point not in seen:
                if time.monotonic() >= deadline:
                    return winner
                seen[point] = evaluate(point)
            trial = seen[point]
            if trial.score > seen[winner].score:
                winner = point
            if trial.score < previous.score:
                break
            previous, i = trial, i + step
    return winner


def decode_thread_counts(cores: int) -> tuple[int, ...]:
    """1, 2, 4, ... below the core budget, and the budget itself."""
    return tuple(sorted({1 << k for k in range(cores.bit_length()) if 1 << k < cores} | {cores}))


def video_batch_sizes(limit: int) -> tuple[int, ...]:
    """4, 8, 16, ... up to ``limit`` (``limit`` itself when it is smaller than 4)."""
    return tuple(b for b in BATCHES if b <= limit) or (limit,)


def _start(
    local: LocalServer, repository: Path, plan: PipelinePlan, settings: VideoTuneSettings
) -> tuple[VideoSpace, PipelinePoint]:
    """The space, and the point closest to what ``video run`` does today (inflight: auto)."""
    cores = local.server.budget.cores
    layouts = layouts_for(cores)
    batches, models = [], []
    for model in plan.config.models:
        config = load_model_config(repository / model / "model.yaml")
        versions = local.server.repository.versions_of(model)
        can_batch = local.server.model_version(model).max_batch_size > 0
        sizes = video_batch_sizes(settings.max_batch) if can_batch else (0,)
        db = config.dynamic_batching
        space = SearchSpace(
            precisions=(Precision(max(versions), config.precision or ""),),
            layouts=layouts, batches=sizes, delays=(db.max_queue_delay_ms if db else 0.0,),
        )  # fmt: skip
        batches.append((model, sizes))
        models.append((model, space.nearest(config, versions)))
    video = VideoSpace(decode_thread_counts(cores), settings.inflight, layouts, tuple(batches))
    return video, PipelinePoint(_run_threads(cores, plan), 0, tuple(models))


def tune_pipeline(
    plan: PipelinePlan,
    repository: Path,
    settings: VideoTuneSettings,
    on_trial: Callable[[VideoTrial], None] | None = None,
    server_settings: ServerSettings | None = None,
) -> VideoTuneResult:
    """Search, then re-measure the finalists; returns every trial and the winner."""
    bases = {m: read_yaml(repository / m / "model.yaml") for m in plan.config.models}
    ss = server_settings or ServerSettings(
        repository=repository, model_control_mode="explicit", load_models=tuple(bases)
    )
    started = time.monotonic()
    with LocalServer(ss) as local, tempfile.TemporaryDirectory(prefix="frameserve-tune-") as tmp:
        space, start = _start(local, repository, plan, settings)
        result = VideoTuneResult(plan, settings, space, start, local.server.budget.cores)
        runner = PipelineTrials(local, plan, bases, settings, Path(tmp))

        def record(trial: VideoTrial) -> VideoTrial:
            result.trials.append(trial)
            if on_trial is not None:
                on_trial(trial)
            return trial

        first = record(runner.evaluate(start, "screen"))
        if first.error:
            raise ConfigError(f"{plan.name}: the pipeline as configured fails: {first.error}")
        # "auto" becomes the number it stood for, so the inflight line can walk from it.
        start = result.start = replace(start, inflight=first.inflight_used)
        space = result.space = replace(
            space, inflight=tuple(sorted({*space.inflight, first.inflight_used}))
        )
        seen = coordinate_search(
            lambda p: record(runner.evaluate(p, "screen")), space, replace(first, point=start),
            settings.passes, started + settings.budget_s,
        )  # fmt: skip
        finals = [record(t) for t in _finals(runner, seen, result, on_trial)]
        result.best = max(finals, key=lambda t: t.score)
    result.seconds = time.monotonic() - started
    return result


def video_run_point(point: PipelinePoint, result: VideoTuneResult) -> PipelinePoint:
    """``point``'s models with what ``video run`` does for decode threads and frames in flight."""
    if point.models == result.start.models:
        return result.start  # its inflight is the one "auto" gave these models
    return replace(point, decode_threads=_run_threads(result.cores, result.plan), inflight=0)


def _run_threads(cores: int, plan: PipelinePlan) -> int:
    """The FFmpeg threads ``video run`` gives one input of ``plan`` by default."""
    return default_decode_threads(cores, len(plan.inputs), plan.config.filters is not None)


def _finals(
    runner: PipelineTrials,
    seen: dict[PipelinePoint, VideoTrial],
    result: VideoTuneResult,
    on_round: Callable[[VideoTrial], None] | None,
) -> list[VideoTrial]:
    """The best few, the start and the leader as ``video run`` would run it, measured again
    in alternating rounds (a slow spell of a shared machine then hits every one of them)."""
    ranked = sorted(seen.values(), key=lambda t: t.score, reverse=True)
    points = [t.point for t in ranked[: result.settings.finalists]]
    points += [result.start, video_run_point(points[0], result)]
    rounds: dict[PipelinePoint, list[VideoTrial]] = {p: [] for p in dict.fromkeys(points)}
    for _ in range(result.settings.final_rounds):
        for point, trials in rounds.items():
            trials.append(runner.evaluate(point, "round"))
            if on_round is not None:
                on_round(trials[-1])
    return [_combine(trials, result.settings.target_fps) for trials in rounds.values()]


def _combine(trials: list[VideoTrial], target_fps: float) -> VideoTrial:
    """One trial from the rounds of a point: totals of frames, wall and CPU seconds."""
    failed = next((t for t in trials if t.error), None)
    if failed is not None:
        return failed
    frames = sum(t.frames for t in trials)
    wall = sum(t.frames / t.fps for t in trials if t.fps > 0)
    cpu_ms = sum(t.cpu_ms_per_frame * t.frames for t in trials)
    fps = frames / wall if wall > 0 else 0.0
    last = trials[-1]
    return replace(
        last, rung="final", fps=fps, cpu_ms_per_frame=cpu_ms / max(1, frames),
        cores_busy=cpu_ms / 1000 / wall if wall > 0 else 0.0, frames=frames,
        feasible=frames > 0 and fps >= target_fps,
        whole_clip=any(t.whole_clip for t in trials), seconds=sum(t.seconds for t in trials),
    )  # fmt: skip
