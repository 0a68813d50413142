"""``frameserve tune``: argument parsing and printing; the work is in ``frameserve.tools.tune``."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from frameserve.cli.args import non_negative_float, positive_float


def _batch_limit(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 64:
        raise argparse.ArgumentTypeError(f"expected 1..64, got {text}")
    return value


def add_tune(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "tune",
        help="find the settings with the most throughput under a p99 target; write model.yaml",
        description="Searches precision (f32, bf16, INT8 versions), instances x threads within "
        "the core budget, max batch size and queue delay, in this process. Writes the winner "
        "into REPOSITORY/MODEL/model.yaml (the old file kept as model.yaml.<time>.bak) and a "
        "report (report.md, trials.json, pareto.png).",
    )
    p.add_argument("--repository", type=Path, default=Path("models"), help="default: ./models")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--model", help="tune a model of the repository")
    what.add_argument("--pipeline", metavar="NAME|FILE",
                      help="tune a video pipeline instead: decode threads, frames in flight and "
                           "inference instances for --target-fps on --input")  # fmt: skip
    p.add_argument("--p99-ms", type=positive_float,
                   help="model: latency target, p99 per request in ms")  # fmt: skip
    p.add_argument("--input", type=Path, action="append", default=[], metavar="VIDEO",
                   help="pipeline: a video to run (repeat for several streams)")  # fmt: skip
    p.add_argument("--target-fps", type=positive_float,
                   help="pipeline: frames per second to sustain over all inputs")  # fmt: skip
    p.add_argument("--budget-minutes", type=positive_float, default=10.0,
                   help="search minutes, finalists measured after (default 10)")  # fmt: skip
    p.add_argument("--max-batch-size", type=_batch_limit, default=16,
                   help="largest max_batch_size to try (default 16)")  # fmt: skip
    p.add_argument("--delays", type=non_negative_float, nargs="+", default=[0.0, 1.0, 2.0, 5.0],
                   metavar="MS", help="queue delays to try (default 0 1 2 5)")  # fmt: skip
    p.add_argument("--search", choices=["coordinate", "grid"], default="coordinate",
                   help="coordinate search (default) or every config (for comparison)")  # fmt: skip
    p.add_argument("--window", type=positive_float, default=1.0, metavar="SECONDS",
                   help="seconds per concurrency step, screening (default 1)")  # fmt: skip
    p.add_argument("--final-window", type=positive_float, default=3.0, metavar="SECONDS",
                   help="... and for the finalists (default 3)")  # fmt: skip
    p.add_argument("--report", type=Path, default=None, metavar="DIR",
                   help="where the report goes (default ./tune-reports/MODEL-TIME)")  # fmt: skip
    p.add_argument("--dry-run", action="store_true", help="report only; leave model.yaml as is")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="warning")


def _trial_line(t: Any) -> str:
    verdict = "ok " if t.feasible else "over" if not t.error else "fail"
    return (
        f"{t.rung:6} {t.candidate.label():30} {t.throughput:9.1f}/s  p99 {t.p99_ms:8.2f} ms  "
        f"c={t.concurrency:<3} {verdict} {t.error}"
    )


def run_tune(args: argparse.Namespace) -> int:
    from frameserve.cli import logs
    from frameserve.errors import FrameserveError
    from frameserve.serving.config import read_yaml
    from frameserve.serving.repository import version_numbers
    from frameserve.tools.tune import TuneSettings, tune_model
    from frameserve.tools.tune_report import summary, tuned_settings, write_config, write_report

    logs.configure(args.log_level, "text")
    if args.pipeline:
        from frameserve.cli.tune_video import run_video_tune

        return run_video_tune(args)
    if args.p99_ms is None:
        print("frameserve tune: --model needs --p99-ms (the latency target)", file=sys.stderr)  # noqa: T201
        return 2
    settings = TuneSettings(
        p99_ms=args.p99_ms,
        budget_s=args.budget_minutes * 60,
        max_batch=args.max_batch_size,
        delays=tuple(sorted(set(args.delays))),
        screen_s=args.window,
        final_s=args.final_window,
        search=args.search,
    )
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    report_dir = args.report or Path("tune-reports") / f"{args.model}-{stamp}"
    try:
        result = tune_model(
            args.repository, args.model, settings,
            on_trial=lambda t: print(_trial_line(t), file=sys.stderr, flush=True),  # noqa: T201
        )  # fmt: skip
        written = None
        best = result.best
        if best is not None and best.feasible and not args.dry_run:
            folder = args.repository / args.model
            base = read_yaml(folder / "model.yaml")
            versions = version_numbers(folder)
            new = tuned_settings(base, best, versions)
            header = f"{stamp}, p99 <= {args.p99_ms:g} ms, {best.throughput:.0f} inferences/s"
            written, backup = write_config(folder, new, header)
            print(f"wrote {written} (backup: {backup.name})")  # noqa: T201
        out = write_report(result, report_dir, written)
    except FrameserveError as err:
        print(f"frameserve tune: {err.message}", file=sys.stderr)  # noqa: T201
        return 1
    except KeyboardInterrupt:
        return 130
    print("\n".join(summary(result, written)))  # noqa: T201
    plot = out.plot.name if out.plot else "none: pip install 'frameserve[toolkit]'"
    print(f"report: {out.report} (trials: {out.trials.name}, plot: {plot})")  # noqa: T201
    if best is None or not best.feasible:
        print(f"frameserve tune: no configuration met p99 <= {args.p99_ms:g} ms; "  # noqa: T201
              "model.yaml unchanged (see the report for the lowest p99 measured)",
              file=sys.stderr)  # fmt: skip
        return 1
    return 0
