"""``frameserve tune --pipeline``: the video-pipeline half of ``tune``: arguments checked,
trials printed, model.yaml written, the report (report.md, trials.json); the search is in
``frameserve.tools.tune_video``."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from frameserve.tools.tune_video import VideoTrial, VideoTuneResult


def _trial_line(t: VideoTrial) -> str:
    verdict = "fail" if t.error else "ok  " if t.feasible else "slow"
    note = t.error or ("(whole clip)" if t.whole_clip else "")
    return (
        f"{t.rung:9} {t.point.label():48} {t.fps:8.1f} fps  "
        f"{t.cpu_ms_per_frame:7.2f} CPU ms/frame  {verdict} {note}"
    )


def run_video_tune(args: argparse.Namespace) -> int:
    from frameserve.errors import FrameserveError
    from frameserve.tools.tune_video import (
        VideoTuneSettings,
        check_writable,
        resolve_pipeline,
        tune_pipeline,
    )
    from frameserve.video.streams import describe_input

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)  # noqa: T201

    if not args.input:
        say("frameserve tune: --pipeline needs --input VIDEO (repeat it for several streams)")
        return 2
    if args.target_fps is None:
        say("frameserve tune: --pipeline needs --target-fps (frames per second over all inputs)")
        return 2
    settings = VideoTuneSettings(
        target_fps=args.target_fps,
        budget_s=args.budget_minutes * 60,
        trial_s=3 * args.window,
        final_s=args.final_window,
        warmup_s=min(1.0, args.window / 2),
        max_batch=args.max_batch_size,
    )
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    try:
        plan = resolve_pipeline(args.pipeline, args.repository, args.input, args.target_fps)
        for info in plan.infos:
            say(describe_input(info))
        if not args.dry_run:
            check_writable(args.repository, plan.config.models)
        report_dir = args.report or Path("tune-reports") / f"{plan.name}-{stamp}"
        result = tune_pipeline(
            plan, args.repository, settings, on_trial=lambda t: say(_trial_line(t))
        )
        best, written = result.best, []
        if best is not None and best.feasible and not args.dry_run:
            written = _write_models(args.repository, result, stamp)
        report, trials = write_video_report(result, report_dir, written)
    except FrameserveError as err:
        say(f"frameserve tune: {err.message}")
        return 1
    except KeyboardInterrupt:
        return 130
    print("\n".join(summary(result, written)))  # noqa: T201
    print(f"report: {report} (trials: {trials.name})")  # noqa: T201
    if best is None or not best.feasible:
        fastest = f"{best.fps:.1f} fps" if best is not None else "nothing ran"
        say(f"frameserve tune: no configuration of {plan.name} reached --target-fps "
            f"{args.target_fps:g} on this machine (the fastest: {fastest}); model.yaml "
            "unchanged (see the report)")  # fmt: skip
        return 1
    return 0


def _write_models(repository: Path, result: VideoTuneResult, stamp: str) -> list[Path]:
    """Each model's tuned settings into its model.yaml (the old file kept as a backup)."""
    from frameserve.serving.config import read_yaml
    from frameserve.tools.tune_report import write_config
    from frameserve.tools.tune_video import model_settings

    best = result.best
    assert best is not None
    header = (
        f"{stamp}, pipeline {result.plan.name} >= {result.settings.target_fps:g} fps: "
        f"{best.fps:.0f} fps, {best.cpu_ms_per_frame:.2f} CPU ms/frame"
    )
    written = []
    for model, candidate in best.point.models:
        folder = repository / model
        new = model_settings(read_yaml(folder / "model.yaml"), candidate)
        path, backup = write_config(folder, new, header)
        print(f"wrote {path} (backup: {backup.name})")  # noqa: T201
        written.append(path)
    return written


def write_video_report(
    result: VideoTuneResult, folder: Path, written: list[Path]
) -> tuple[Path, Path]:
    """report.md and trials.json in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    trials = folder / "trials.json"
    trials.write_text(json.dumps([t.to_json() for t in result.trials], indent=1), encoding="utf-8")
    report = folder / "report.md"
    report.write_text(markdown(result, written), encoding="utf-8")
    return report, trials


def markdown(result: VideoTuneResult, written: list[Path]) -> str:
    target = result.settings.target_fps
    lines = [f"# frameserve tune: pipeline {result.plan.name}", "", *summary(result, written)]
    lines += ["", "| config | rung | fps | CPU ms/frame | cores busy | cores at target | "
              "mean batch | meets target | busiest stage | note |",
              "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    order = {"final": 0, "screen": 1}
    for t in sorted(result.trials, key=lambda t: (order[t.rung], -t.score[0], -t.score[1])):
        batches = ", ".join(f"{m} {b:.1f}" for m, b in t.batches)
        note = t.error or ("whole clip" if t.whole_clip else "")
        lines.append(
            f"| {t.point.label()} | {t.rung} | {t.fps:.1f} | {t.cpu_ms_per_frame:.2f} | "
            f"{t.cores_busy:.2f} | {target * t.cpu_ms_per_frame / 1000:.2f} | {batches} | "
            f"{'yes' if t.feasible else 'no'} | {t.bottleneck} | {note} |"
        )
    return "\n".join(lines) + "\n"


def summary(result: VideoTuneResult, written: list[Path]) -> list[str]:
    """The report's bullet points: target, space, cost, then what came out."""
    s, space, plan = result.settings, result.space, result.plan
    inputs = ", ".join(p.name for p in plan.inputs)
    return [
        f"- target: >= {s.target_fps:g} fps over {len(plan.inputs)} input(s) ({inputs}); "
        f"{result.cores} cores; budget {s.budget_s / 60:g} min, used {result.seconds / 60:.1f} min",
        f"- space: decode threads {list(space.decode_threads)}, frames in flight "
        f"{list(space.inflight)}, layout (instances x threads) {list(space.layouts)}, batch "
        f"{dict(space.batches)}: {space.size} configs; screened {result.screened}",
        "- fps: frames the pipeline processed per second; CPU: process CPU seconds (every "
        "thread) per frame; cores at target: target fps x CPU per frame",
        *_outcome(result),
        "- model.yaml: " + (", ".join(f"written: {p}" for p in written) or "not written"),
    ]


def _outcome(result: VideoTuneResult) -> list[str]:
    """The winner, the start beside it, and the winner as ``video run`` would run it."""
    from frameserve.tools.tune_video import video_run_point

    best, target = result.best, result.settings.target_fps
    if best is None:
        return []

    def measured(t: VideoTrial) -> str:
        cores = target * t.cpu_ms_per_frame / 1000
        return (
            f"{t.fps:.1f} fps, {t.cpu_ms_per_frame:.2f} CPU ms/frame ({cores:.2f} cores at target)"
        )

    lines = [
        f"- chosen: **{best.point.label()}**: {measured(best)}"
        if best.feasible
        else f"- no configuration reached {target:g} fps; the fastest: {best.point.label()}: "
        f"{measured(best)}; nothing was written"
    ]
    by_rung = {(t.rung, t.point): t for t in result.trials}
    start = by_rung.get(("final", result.start))
    if start is not None and start.point != best.point:
        lines.append(f"- start (what `video run` does today): {measured(start)}")
    as_run = by_rung.get(("final", video_run_point(best.point, result)))
    if as_run is not None and as_run.point != best.point:
        verdict = "meets" if as_run.feasible else "MISSES"
        lines.append(
            f"- the chosen models with `video run`'s own decode threads ({result.cores}) and "
            f"frames in flight ({as_run.inflight_used}): {measured(as_run)}: {verdict} the target"
        )
    p = best.point
    if as_run is not None and as_run.point == best.point:
        lines.append(
            f"- decode threads {p.decode_threads}, frames in flight {best.inflight_used} per "
            "input: what `frameserve video run` does already"
        )
        return lines
    lines.append(
        f"- decode threads {p.decode_threads}, frames in flight {p.inflight or best.inflight_used} "
        "per input: run with `frameserve video run --decode-threads "
        f"{p.decode_threads} --inflight {p.inflight or best.inflight_used}` (the pipeline file "
        "has no key for them; in-process callers set `RunOptions`)"
    )
    return lines
