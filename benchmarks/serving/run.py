"""Serving benchmark: frameserve vs raw OpenVINO vs Triton (PyTriton), side by side, one run.

    .venv/bin/python benchmarks/serving/run.py [--quick] [--out benchmarks/serving/results]

For each model (conv_net, matmul_relu) and each repeat: the raw OpenVINO ceiling in-process,
then frameserve and Triton (alternating which goes first), each started fresh on free loopback
ports and loaded by perf_analyzer over gRPC and HTTP at every concurrency. Writes
``latest.json`` (every raw record) and ``latest.md`` (median tables) to ``--out``. Nothing is
asserted: machines are noisy, so the tables carry the noise (other processes' CPU) instead.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/common.py

import machine
import pytriton_env
import report
import summary
from loadgen import PROTOCOLS, LoadSettings, run_point, wait_for_quiet

from models import MODELS, BenchModel, ServingSetup, build_repository
from servers import Ports, ServerProcess

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
DEFAULT_PERF_ANALYZER = ROOT / ".tools" / "perf_analyzer" / "perf_analyzer"


@dataclass(frozen=True)
class Plan:
    """What one run measures and how long it may take."""

    repeats: int
    concurrencies: tuple[int, ...]
    load: LoadSettings
    ceiling_s: float
    quiet_wait_s: float
    deadline: float  # time.monotonic() after which remaining points are skipped
    protocols: tuple[str, ...] = PROTOCOLS  # each model runs those of these it lists
    headline_concurrency: int = 8


@dataclass
class Context:
    plan: Plan
    setup: ServingSetup
    perf_analyzer: Path
    triton: pytriton_env.PyTritonEnv
    logs: Path
    repository: Path
    notes: list[str] = field(default_factory=list)


def say(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="one repeat, concurrency 1 and 8, short")
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--repeats", type=int, help="default 3 (1 with --quick)")
    p.add_argument("--concurrency", type=int, nargs="+", help="default 1 4 8 16 (1 8 quick)")
    p.add_argument("--models", nargs="+", choices=[m.name for m in MODELS])
    p.add_argument(
        "--protocols", nargs="+", choices=PROTOCOLS,
        help="default: every protocol a model lists (grpc-shm for conv_net only)",
    )  # fmt: skip
    p.add_argument("--precision", choices=["f32", "bf16"], default="f32")
    p.add_argument("--perf-analyzer", type=Path, default=DEFAULT_PERF_ANALYZER)
    p.add_argument("--max-minutes", type=float, default=75.0, help="skip points after this")
    p.add_argument(
        "--quiet-wait", type=float, default=15.0, metavar="SECONDS",
        help="before each point, wait up to this long for other processes to go idle",
    )  # fmt: skip
    return p.parse_args(argv)


def make_plan(args: argparse.Namespace) -> Plan:
    quick = args.quick
    return Plan(
        repeats=args.repeats or (1 if quick else 3),
        concurrencies=tuple(args.concurrency or ((1, 8) if quick else (1, 4, 8, 16))),
        load=LoadSettings(window_ms=1000 if quick else 2000),
        ceiling_s=2.0 if quick else 5.0,
        quiet_wait_s=min(args.quiet_wait, 5.0) if quick else args.quiet_wait,
        deadline=time.monotonic() + args.max_minutes * 60,
        protocols=tuple(args.protocols or Plan.protocols),
    )


def run_ceiling(ctx: Context, model_file: Path, batch: int, repeat: int) -> dict:
    """Raw OpenVINO in a child process (its runtime threads end with it)."""
    cmd = [
        sys.executable, str(HERE / "ceiling.py"), "--model-file", str(model_file),
        "--batch", str(batch), "--seconds", str(ctx.plan.ceiling_s),
        "--properties", json.dumps(ctx.setup.openvino_properties()),
    ]  # fmt: skip
    record: dict = {"batch": batch, "repeat": repeat}
    wait_for_quiet(ctx.plan.quiet_wait_s, None)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)
        record.update(json.loads(proc.stdout.strip().splitlines()[-1]))
    except (subprocess.SubprocessError, ValueError, IndexError) as err:
        record["error"] = str(err)[:300]
    say(f"  raw OpenVINO batch {batch}: {_fmt(record.get('infer_per_sec'))} infer/s")
    return record


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def frameserve_server_command(repository: Path, ports: Ports) -> list[str]:
    exe = Path(sys.executable).parent / "frameserve"
    cmd = [str(exe)] if exe.is_file() else [sys.executable, "-m", "frameserve.cli.main"]
    return cmd + [
        "serve", "--repository", str(repository), "--host", "127.0.0.1",
        "--http-port", str(ports.http), "--grpc-port", str(ports.grpc),
        "--log-format", "text", "--log-level", "warning",
    ]  # fmt: skip


def frameserve_server(ctx: Context, model: BenchModel, ports: Ports) -> ServerProcess:
    cmd = frameserve_server_command(ctx.repository / model.name, ports)
    return ServerProcess("frameserve", cmd, ports, model.name, ctx.logs / "frameserve.log")


def triton_server(ctx: Context, model: BenchModel, ports: Ports) -> ServerProcess:
    setup = ctx.setup
    cmd = [
        str(ctx.triton.python), str(pytriton_env.SERVER_SCRIPT),
        "--model-file", str(model.model_file(ctx.repository / model.name)),
        "--name", model.name, "--max-batch-size", str(model.max_batch_size),
        "--queue-delay-us", str(round(model.max_queue_delay_ms * 1000)),
        "--preferred", *map(str, model.preferred_batch_sizes),
        "--instances", str(setup.instances), "--threads", str(setup.total_threads),
        "--precision", setup.precision, "--http-threads", str(setup.total_threads),
        "--http-port", str(ports.http), "--grpc-port", str(ports.grpc),
    ]  # fmt: skip
    env = ctx.triton.environment()
    return ServerProcess("triton", cmd, ports, model.name, ctx.logs / "triton.log", env)


def load_server(
    ctx: Context, server: ServerProcess, model: BenchModel, record: dict, label: str
) -> None:
    """Every protocol x concurrency point against a started server."""
    for proto in protocols_of(ctx.plan, model):
        for conc in ctx.plan.concurrencies:
            if time.monotonic() > ctx.plan.deadline:
                record["skipped"].append(f"{proto} c={conc}: --max-minutes reached")
                continue
            wait_for_quiet(ctx.plan.quiet_wait_s, server)
            point = run_point(ctx.perf_analyzer, server, proto, conc, ctx.plan.load, ctx.logs)
            record["points"].append(point.to_dict())
            say(
                f"  {label} {proto} c={conc}: {_fmt(point.throughput)} infer/s, "
                f"p50 {_fmt(point.p50_ms, 2)} ms, p99 {_fmt(point.p99_ms, 2)} ms, "
                f"batch {_fmt(point.avg_batch, 2)}, client {_fmt(point.client_cpu_s, 2)} CPU-s"
                + (f" ERROR {point.error}" if point.error else "")
            )


def protocols_of(plan: Plan, model: BenchModel) -> tuple[str, ...]:
    return tuple(p for p in model.protocols if p in plan.protocols)


def start_server(
    ctx: Context, side: str, model: BenchModel, record: dict, attempts: int = 3
) -> ServerProcess | None:
    """A ready server, or None (error recorded) after ``attempts`` failed starts.

    Retrying is for PyTriton 0.7.0: its second instance connects to the first instance's
    handshake unix socket as soon as the socket file exists, which is before the first one
    listens, so under load a start can fail with ConnectionRefusedError in model.py.
    """
    make = frameserve_server if side == "frameserve" else triton_server
    record["failed_starts"] = []
    for _ in range(attempts):
        server = make(ctx, model, Ports.pick())
        try:
            record["startup_s"] = server.start()
            return server
        except (RuntimeError, TimeoutError, OSError) as err:
            record["failed_starts"].append(str(err))
            say(f"  {side}: start failed: {err}")
            server.stop()
    record["error"] = f"{attempts} starts failed: {record['failed_starts'][-1]}"
    return None


def measure_server(ctx: Context, side: str, model: BenchModel, repeat: int) -> dict:
    """Start one server fresh, record start-up and idle memory, load it, stop it."""
    record: dict = {"repeat": repeat, "points": [], "skipped": [], "error": None}
    server = start_server(ctx, side, model, record)
    if server is None:
        return record
    try:
        time.sleep(1.0)  # let start-up work (warm-up, logging) settle before idle memory
        record["rss_idle"], record["pss_idle"] = server.rss_bytes(), server.pss_bytes()
        record["version"] = machine.server_version(server.ports.url("http"))
        rss_mib = record["rss_idle"] / 2**20
        say(f"  {side}: ready in {record['startup_s']:.2f} s, RSS {rss_mib:.0f} MiB")
        load_server(ctx, server, model, record, side)
        record["rss_idle_after_load"] = server.rss_bytes()
    except (RuntimeError, TimeoutError, OSError) as err:
        record["error"] = str(err)
        say(f"  {side}: {err}")
    finally:
        record["exit_code"] = server.stop()
    return record


def bench_model(ctx: Context, model: BenchModel) -> dict:
    """All repeats for one model, then the raw ceiling at the batch sizes the servers reached."""
    model_file = build_repository(ctx.repository / model.name, model, ctx.setup)
    result: dict = {
        "config": {**asdict(model), "build": model.build.__name__},
        "servers": {side: [] for side in summary.SIDES},
        "ceiling": [],
    }
    for repeat in range(ctx.plan.repeats):
        say(f"[{model.name}] repeat {repeat + 1}/{ctx.plan.repeats}")
        for batch in sorted({1, model.max_batch_size}):
            result["ceiling"].append(run_ceiling(ctx, model_file, batch, repeat))
        sides = summary.SIDES if repeat % 2 == 0 else summary.SIDES[::-1]  # cancel drift
        for side in sides:
            result["servers"][side].append(measure_server(ctx, side, model, repeat))
    for batch in sorted(reached_batches(result, model, ctx.plan) - {1, model.max_batch_size}):
        say(f"[{model.name}] raw OpenVINO at batch {batch}, the batch the servers reached")
        for repeat in range(ctx.plan.repeats):
            result["ceiling"].append(run_ceiling(ctx, model_file, batch, repeat))
    return result


def reached_batches(result: dict, model: BenchModel, plan: Plan) -> set[int]:
    """Whole batch sizes the servers averaged at the headline concurrency."""
    found = set()
    for side in summary.SIDES:
        for point in summary.points_of(result, side):
            if point["ok"] and point["concurrency"] == plan.headline_concurrency:
                batch = summary.reached_batch(point["avg_batch"], model.max_batch_size)
                if batch is not None:
                    found.add(batch)
    return found


def command_line() -> str:
    """The command as typed from the project root."""
    exe = Path(sys.executable)
    shown = exe.relative_to(ROOT) if exe.is_relative_to(ROOT) else exe
    script = Path(sys.argv[0]).resolve()
    script_shown = script.relative_to(ROOT) if script.is_relative_to(ROOT) else script
    return shlex.join([str(shown), str(script_shown), *sys.argv[1:]])


def write_results(out: Path, results: dict) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "latest.json", out / "latest.md"
    json_path.write_text(json.dumps(results, indent=1, default=str) + "\n")
    md_path.write_text(report.render(results))
    return json_path, md_path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = make_plan(args)
    if not args.perf_analyzer.is_file():
        say(f"perf_analyzer not found at {args.perf_analyzer}: run `make perf-analyzer`")
        return 2
    started = dt.datetime.now(dt.UTC)
    t0 = time.monotonic()
    triton = pytriton_env.ensure(log=say)
    logs = args.out / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="frameserve-bench-") as tmp:
        ctx = Context(plan, ServingSetup(precision=args.precision), args.perf_analyzer,
                      triton, logs, Path(tmp))  # fmt: skip
        results = {
            "command": command_line(),
            "started": started.isoformat(timespec="seconds"),
            "machine": machine.machine_facts(ROOT, args.perf_analyzer),
            "pytriton_env": triton.versions,
            "plan": {**asdict(plan), "deadline": None},
            "setup": {**asdict(ctx.setup), "openvino": ctx.setup.openvino_properties()},
            "models": {},
        }
        chosen = [m for m in MODELS if not args.models or m.name in args.models]
        for model in chosen:
            raw = bench_model(ctx, model)
            protocols = protocols_of(plan, model)
            summed = summary.summarize(raw, protocols, plan.headline_concurrency)
            results["models"][model.name] = {**raw, "summary": summed}
    results["duration_s"] = round(time.monotonic() - t0, 1)
    json_path, md_path = write_results(args.out, results)
    sys.stdout.write(md_path.read_text())
    say(f"wrote {json_path} and {md_path} in {results['duration_s'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
