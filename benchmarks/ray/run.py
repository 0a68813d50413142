"""Ray scale-out benchmark: one long job on 1 node and on 2 nodes, a node killed, a projection.

    .venv/bin/python benchmarks/ray/run.py [--frames 3000] [--size 640x360] [--chunk-s 10]
    .venv/bin/python benchmarks/ray/run.py --frames 300 --size 160x96 --chunk-s 2   # a smoke run

Each run is ``tests/scale/cluster_driver.py`` inside a private network namespace (``unshare
-n``): N Ray nodes on this machine, each ``--num-cpus 1`` pinned with ``taskset`` to a core of
its own, the job's coordinator in the driver. Runs, over the same clip (the live benchmark's
camera over the astronaut with sensor noise, a keyframe every 2 s) through ``faces``:

1. 1 node (1 core), 2. 2 nodes (1 core each), 3. 2 nodes with the second node's raylet
   killed at 30% of the chunks.

Reported: wall time of each and the speed-up of 2 over 1 (target >= 1.7x); the time to
recover from the killed node (from the kill to its chunks being queued elsewhere, and the
extra wall time over run 2); the coordinator's CPU per chunk; the resident memory of each
node's Ray processes (raylet, object store, worker with its models); and a projection, by
simulation from these figures, of a 20-node cluster on a 10,000-hour catalogue. Needs as many
free cores as nodes: run it on a quiet machine (nothing is asserted; ``results/latest.*``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import heapq
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE.parent))  # benchmarks/common.py
sys.path.insert(0, str(HERE.parent / "video"))  # the benchmark clip

from clip import make_benchmark_clip  # noqa: E402
from common import cpu_model, git_commit, write_latest  # noqa: E402

DRIVER = ROOT / "tests" / "scale" / "cluster_driver.py"


def say(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def run_cluster(tmp: Path, clip: Path, repository: Path, nodes: int, chunk_s: float,
                kill_at: float = 0.0) -> dict[str, Any]:  # fmt: skip
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")])
    out = tmp / "out.jsonl"
    command = (
        f"ip link set lo up && exec {sys.executable} {DRIVER} --tmp {tmp} --input {clip} "
        f"--repository {repository} --out {out} --pipeline faces --nodes {nodes} "
        f"--chunk-s {chunk_s} --kill-at {kill_at}"
    )
    done = subprocess.run(["unshare", "-n", "bash", "-c", command], env=env,
                          capture_output=True, timeout=3600)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"{nodes} node(s): the driver failed:\n{done.stderr.decode()[-3000:]}")
    return dict(json.loads(done.stdout.decode().strip().splitlines()[-1]))


def simulate(
    *,
    nodes: int,
    hours: float,
    chunk_video_s: float,
    worker_s_per_video_s: float,
    chunk_overhead_s: float,
    coordinator_cpu_per_chunk_s: float,
    node_failures_per_day: float,
    recover_s: float,
    seed: int = 0,
) -> dict[str, float]:
    """A discrete-event run of a catalogue cut into chunks over ``nodes`` one-core workers:
    each chunk takes its video length times the measured speed plus the measured per-chunk
    overhead; node failures (Poisson, per node) lose the chunk in hand and the node for
    ``recover_s``. The coordinator is one core: its busy share is chunks/s x CPU per chunk."""
    rng = random.Random(seed)
    chunks = int(hours * 3600 / chunk_video_s)
    per_chunk = chunk_video_s * worker_s_per_video_s + chunk_overhead_s
    fail_rate = node_failures_per_day / 86400.0
    free = [(0.0, n) for n in range(nodes)]
    heapq.heapify(free)
    reruns, end = 0, 0.0
    for _ in range(chunks):
        while True:
            start, node = heapq.heappop(free)
            failure = rng.expovariate(fail_rate) if fail_rate > 0 else float("inf")
            if failure >= per_chunk:
                finish = start + per_chunk
                heapq.heappush(free, (finish, node))
                end = max(end, finish)
                break
            reruns += 1  # the chunk runs again on the next free worker
            heapq.heappush(free, (start + failure + recover_s, node))
    return {
        "chunks": chunks,
        "wall_h": end / 3600,
        "speed_x_realtime": hours * 3600 / end if end else 0.0,
        "reruns": reruns,
        "coordinator_cpu_share": chunks * coordinator_cpu_per_chunk_s / end if end else 0.0,
    }


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    width, height = (int(v) for v in args.size.split("x"))
    clip = make_benchmark_clip(work / "long.mp4", args.frames, (width, height), 30, gop=60)
    repository = Path(args.repository).resolve()
    runs = {}
    plans = (("1 node", 1, 0.0), ("2 nodes", 2, 0.0), ("2 nodes, one killed", 2, 0.3))
    for label, nodes, kill in plans:
        say(f"ray benchmark: {label} ...")
        runs[label] = run_cluster(work / label.replace(" ", "-").replace(",", ""), clip,
                                  repository, nodes, args.chunk_s, kill)  # fmt: skip
        say(f"  {runs[label]['wall_s']:.1f} s, {runs[label]['chunks']} chunks")
    return {"clip": {"frames": args.frames, "size": args.size, "fps": 30}, "runs": runs}


def report(data: dict[str, Any], args: argparse.Namespace) -> str:
    runs = data["runs"]
    one, two, killed = runs["1 node"], runs["2 nodes"], runs["2 nodes, one killed"]
    speedup = one["wall_s"] / two["wall_s"]
    steady = one["processing_s"] / two["processing_s"]
    detect = (killed["lost_at_s"][0] - killed["killed_at_s"]) if killed["lost_at_s"] else None
    cpu_per_chunk = two["coordinator_cpu_s"] / two["chunks"]
    video_s = args.frames / 30
    worker = sum(one["chunk_worker_s"]) / video_s  # worker seconds per video second, one core
    overhead = max(0.0, (one["wall_s"] - sum(one["chunk_worker_s"])) / one["chunks"])
    projection = simulate(
        nodes=20, hours=10_000, chunk_video_s=args.chunk_s, worker_s_per_video_s=worker,
        chunk_overhead_s=overhead, coordinator_cpu_per_chunk_s=cpu_per_chunk,
        node_failures_per_day=1.0, recover_s=(detect or 3.0) + args.chunk_s * worker,
    )  # fmt: skip
    data["derived"] = {
        "speedup": speedup,
        "speedup_workers_ready": steady,
        "detect_s": detect,
        "cpu_per_chunk_s": cpu_per_chunk,
        "worker_s_per_video_s": worker,
        "chunk_overhead_s": overhead,
        "projection_20_nodes_10000_h": projection,
    }
    mib = [round(b / 2**20) for b in two["ray_memory"]]
    lines = [
        f"# Ray scale-out ({data['when']}, {data['cpu']}, commit {data['commit']})", "",
        f"Clip: {args.frames} frames {args.size} at 30 fps, `faces`, chunks of {args.chunk_s} s.",
        "", "| run | wall s | after workers ready s | chunks | workers lost |",
        "|---|---:|---:|---:|---:|",
        *(f"| {k} | {v['wall_s']:.1f} | {v['processing_s']:.1f} | {v['chunks']} | "
          f"{v['workers_lost']} |" for k, v in runs.items()),
        "", f"- speed-up, 2 nodes over 1 (1 core each): **{speedup:.2f}x** (target >= 1.7x); "
        f"{steady:.2f}x from the last worker ready (model loading left out)",
        f"- killed node noticed and its chunks re-queued after {detect:.1f} s; wall time "
        f"+{killed['wall_s'] - two['wall_s']:.1f} s over the run without a kill"
        if detect is not None else "- killed node: not noticed (the job ended first)",
        f"- coordinator CPU per chunk: {cpu_per_chunk * 1000:.1f} ms",
        f"- Ray memory per node (RSS of its processes): {mib} MiB",
        f"- projection, 20 one-core nodes, 10,000 h catalogue, one node failure per node-day: "
        f"{projection['wall_h']:.0f} h wall ({projection['speed_x_realtime']:.1f}x real "
        f"time), {projection['reruns']} chunk re-runs, coordinator busy "
        f"{projection['coordinator_cpu_share'] * 100:.2f}% of a core",
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=3000)
    p.add_argument("--size", default="640x360")
    p.add_argument("--chunk-s", type=float, default=10.0)
    p.add_argument("--repository", default=str(ROOT / "models"))
    p.add_argument("--out", type=Path, default=HERE / "results")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="ray-bench-") as tmp:
        data = measure(args, Path(tmp))
    data.update(when=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), cpu=cpu_model(),
                commit=git_commit(ROOT))  # fmt: skip
    table = report(data, args)
    write_latest(args.out, data, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
