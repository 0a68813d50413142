"""Preview benchmark: what an open live preview (MJPEG, or HLS) costs the live-streams benchmark.

    .venv/bin/python benchmarks/preview/run.py [--streams 1,4,8] [--modes off,mjpeg,hls]
        [--seconds 20] [--warmup 5]

The live-streams benchmark's set-up (``benchmarks/live/run.py``: one ``frameserve serve`` with the
zoo ``faces`` model, N streams of a 1280x720 25 fps H.264 clip played at its real rate, a gRPC
subscriber per stream receiving every record), measured for each N in each mode:

- ``off``: nobody watches (the stream sends and draws no pictures);
- ``mjpeg``: one ``preview.mjpeg`` reader per stream, reading every part (server defaults: at most
  5 pictures a second, 640 pixels wide);
- ``mjpeg-one``, ``hls-one``: one viewer in all, on the first stream (an operator looking at one
  camera among N);
- ``hls``: one HLS reader per stream, as a player does: the playlist every half segment and each
  new segment once (server defaults: at most 10 pictures a second, 1 s segments).

Per N and mode: frames in per stream, results per second, drops, lag p50/p99, the server's CPU
(process and decode workers) in cores and in milliseconds per result, the client's CPU, and what
the viewers received (JPEG parts or HLS segments per second, and bytes). The extra cost of a
preview is the ``server ms/result`` of a mode over ``off`` at the same N; whether N is still
sustained in real time uses the live benchmark's rule. Nothing is asserted:
``results/latest.{json,md}`` keep the numbers.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import requests

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE.parent))  # benchmarks/common.py
sys.path.insert(0, str(HERE.parent / "video"))  # the benchmark clip

from clip import make_benchmark_clip  # noqa: E402
from common import LOOPBACK, load_benchmark, write_latest  # noqa: E402

live = load_benchmark("live")
DROP_LIMIT, FPS, LAG_LIMIT_MS = live.DROP_LIMIT, live.FPS, live.LAG_LIMIT_MS
Server, Subscriber, process_tree_cpu = live.Server, live.Subscriber, live.process_tree_cpu
say, stream_counts, totals = live.say, live.stream_counts, live.totals


MODES = ("off", "mjpeg", "hls", "mjpeg-one", "hls-one")
SEGMENT_RE = re.compile(rb"^(seg\d+\.ts)$", re.MULTILINE)


class MjpegViewer(threading.Thread):
    """Reads one stream's preview.mjpeg to the end, counting parts and bytes."""

    def __init__(self, server: Server, stream_id: str) -> None:
        super().__init__(name=f"mjpeg-{stream_id}", daemon=True)
        self.url = server.url(f"/v1/streams/{stream_id}/preview.mjpeg")
        self.parts = 0
        self.bytes = 0
        self._done = threading.Event()

    def run(self) -> None:
        with requests.get(self.url, stream=True, timeout=30) as r:
            r.raise_for_status()
            for chunk in r.iter_content(chunk_size=64 * 1024):
                self.bytes += len(chunk)
                self.parts += chunk.count(b"Content-Type: image/jpeg")
                if self._done.is_set():
                    return

    def stop(self) -> None:
        self._done.set()
        self.join(10)


class HlsViewer(threading.Thread):
    """Polls one stream's HLS playlist as a player does and fetches each new segment once."""

    def __init__(self, server: Server, stream_id: str, segment_s: float = 1.0) -> None:
        super().__init__(name=f"hls-{stream_id}", daemon=True)
        self.base = server.url(f"/v1/streams/{stream_id}/hls/")
        self.poll_s = segment_s / 2
        self.parts = 0
        self.bytes = 0
        self._seen: set[bytes] = set()
        self._done = threading.Event()

    def run(self) -> None:
        with requests.Session() as http:
            while not self._done.is_set():
                playlist = http.get(self.base + "index.m3u8", timeout=30)
                if playlist.status_code == 200:
                    for name in SEGMENT_RE.findall(playlist.content):
                        if name not in self._seen:
                            self._seen.add(name)
                            segment = http.get(self.base + name.decode(), timeout=30)
                            if segment.status_code == 200:
                                self.parts += 1
                                self.bytes += len(segment.content)
                self._done.wait(self.poll_s)

    def stop(self) -> None:
        self._done.set()
        self.join(10)


def measure(server: Server, n: int, mode: str, warmup: float, seconds: float) -> dict[str, Any]:
    ids = []
    for _ in range(n):
        body = {"source": "clip.mp4", "pipeline": "faces", "loop": True}
        r = requests.post(server.url("/v1/streams"), json=body, timeout=30)
        r.raise_for_status()
        ids.append(r.json()["id"])
    channel = grpc.insecure_channel(f"{LOOPBACK}:{server.grpc}")
    subs = [Subscriber(channel, i) for i in ids]
    kind, _, scope = mode.partition("-")  # "mjpeg-one": a viewer on the first stream only
    viewer_type = {"off": None, "mjpeg": MjpegViewer, "hls": HlsViewer}[kind]
    watched = ids[:1] if scope == "one" else ids
    viewers = [viewer_type(server, i) for i in watched] if viewer_type else []
    for thread in [*subs, *viewers]:
        thread.start()
    try:
        time.sleep(warmup)
        for s in subs:
            s.lags = []
        seen = [(v.parts, v.bytes) for v in viewers]
        before = totals(server, ids)
        cpu_before = process_tree_cpu(server.ps)
        client_cpu = time.process_time()
        started = time.monotonic()
        time.sleep(seconds)
        wall = time.monotonic() - started
        after = totals(server, ids)
        end = process_tree_cpu(server.ps)
        server_cpu = sum(t - cpu_before.get(pid, 0.0) for pid, t in end.items()) / wall
        main = server.ps.pid  # the server process itself; the rest are the decode workers
        main_cpu = (end.get(main, 0.0) - cpu_before.get(main, 0.0)) / wall
        client_cpu = (time.process_time() - client_cpu) / wall
        parts = sum(v.parts - p for v, (p, _) in zip(viewers, seen, strict=True))
        received = sum(v.bytes - b for v, (_, b) in zip(viewers, seen, strict=True))
        previews = [
            requests.get(server.url(f"/v1/streams/{i}"), timeout=10).json().get("preview", {})
            for i in ids
        ]
        lags = np.array([lag for s in subs for lag in s.lags], dtype=np.float64)
    finally:
        for thread in [*viewers, *subs]:
            thread.stop()
        channel.close()
        for i in ids:
            requests.delete(server.url(f"/v1/streams/{i}"), timeout=60)
    frames_in = after["frames_in"] - before["frames_in"]
    fps_out = (after["frames_out"] - before["frames_out"]) / wall
    row = {
        "streams": n,
        "mode": mode,
        "fps_in_per_stream": frames_in / wall / n,
        "fps_out_total": fps_out,
        "dropped_fraction": (after["dropped"] - before["dropped"]) / frames_in
        if frames_in
        else 1.0,
        "lag_p50_ms": float(np.percentile(lags, 50)) if lags.size else None,
        "lag_p99_ms": float(np.percentile(lags, 99)) if lags.size else None,
        "server_cores": server_cpu,
        "server_main_cores": main_cpu,
        "worker_cores": server_cpu - main_cpu,
        "server_ms_per_result": 1000.0 * server_cpu / fps_out if fps_out else None,
        "client_cores": client_cpu,
        "viewer_parts_per_s": parts / wall,
        "viewer_kbytes_per_s": received / wall / 1000.0,
        "pictures_sent": sum(p.get("pictures", 0) for p in previews),
    }
    row["sustained"] = live.sustained(
        row["fps_in_per_stream"], row["lag_p99_ms"], row["dropped_fraction"]
    )
    return row


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    base = {r["streams"]: r for r in rows if r["mode"] == "off"}
    lines = [
        f"Machine: {meta['cpu']}, {meta['cores']} cores; each stream 1280x720 H.264 at {FPS} fps "
        f"(real time, looped), `faces` pipeline; {meta['seconds']:.0f} s measured per row after "
        f"{meta['warmup']:.0f} s warm-up; server preview defaults (MJPEG <= 5 fps, HLS <= 10 fps, "
        f"640 px wide); commit {meta['commit']}.",
        "",
        "| streams | viewer | fps in / stream | dropped | lag p50 ms | lag p99 ms | server cores "
        "| server ms / result | vs off | viewer parts/s | viewer kB/s | sustained |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        off = base.get(r["streams"])
        cost = r["server_ms_per_result"]
        ratio = (
            f"{cost / off['server_ms_per_result']:.2f}x"
            if cost and off and off["server_ms_per_result"]
            else "-"
        )
        p50 = f"{r['lag_p50_ms']:.0f}" if r["lag_p50_ms"] is not None else "-"
        p99 = f"{r['lag_p99_ms']:.0f}" if r["lag_p99_ms"] is not None else "-"
        lines.append(
            f"| {r['streams']} | {r['mode']} | {r['fps_in_per_stream']:.1f} | "
            f"{r['dropped_fraction']:.2%} | {p50} | {p99} | {r['server_cores']:.2f} | "
            f"{cost:.1f} | {ratio} | {r['viewer_parts_per_s']:.1f} | "
            f"{r['viewer_kbytes_per_s']:.0f} | {'yes' if r['sustained'] else 'no'} |"
            if cost is not None
            else f"| {r['streams']} | {r['mode']} | no results | | | | | | | | | no |"
        )
    return "\n".join(lines) + "\n"


def modes(text: str) -> list[str]:
    chosen = [m.strip() for m in text.split(",") if m.strip()]
    if not chosen or any(m not in MODES for m in chosen):
        raise argparse.ArgumentTypeError(f"expected modes from {','.join(MODES)}, got {text!r}")
    return chosen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=stream_counts, default="1,4,8",
                        help="comma-separated stream counts (e.g. 1,4,8)")  # fmt: skip
    parser.add_argument("--modes", type=modes, default="off,mjpeg,hls",
                        help="which viewers to measure: off, mjpeg, hls")  # fmt: skip
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--clip-seconds", type=float, default=10.0,
                        help="length of the looped clip (the live benchmark's: 10)")  # fmt: skip
    parser.add_argument("--repository", type=Path, default=ROOT / "models")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="frameserve-preview-bench-") as tmp:
        work = Path(tmp)
        media = work / "media"
        media.mkdir()
        frames = max(FPS, round(args.clip_seconds * FPS))
        say(f"making the clip ({frames} frames of 1280x720 at {FPS} fps)...")
        make_benchmark_clip(media / "clip.mp4", frames=frames, fps=FPS, gop=FPS)
        server = Server(args.repository.resolve(), media, work)
        try:
            for n in args.streams:
                for mode in args.modes:
                    rows.append(measure(server, n, mode, args.warmup, args.seconds))
                    r = rows[-1]
                    say(
                        f"N={n} {mode}: {r['fps_in_per_stream']:.1f} fps/stream, p99 "
                        f"{r['lag_p99_ms']} ms, server {r['server_cores']:.2f} cores (main "
                        f"{r['server_main_cores']:.3f}, workers {r['worker_cores']:.3f}), viewers "
                        f"{r['viewer_parts_per_s']:.1f} parts/s, pictures {r['pictures_sent']}"
                    )
        finally:
            server.stop()
    meta = live.run_meta(args)
    write_latest(args.out, {"meta": meta, "rows": rows}, markdown(rows, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
