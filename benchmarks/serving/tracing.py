"""The cost of OpenTelemetry tracing: frameserve with tracing off and on, side by side, one run.

    .venv/bin/python benchmarks/serving/tracing.py [--repeats 3] [--max-minutes 8]

The serving benchmark's ``matmul_relu`` (per-request overhead-bound, so tracing's cost shows
the most) is served twice per repeat, fresh each time and in alternating order: without
tracing, and with ``--trace-otlp-endpoint`` pointing at an OTLP/HTTP receiver in this process
that reads and discards every export (sample rate 1.0: every request traced, exported through
the SDK's batch processor). perf_analyzer loads each at one concurrency over gRPC and HTTP.
Writes ``results/tracing.md`` (medians over repeats) and ``results/tracing.json``. Nothing is
asserted: the machine is shared, so the table says how noisy it was.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/common.py

from aiohttp import web
from loadgen import SideBySide, measure_side_by_side, median
from run import DEFAULT_PERF_ANALYZER, frameserve_server_command

from models import MODELS, ServingSetup, build_repository
from servers import Ports, ServerProcess, free_port

HERE = Path(__file__).resolve().parent
MODEL = next(m for m in MODELS if m.name == "matmul_relu")
VARIANTS = ("off", "on", "1%")  # tracing off; every request traced; 1 in 100 sampled
SAMPLE_RATES = {"on": "1.0", "1%": "0.01"}


class OtlpSink:
    """An OTLP/HTTP traces receiver on a loopback port that counts and discards exports."""

    def __init__(self) -> None:
        self.port = free_port()
        self.exports = 0
        self.bytes = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name="otlp-sink", daemon=True)
        self._started = threading.Event()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _traces(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.exports += 1
        self.bytes += len(body)
        # An empty ExportTraceServiceResponse: everything accepted.
        return web.Response(body=b"", content_type="application/x-protobuf")

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_post("/v1/traces", self._traces)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        self._loop.run_until_complete(site.start())
        self._started.set()
        self._loop.run_forever()

    def __enter__(self) -> OtlpSink:
        self._thread.start()
        self._started.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def _server(repo: Path, variant: str, sink: OtlpSink, logs: Path) -> ServerProcess:
    ports = Ports.pick()
    cmd = frameserve_server_command(repo, ports)
    if variant in SAMPLE_RATES:
        cmd += ["--trace-otlp-endpoint", sink.url, "--trace-sample-rate", SAMPLE_RATES[variant]]
    name = variant.replace("%", "pct")
    return ServerProcess(f"frameserve-{name}", cmd, ports, MODEL.name, logs / f"{name}.log")


def _measure(args: argparse.Namespace, repo: Path, sink: OtlpSink, logs: Path) -> list[dict]:
    settings = SideBySide(
        args.perf_analyzer, logs, args.repeats, args.concurrency, args.max_minutes
    )
    return measure_side_by_side(
        VARIANTS, lambda variant: _server(repo, variant, sink, logs), lambda _v, _p: [],
        args.protocols, settings,
    )  # fmt: skip


def _report(records: list[dict], args: argparse.Namespace, sink: OtlpSink) -> str:
    lines = [
        "# Tracing cost: frameserve with OpenTelemetry tracing off and on",
        "",
        f"Run {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC by `benchmarks/serving/tracing.py`: "
        f"`{MODEL.name}` ({MODEL.description}), perf_analyzer at concurrency "
        f"{args.concurrency}, medians over {args.repeats} repeats (each a fresh server, order "
        "alternating). *on*: `--trace-otlp-endpoint` to an OTLP/HTTP receiver in the benchmark "
        "process that discards what it gets, every request sampled (each request: a request "
        "span and queue, batch and inference spans); *1%*: the same with `--trace-sample-rate "
        "0.01`. The machine has 2 cores shared with other "
        "work: `other cores` is what other processes used just before each point.",
        "",
        "| protocol | tracing | infer/s | p50 ms | p99 ms | server CPU s | other cores | n |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    ratios = []
    for protocol in args.protocols:
        med: dict[str, tuple[float | None, float | None]] = {}
        for variant in VARIANTS:
            rows = [
                r for r in records
                if r["protocol"] == protocol and r["variant"] == variant and r["ok"]
            ]  # fmt: skip
            tp, p50, p99 = (
                median([r[k] for r in rows]) for k in ("throughput", "p50_ms", "p99_ms")
            )
            cpu, other = (median([r[k] for r in rows]) for k in ("server_cpu_s", "other_cores"))
            med[variant] = (tp, p99)
            cells = [_f(tp), _f(p50, 2), _f(p99, 2), _f(cpu, 2), _f(other, 2), str(len(rows))]
            lines.append(f"| {protocol} | {variant} | " + " | ".join(cells) + " |")
        tp_off, p99_off = med["off"]
        for variant in SAMPLE_RATES:
            tp_on, p99_on = med[variant]
            if tp_off and tp_on and p99_off and p99_on:
                ratios.append(
                    f"- {protocol}: throughput with tracing {variant} = {tp_on / tp_off:.2f} x "
                    f"off; p99 = {p99_on / p99_off:.2f} x off"
                )
    lines += ["", *ratios, "", f"OTLP exports received: {sink.exports} ({sink.bytes} bytes)."]
    return "\n".join(lines) + "\n"


def _f(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--protocols", nargs="+", default=["grpc", "http"])
    p.add_argument("--max-minutes", type=float, default=8.0, help="skip what is left after")
    p.add_argument("--perf-analyzer", type=Path, default=DEFAULT_PERF_ANALYZER)
    p.add_argument("--out", type=Path, default=HERE / "results")
    args = p.parse_args()
    if not args.perf_analyzer.is_file():
        print(f"perf_analyzer not found at {args.perf_analyzer}: run `make perf-analyzer`")  # noqa: T201
        return 2
    with tempfile.TemporaryDirectory(prefix="fs-tracing-") as tmp, OtlpSink() as sink:
        repo = Path(tmp) / "repo"
        build_repository(repo, MODEL, ServingSetup())
        records = _measure(args, repo, sink, Path(tmp) / "logs")
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "tracing.json").write_text(json.dumps(records, indent=1) + "\n")
        (args.out / "tracing.md").write_text(_report(records, args, sink))
    print((args.out / "tracing.md").read_text())  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
