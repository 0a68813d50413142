"""``frameserve bench``: arguments and printing; the work is in ``frameserve.tools.bench``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from frameserve.cli.args import non_negative_float, positive_float, positive_int


def add_bench(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "bench",
        help="measure latency and throughput of a model (in-process or a running server)",
        description="Closed-loop concurrency sweep, open-loop request-rate sweep and batch-size "
        "sweep. Throughput is inferences/s (requests x batch size); latencies are per request.",
    )
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--repository", type=Path, help="load the model in this process")
    where.add_argument("--url", help="a running server: http://HOST:PORT or grpc://HOST:PORT")
    p.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                   type=_header,
                   help="with --url: send this HTTP header (gRPC metadata) with every request, "
                        "e.g. 'Authorization: Bearer SECRET'; repeatable")  # fmt: skip
    p.add_argument("--model", required=True)
    p.add_argument("--version", default="", help="default: the newest ready version")
    p.add_argument("--concurrency", type=positive_int, nargs="+", default=[],
                   help="closed loop: requests kept in flight (several = a sweep)")  # fmt: skip
    p.add_argument("--request-rate", type=positive_float, nargs="+", default=[],
                   help="open loop: requests per second, constant spacing")  # fmt: skip
    p.add_argument("--batch-size", type=positive_int, nargs="+", default=[1])
    p.add_argument("--duration", type=positive_float, default=5.0, metavar="SECONDS",
                   help="measured window per point (default 5)")  # fmt: skip
    p.add_argument("--warmup", type=non_negative_float, default=1.0, metavar="SECONDS",
                   help="load before each window that is not measured (default 1)")  # fmt: skip
    p.add_argument("--shape", action="append", default=[], metavar="NAME:D1,D2,...",
                   help="dims (without batch) for an input the model leaves open")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print a JSON array, one object a point")
    p.add_argument("--plot", type=Path, metavar="FILE.png",
                   help="latency and throughput against the swept parameter")  # fmt: skip
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="warning")


HEADER = (
    f"{'batch':>5} {'load':>14} {'infer/s':>9} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} "
    f"{'queue ms':>8} {'compute ms':>10} {'batch~':>6} {'client cpu':>10} {'errors':>6}"
)


def _row(p: Any) -> str:
    load = f"c={p.concurrency}" if p.concurrency is not None else f"r={p.request_rate:g}/s"
    return (
        f"{p.batch_size:>5} {load:>14} {p.throughput:>9.1f} {p.p50_ms:>8.2f} {p.p90_ms:>8.2f} "
        f"{p.p99_ms:>8.2f} {p.server_queue_ms:>8.2f} {p.server_compute_ms:>10.2f} "
        f"{p.server_mean_batch:>6.2f} {p.client_cpu_cores:>9.2f}c {p.errors:>6}"
    )


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip() or not value.strip():
        raise argparse.ArgumentTypeError(f"expected 'NAME: VALUE', got {text!r}")
    return name.strip(), value.strip()


def run_bench(args: argparse.Namespace) -> int:
    from frameserve.cli import logs
    from frameserve.errors import FrameserveError
    from frameserve.tools.bench import BenchSettings, bench_repository, bench_url, parse_shape
    from frameserve.tools.plots import plot_bench

    logs.configure(args.log_level, "text")
    try:
        settings = BenchSettings(
            concurrency=tuple(args.concurrency),
            request_rate=tuple(args.request_rate),
            batch_size=tuple(args.batch_size),
            duration_s=args.duration,
            warmup_s=args.warmup,
            shapes=dict(parse_shape(s) for s in args.shape),
        )
        shown: list[Any] = []

        def show(point: Any) -> None:
            if not args.json:
                if not shown:
                    print(HEADER)  # noqa: T201
                print(_row(point), flush=True)  # noqa: T201
            shown.append(point)

        if args.url:
            headers = tuple(args.header)
            points = bench_url(args.url, args.model, settings, args.version, show, headers)
        else:
            if not args.repository.is_dir():
                raise FrameserveError(f"--repository {args.repository}: not a folder")
            points = bench_repository(args.repository, args.model, settings, args.version, show)
    except FrameserveError as err:
        print(f"frameserve bench: {err.message}", file=sys.stderr)  # noqa: T201
        return 1
    except KeyboardInterrupt:
        return 130
    if args.json:
        print(json.dumps([p.to_json() for p in points], indent=1))  # noqa: T201
    else:
        _footnotes(points, bool(args.url))
    if args.plot:
        where = "in-process" if args.repository else args.url
        plot_bench(points, args.plot, f"{args.model} ({where})")
        print(f"plot: {args.plot}", file=sys.stderr)  # noqa: T201
    return 0 if all(p.errors == 0 for p in points) else 1


def _footnotes(points: list[Any], remote: bool) -> None:
    failed = [p for p in points if p.errors]
    for p in failed:
        print(f"errors at batch {p.batch_size}: {p.errors}, first: {p.first_error}")  # noqa: T201
    if not all(p.counts_agree for p in points):
        print("note: the server counted other requests too (another client?)")  # noqa: T201
    who = "the load generator" if remote else "this process (server and load generator)"
    print(f"client cpu: cores used by {who}")  # noqa: T201
