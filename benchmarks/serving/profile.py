"""Where a loaded server's CPU goes: per thread, per second, with the load generator beside it.

    .venv/bin/python benchmarks/serving/profile.py [--model conv_net] [--protocol grpc]
        [--concurrency 8] [--seconds 10] [--py-spy]

Starts frameserve on one benchmark model (the same repository and settings as ``run.py``),
drives it with perf_analyzer at one concurrency, and over a window in the middle of the load
reads every thread's CPU time and context switches from ``/proc``, and perf_analyzer's. With
``--py-spy`` it also samples the server's Python stacks (py-spy, non-blocking) and splits the
event loop's samples into frameserve's own code and the rest (uvloop, grpcio, uvicorn: C code
and library Python). Prints a markdown report; nothing is asserted.

The question it answers: of the machine's cores, how much went to the model (OpenVINO's
stream threads), how much to serving, how much to the client, and how much sat idle.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/common.py

from loadgen import PROTOCOLS, LoadSettings, perf_analyzer_command
from run import DEFAULT_PERF_ANALYZER, frameserve_server_command

from models import MODELS, ServingSetup, build_repository
from servers import Ports, ServerProcess

TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class ThreadSample:
    name: str
    cpu_ticks: int
    voluntary: int
    involuntary: int


def read_threads(pid: int) -> dict[int, ThreadSample]:
    """CPU ticks and context switches of every thread of ``pid``."""
    out: dict[int, ThreadSample] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
            status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
        except OSError:  # the thread ended between listdir and read
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        switches = [
            int(re.search(rf"^{kind}_ctxt_switches:\s+(\d+)", status, re.M).group(1))  # type: ignore[union-attr]
            for kind in ("voluntary", "nonvoluntary")
        ]
        out[int(tid)] = ThreadSample(name, int(fields[11]) + int(fields[12]), *switches)
    return out


def process_ticks(pid: int) -> int:
    """User + system ticks of every thread of ``pid`` (perf_analyzer)."""
    return sum(t.cpu_ticks for t in read_threads(pid).values())


def py_spy_names(raw: Path) -> dict[int, str]:
    """Thread id -> Python thread name, from py-spy's raw output."""
    names: dict[int, str] = {}
    for line in raw.read_text().splitlines():
        m = re.match(r"thread \((\d+)\): ([^;]+);", line)
        if m:
            names[int(m.group(1))] = m.group(2).strip()
    return names


def loop_split(raw: Path) -> Counter[str]:
    """The event-loop thread's samples by who runs: frameserve, library Python, or C.

    Everything on that thread runs as a callback of uvloop's C loop (under ``asyncio.run``), so
    only the frames above that entry tell who is working: any frameserve frame makes the sample
    frameserve's (with what it calls); no Python frame at all means C (uvloop, grpcio's Cython
    core, socket syscalls).
    """
    split: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if "MainThread" not in frames[0]:
            continue
        entry = next((i for i, f in enumerate(frames) if f.startswith("run (asyncio/runners")), 0)
        above = frames[entry + 1 :]
        if any("frameserve/" in f for f in above):
            split["frameserve"] += int(count)
        elif above:
            split["library Python"] += int(count)
        else:
            split["C"] += int(count)
    return split


def label(tid: int, pid: int, sample: ThreadSample, names: dict[int, str], cores: float) -> str:
    if tid == pid:
        return "main: event loop (HTTP, gRPC handlers, batcher)"
    if tid in names:
        return f"Python thread {names[tid]!r}"
    if sample.name == "event_engine":
        return "gRPC C-core I/O (event_engine)"
    if cores > 0.25:
        return "OpenVINO stream thread (model compute)"
    return "other thread (Python pool, gRPC poller, uvloop; --py-spy names Python ones)"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", choices=[m.name for m in MODELS], default="conv_net")
    p.add_argument("--protocol", choices=PROTOCOLS, default="grpc")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--seconds", type=float, default=10.0, help="the measured window")
    p.add_argument("--py-spy", action="store_true", help="also sample Python stacks")
    p.add_argument("--perf-analyzer", type=Path, default=DEFAULT_PERF_ANALYZER)
    args = p.parse_args(argv)
    if not args.perf_analyzer.is_file():
        sys.stderr.write(
            f"perf_analyzer not found at {args.perf_analyzer}: run `make perf-analyzer`\n"
        )
        return 2
    model = next(m for m in MODELS if m.name == args.model)
    py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if args.py_spy and py_spy is None:
        sys.stderr.write("py-spy is not in this venv: `make setup` installs the dev extras\n")
        return 2
    with tempfile.TemporaryDirectory(prefix="frameserve-profile-") as tmp:
        work = Path(tmp)
        build_repository(work / "repo", model, ServingSetup())
        ports = Ports.pick()
        cmd = frameserve_server_command(work / "repo", ports)
        server = ServerProcess("frameserve", cmd, ports, model.name, work / "server.log")
        server.start()
        try:
            report = profile(args, server, work, py_spy)
        finally:
            server.stop()
    sys.stdout.write(report)
    return 0


def profile(args: argparse.Namespace, server: ServerProcess, work: Path, py_spy: str | None) -> str:
    window = args.seconds
    # three windows (perf_analyzer's minimum) that outlast the sampled span on both sides
    load = LoadSettings(window_ms=int((window + 6.0) * 1000 / 3), max_windows=3)
    cmd = perf_analyzer_command(
        args.perf_analyzer, args.model, server.ports.url(args.protocol), args.protocol,
        args.concurrency, load, work / "pa.csv",
    )  # fmt: skip
    client = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(4.0)  # past warm-up
        spy = None
        raw = work / "py-spy.txt"
        if args.py_spy and py_spy:
            spy = subprocess.Popen(
                [py_spy, "record", "-p", str(server.pid), "-d", str(int(window)), "-r", "100",
                 "--nonblocking", "--threads", "-f", "raw", "-o", str(raw)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        before, pa0, t0 = read_threads(server.pid), process_ticks(client.pid), time.monotonic()
        time.sleep(window)
        after, pa1 = read_threads(server.pid), process_ticks(client.pid)
        elapsed = time.monotonic() - t0
        if spy is not None:
            spy.wait(timeout=window + 30)
        output, _ = client.communicate(timeout=load.timeout_s())
    finally:
        if client.poll() is None:
            client.kill()
    names = py_spy_names(raw) if raw.is_file() else {}
    return render(args, server.pid, before, after, (pa1 - pa0) / TICK / elapsed, elapsed, names,
                  loop_split(raw) if raw.is_file() else None, output)  # fmt: skip


def render(
    args: argparse.Namespace,
    pid: int,
    before: dict[int, ThreadSample],
    after: dict[int, ThreadSample],
    client_cores: float,
    elapsed: float,
    names: dict[int, str],
    split: Counter[str] | None,
    output: str,
) -> str:
    throughput = re.search(r"Throughput: ([\d.]+) infer/sec", output)
    rate = float(throughput.group(1)) if throughput else None
    if rate is None:
        sys.stderr.write(output[-2000:])
    rows, total = [], 0.0
    for tid, now in after.items():
        was = before.get(tid, ThreadSample(now.name, 0, 0, 0))
        cores = (now.cpu_ticks - was.cpu_ticks) / TICK / elapsed
        total += cores
        vol = (now.voluntary - was.voluntary) / elapsed
        invol = (now.involuntary - was.involuntary) / elapsed
        if cores >= 0.005:
            rows.append((cores, label(tid, pid, now, names, cores), vol, invol))
    rows.sort(reverse=True)
    lines = [
        f"# Profile: {args.model}, {args.protocol}, concurrency {args.concurrency}",
        "",
        f"perf_analyzer throughput {rate or '-'} infer/s over the run; threads measured over "
        f"{elapsed:.1f} s in its middle.",
        "",
        "| thread | cores | CPU ms per inference | switches/s voluntary | involuntary |",
        "|---|---|---|---|---|",
    ]
    for cores, name, vol, invol in rows:
        per = f"{1000 * cores / rate:.3f}" if rate else "-"
        lines.append(f"| {name} | {cores:.3f} | {per} | {vol:.0f} | {invol:.0f} |")
    idle = max(0.0, (os.cpu_count() or 2) - total - client_cores)
    lines += [
        f"| **server total** | **{total:.3f}** | | | |",
        f"| perf_analyzer (client) | {client_cores:.3f} | | | |",
        f"| idle, py-spy or other processes | {idle:.3f} | | | |",
        "",
    ]
    if split:
        n = sum(split.values())
        shares = ", ".join(
            f"{k} {100 * split[k] / n:.0f}%" for k in ("frameserve", "library Python", "C")
        )
        lines.append(
            f"Event-loop thread, {n} py-spy samples while it ran: {shares} (frameserve = its own "
            "code and what it calls; library Python = uvicorn, grpc.aio, asyncio; C = uvloop, "
            "grpcio's core, syscalls)."
        )
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
