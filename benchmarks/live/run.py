"""Live-stream benchmark: how many 1280x720 25 fps streams one server sustains through ``faces``.

    .venv/bin/python benchmarks/live/run.py [--streams 1,2,4,6,8] [--seconds 20] [--repository R]
    .venv/bin/python benchmarks/live/run.py --streams 1,6,8,10,12   # around the target of 10

One ``frameserve serve`` process (the zoo ``faces`` model, its model.yaml as it is) and, for each
N, N live streams attached over HTTP, each playing the same 1280x720 H.264 clip from the media
root at its real rate (25 fps, looped), so decoding, pre-processing, batched inference across the
streams, post-processing, tracking and publishing all run in the server as they would for
cameras. Every stream has a gRPC subscriber in this process that receives every record.

Per N, after a warm-up: the records' end-to-end lag (``lag_ms``: from the frame being due on the
wall clock to its record being published) p50/p99, frames in/out and dropped from the streams'
counters, and the CPU of the server and of this client. N is sustained in real time when every
stream takes >= 99% of 25 fps, p99 lag < 500 ms and < 1% of frames are dropped. Nothing is
asserted: ``results/latest.{json,md}`` keep the numbers.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import psutil
import requests

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE.parent))  # benchmarks/common.py
sys.path.insert(0, str(HERE.parent / "video"))  # the benchmark clip

from clip import make_benchmark_clip  # noqa: E402
from common import LOOPBACK, cpu_model, free_port, git_commit, write_latest  # noqa: E402

from frameserve.api.grpc.generated import video_streams_pb2 as vpb  # noqa: E402
from frameserve.api.grpc.generated import video_streams_pb2_grpc as vgrpc  # noqa: E402
from frameserve.cpu import detect_cpu_budget  # noqa: E402

FPS = 25
LAG_LIMIT_MS = 500.0
DROP_LIMIT = 0.01


def say(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def process_tree_cpu(ps: psutil.Process) -> dict[int, float]:
    """CPU seconds of the server and of each of its children (the streams' decode workers)."""
    times = {ps.pid: sum(ps.cpu_times()[:2])}
    for child in ps.children(recursive=True):
        try:
            times[child.pid] = sum(child.cpu_times()[:2])
        except psutil.NoSuchProcess:
            continue
    return times


class Server:
    """``frameserve serve`` in a subprocess on loopback ports; stopped by its PID."""

    def __init__(
        self, repository: Path, media: Path, work: Path, extra: tuple[str, ...] = (),
        model: str = "faces",
    ) -> None:  # fmt: skip
        """``extra``: more ``serve`` flags (the push benchmark allows loopback receivers, the
        dashboard's asks for keys); ``model``: the one model it loads."""
        self.http, self.grpc = free_port(), free_port()
        self.log = (work / "server.log").open("wb")
        cmd = [
            sys.executable, "-m", "frameserve.cli.main", "serve", "--repository", str(repository),
            "--host", LOOPBACK, "--http-port", str(self.http), "--grpc-port", str(self.grpc),
            "--model-control-mode", "explicit", "--load-model", model,
            "--media-root", str(media), "--state-dir", str(work / "state"),
            "--max-streams", "64", "--log-format", "text", "--log-level", "warning", *extra,
        ]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, cwd=work)
        self.ps = psutil.Process(self.proc.pid)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: see {work / 'server.log'}")
            try:
                if requests.get(self.url("/v2/health/ready"), timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        raise TimeoutError("server not ready after 180 s")

    def url(self, path: str) -> str:
        return f"http://{LOOPBACK}:{self.http}{path}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class Subscriber(threading.Thread):
    """Receives every record of one stream over gRPC; keeps the lags of the current window."""

    def __init__(self, channel: grpc.Channel, stream_id: str) -> None:
        super().__init__(name=f"sub-{stream_id}", daemon=True)
        self.stub = vgrpc.VideoStreamsStub(channel)
        self.stream_id = stream_id
        self.lags: list[float] = []
        self.records = 0
        self.missed = 0
        self.call: Any = None

    def run(self) -> None:
        self.call = self.stub.Subscribe(vpb.SubscribeRequest(stream_id=self.stream_id))
        try:
            for event in self.call:
                self.lags.append(json.loads(event.record_json)["lag_ms"])
                self.records += 1
                self.missed = event.missed
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.CANCELLED:
                say(f"subscriber {self.stream_id}: {err.code()}")

    def stop(self) -> None:
        if self.call is not None:
            self.call.cancel()
        self.join(10)


def totals(server: Server, ids: list[str]) -> dict[str, float]:
    statuses = {
        s["id"]: s for s in requests.get(server.url("/v1/streams"), timeout=10).json()["streams"]
    }
    mine = [statuses[i] for i in ids]
    return {
        "frames_in": sum(s["frames_in"] for s in mine),
        "frames_out": sum(s["frames_out"] for s in mine),
        "dropped": sum(sum(s["dropped"].values()) for s in mine),
        "min_fps_in": min(s["fps_in"] for s in mine),
    }


def measure(server: Server, n: int, warmup: float, seconds: float) -> dict[str, Any]:
    ids = []
    for _ in range(n):
        body = {"source": "clip.mp4", "pipeline": "faces", "loop": True}
        r = requests.post(server.url("/v1/streams"), json=body, timeout=30)
        r.raise_for_status()
        ids.append(r.json()["id"])
    channel = grpc.insecure_channel(f"{LOOPBACK}:{server.grpc}")
    subs = [Subscriber(channel, i) for i in ids]
    for s in subs:
        s.start()
    try:
        time.sleep(warmup)
        for s in subs:
            s.lags = []
        before = totals(server, ids)
        cpu_before = process_tree_cpu(server.ps)
        client_cpu = time.process_time()
        started = time.monotonic()
        time.sleep(seconds)
        wall = time.monotonic() - started
        after = totals(server, ids)
        end = process_tree_cpu(server.ps)
        server_cpu = sum(t - cpu_before.get(pid, 0.0) for pid, t in end.items()) / wall
        client_cpu = (time.process_time() - client_cpu) / wall
        lags = np.array([lag for s in subs for lag in s.lags], dtype=np.float64)
    finally:
        for s in subs:
            s.stop()
        channel.close()
        for i in ids:
            requests.delete(server.url(f"/v1/streams/{i}"), timeout=60)
    frames_in = after["frames_in"] - before["frames_in"]
    dropped = after["dropped"] - before["dropped"]
    row = {
        "streams": n,
        "fps_in_per_stream": frames_in / wall / n,
        "fps_out_total": (after["frames_out"] - before["frames_out"]) / wall,
        "dropped_fraction": dropped / frames_in if frames_in else 1.0,
        "lag_p50_ms": float(np.percentile(lags, 50)) if lags.size else None,
        "lag_p99_ms": float(np.percentile(lags, 99)) if lags.size else None,
        "records_received": int(lags.size),
        "subscriber_missed": sum(s.missed for s in subs),
        "server_cores": server_cpu,
        "client_cores": client_cpu,
    }
    row["sustained"] = sustained(row["fps_in_per_stream"], row["lag_p99_ms"],
                                 row["dropped_fraction"])  # fmt: skip
    return row


def sustained(fps_in_per_stream: float, lag_p99_ms: float | None, dropped: float) -> bool:
    """The rule of every live benchmark: >= 99% of the rate in, p99 lag and drops bounded."""
    return bool(
        fps_in_per_stream >= 0.99 * FPS
        and lag_p99_ms is not None
        and lag_p99_ms < LAG_LIMIT_MS
        and dropped < DROP_LIMIT
    )


def run_meta(args: argparse.Namespace, **extra: Any) -> dict[str, Any]:
    """What a results file says about its run: when, where, how long, which commit."""
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cores": detect_cpu_budget().cores,
        "seconds": args.seconds,
        "warmup": args.warmup,
        **extra,
        "commit": git_commit(ROOT),
    }


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    best = max((r["streams"] for r in rows if r["sustained"]), default=0)
    one = next((r for r in rows if r["streams"] == 1), None)
    lines = [
        f"Machine: {meta['cpu']}, {meta['cores']} cores; each stream 1280x720 H.264 at {FPS} fps "
        f"(real time, looped), `faces` pipeline; {meta['seconds']:.0f} s measured per N after "
        f"{meta['warmup']:.0f} s warm-up; commit {meta['commit']}.",
        "",
        f"**Largest N sustained in real time: {best}** (every stream >= 99% of {FPS} fps in, "
        f"p99 lag < {LAG_LIMIT_MS:.0f} ms, < {DROP_LIMIT:.0%} dropped).",
        "",
        "| streams | fps in / stream | results/s (all) | vs N=1 | dropped | lag p50 ms "
        "| lag p99 ms | server cores | client cores | sustained |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        scale = r["fps_out_total"] / one["fps_out_total"] if one and one["fps_out_total"] else 0
        p50 = f"{r['lag_p50_ms']:.0f}" if r["lag_p50_ms"] is not None else "-"
        p99 = f"{r['lag_p99_ms']:.0f}" if r["lag_p99_ms"] is not None else "-"
        lines.append(
            f"| {r['streams']} | {r['fps_in_per_stream']:.1f} | {r['fps_out_total']:.1f} | "
            f"{scale:.2f}x | {r['dropped_fraction']:.2%} | {p50} | {p99} | "
            f"{r['server_cores']:.2f} | {r['client_cores']:.2f} | "
            f"{'yes' if r['sustained'] else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def stream_counts(text: str) -> list[int]:
    """``--streams``: "1,6,8,10,12" -> [1, 6, 8, 10, 12]; each a whole number >= 1."""
    try:
        counts = [int(n) for n in text.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(
            f"expected stream counts >= 1 like 1,6,8,10,12, got {text!r}"
        )
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=stream_counts, default="1,2,4,6,8",
                        help="comma-separated stream counts, measured in this order "
                             "(e.g. 1,6,8,10,12; the target is 10 sustained)")  # fmt: skip
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--repository", type=Path, default=ROOT / "models")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    counts = args.streams
    rows = []
    with tempfile.TemporaryDirectory(prefix="frameserve-live-bench-") as tmp:
        work = Path(tmp)
        media = work / "media"
        media.mkdir()
        say("making the clip (10 s of 1280x720 at 25 fps, a keyframe a second)...")
        make_benchmark_clip(media / "clip.mp4", frames=10 * FPS, fps=FPS, gop=FPS)
        server = Server(args.repository.resolve(), media, work)
        try:
            for n in counts:
                rows.append(measure(server, n, args.warmup, args.seconds))
                r = rows[-1]
                say(
                    f"N={n}: {r['fps_in_per_stream']:.1f} fps/stream, p99 {r['lag_p99_ms']} ms, "
                    f"dropped {r['dropped_fraction']:.2%}, server {r['server_cores']:.2f} cores"
                )
        finally:
            server.stop()
    meta = run_meta(args)
    write_latest(args.out, {"meta": meta, "rows": rows}, markdown(rows, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
