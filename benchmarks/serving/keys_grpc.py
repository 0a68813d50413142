"""The cost of API keys over gRPC, which perf_analyzer cannot measure (it sends no gRPC
metadata): ``frameserve bench`` (closed loop, concurrency 8) against a plain and a keyed server,
side by side, fresh servers, order alternating, medians over repeats.

    .venv/bin/python benchmarks/serving/keys_grpc.py [--repeats 5]

Writes ``results/keys_grpc.md``. The same client on both sides, so the ratio is what counts.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/common.py
sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import frameserve_server_command
from security import BENCH_KEY, MODEL

from models import ServingSetup, build_repository
from servers import Ports, ServerProcess

HERE = Path(__file__).resolve().parent


def _point(url: str, keyed: bool) -> dict:
    argv = [sys.executable, "-m", "frameserve.cli.main", "bench", "--url", url,
            "--model", MODEL.name, "--concurrency", "8", "--duration", "8", "--warmup", "2",
            "--json"]  # fmt: skip
    if keyed:
        argv += ["--header", f"Authorization: Bearer {BENCH_KEY}"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True)
    return dict(json.loads(done.stdout)[0])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    rows: dict[str, list[dict]] = {"plain": [], "keys": []}
    with tempfile.TemporaryDirectory(prefix="fs-keys-grpc-") as name:
        tmp = Path(name)
        repo = tmp / "models"
        build_repository(repo, MODEL, ServingSetup())
        (tmp / "keys.txt").write_text(f"bench:{BENCH_KEY}\n")
        for repeat in range(args.repeats):
            order = ["plain", "keys"] if repeat % 2 == 0 else ["keys", "plain"]
            for variant in order:
                ports = Ports.pick()
                cmd = frameserve_server_command(repo, ports)
                headers = None
                if variant == "keys":
                    cmd += ["--api-key-file", str(tmp / "keys.txt")]
                    headers = {"Authorization": f"Bearer {BENCH_KEY}"}
                server = ServerProcess(
                    f"frameserve-{variant}", cmd, ports, MODEL.name, tmp / f"{variant}.log",
                    headers=headers,
                )  # fmt: skip
                server.start()
                try:
                    point = _point(f"grpc://{ports.url('grpc')}", variant == "keys")
                finally:
                    server.stop()
                rows[variant].append(point)
                print(f"repeat {repeat} {variant:5}: {point['throughput']:8.1f} infer/s "  # noqa: T201
                      f"p99 {point['p99_ms']:.2f} ms")  # fmt: skip
    med = {v: {k: statistics.median(r[k] for r in rs) for k in ("throughput", "p50_ms", "p99_ms")}
           for v, rs in rows.items()}  # fmt: skip
    lines = [
        "# API keys over gRPC: plain vs `--api-key-file`",
        "",
        f"`benchmarks/serving/keys_grpc.py`: `{MODEL.name}`, `frameserve bench` over gRPC at "
        f"concurrency 8, 8 s a point, medians over {args.repeats} repeats (fresh servers, order "
        "alternating).",
        "",
        "| variant | infer/s | p50 ms | p99 ms |",
        "|---|---:|---:|---:|",
        *(
            f"| {v} | {m['throughput']:.1f} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} |"
            for v, m in med.items()
        ),  # fmt: skip
        "",
        f"keys: throughput {med['keys']['throughput'] / med['plain']['throughput']:.2f} x plain, "
        f"p99 {med['keys']['p99_ms'] / med['plain']['p99_ms']:.2f} x plain",
    ]
    text = "\n".join(lines) + "\n"
    (HERE / "results" / "keys_grpc.md").write_text(text)
    print(text)  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
