"""Push-output benchmark: what a webhook or an MQTT output costs the live-streams benchmark.

    .venv/bin/python benchmarks/push/run.py [--streams 1,4,8] [--seconds 20] [--warmup 5]
    .venv/bin/python benchmarks/push/run.py --outputs none,webhook,mqtt,mqtt-qos1 --streams 6,8,10

The live-streams benchmark's set-up (``benchmarks/live/run.py``: one ``frameserve serve`` with
the zoo ``faces`` model, N streams each playing the same 1280x720 25 fps clip from the media root
in real time, looped), run once per output kind with the same streams in the same server:

- ``none``: no push output (the baseline);
- ``webhook``: each stream POSTs its records to an HTTP receiver in this process (batches of
  ``--batch-size`` records or ``--batch-ms``);
- ``mqtt`` / ``mqtt-qos1``: each stream publishes one message per record to a local Mosquitto
  (``/usr/sbin/mosquitto``, started here on a free loopback port), qos 0 or 1.

Per kind and N, after a warm-up: the server's CPU (its process and its decode workers) in cores
and in milliseconds per published frame, frames in per stream, dropped frames, the worst
stream's p99 lag (from its status), and the push counters (sent, dropped, failed) with what
the receivers got. N is sustained as in the live benchmark (>= 99% of 25 fps in, p99 lag <
500 ms, < 1% dropped; here also: no push message dropped or failed). The receivers run in this
process and their CPU is reported apart (client cores). Nothing is asserted:
``results/latest.{json,md}`` keep the numbers.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE.parent))  # benchmarks/common.py
sys.path.insert(0, str(HERE.parent / "video"))  # the benchmark clip

from clip import make_benchmark_clip  # noqa: E402
from common import (  # noqa: E402
    LOOPBACK,
    free_port,
    load_benchmark,
    write_latest,
)

live = load_benchmark("live")
FPS = live.FPS
Server = live.Server
MOSQUITTO = "/usr/sbin/mosquitto"
KINDS = ("none", "webhook", "mqtt", "mqtt-qos1")


def say(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


class Receiver:
    """An HTTP receiver counting the records POSTed to it (this process, its own threads)."""

    def __init__(self) -> None:
        self.records = 0
        self.posts = 0
        lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a real receiver

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with lock:
                    receiver.posts += 1
                    receiver.records += body.count(b'"frame":')
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Broker:
    """Mosquitto on a free loopback port and a subscriber counting messages (paho's thread)."""

    def __init__(self, work: Path) -> None:
        import paho.mqtt.client as mqtt

        self.port = free_port()
        config = work / "mosquitto.conf"
        config.write_text(f"listener {self.port} {LOOPBACK}\nallow_anonymous true\n"
                          "persistence false\nmax_queued_messages 100000\n")  # fmt: skip
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(config)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection((LOOPBACK, self.port), 1).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("mosquitto did not start") from None
                time.sleep(0.05)
        self.messages = 0
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_message = lambda *_args: self._count()
        self.client.on_connect = lambda client, *_args: client.subscribe("bench/#", qos=1)
        self.client.connect(LOOPBACK, self.port)
        self.client.loop_start()

    def _count(self) -> None:
        self.messages += 1

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def push_for(kind: str, n: int, args: argparse.Namespace, receiver: Receiver,
             broker: Broker | None) -> list[dict[str, Any]]:  # fmt: skip
    """The ``push`` field of stream ``n`` for ``kind``."""
    if kind == "none":
        return []
    if kind == "webhook":
        return [{"type": "webhook", "url": f"http://{LOOPBACK}:{receiver.port}/s{n}",
                 "batch_size": args.batch_size, "batch_ms": args.batch_ms}]  # fmt: skip
    assert broker is not None
    qos = 1 if kind == "mqtt-qos1" else 0
    return [{"type": "mqtt", "url": f"mqtt://{LOOPBACK}:{broker.port}/bench/s{n}", "qos": qos}]


def statuses(server: Server, ids: list[str]) -> list[dict[str, Any]]:
    listed = requests.get(server.url("/v1/streams"), timeout=10).json()["streams"]
    by_id = {s["id"]: s for s in listed}
    return [by_id[i] for i in ids]


def counters(server: Server, ids: list[str]) -> dict[str, float]:
    mine = statuses(server, ids)
    pushes = [p for s in mine for p in s.get("push", [])]
    return {
        "frames_in": sum(s["frames_in"] for s in mine),
        "frames_out": sum(s["frames_out"] for s in mine),
        "dropped": sum(sum(s["dropped"].values()) for s in mine),
        "push_sent": sum(p["sent"] for p in pushes),
        "push_lost": sum(p["dropped"] + p["failed"] for p in pushes),
    }


def measure(server: Server, kind: str, n: int, args: argparse.Namespace, receiver: Receiver,
            broker: Broker | None) -> dict[str, Any]:  # fmt: skip
    ids = []
    for i in range(n):
        body = {"source": "clip.mp4", "pipeline": "faces", "loop": True,
                "push": push_for(kind, i, args, receiver, broker)}  # fmt: skip
        r = requests.post(server.url("/v1/streams"), json=body, timeout=30)
        r.raise_for_status()
        ids.append(r.json()["id"])
    try:
        time.sleep(args.warmup)
        before = counters(server, ids)
        got_before = (receiver.records, broker.messages if broker else 0)
        cpu_before = live.process_tree_cpu(server.ps)
        client_before = time.process_time()
        started = time.monotonic()
        time.sleep(args.seconds)
        wall = time.monotonic() - started
        after = counters(server, ids)
        cpu_after = live.process_tree_cpu(server.ps)
        client = (time.process_time() - client_before) / wall
        lags = [s["lag_ms"]["p99"] for s in statuses(server, ids)]
        got = (receiver.records - got_before[0], (broker.messages if broker else 0) - got_before[1])
    finally:
        for i in ids:
            requests.delete(server.url(f"/v1/streams/{i}"), timeout=60)
    server_cpu = sum(t - cpu_before.get(pid, 0.0) for pid, t in cpu_after.items())
    delta = {k: after[k] - before[k] for k in after}
    frames_in, frames_out = delta["frames_in"], delta["frames_out"]
    worst_lag = max((lag for lag in lags if lag is not None), default=None)
    row = {
        "output": kind,
        "streams": n,
        "fps_in_per_stream": frames_in / wall / n,
        "fps_out_total": frames_out / wall,
        "dropped_fraction": delta["dropped"] / frames_in if frames_in else 1.0,
        "lag_p99_ms_worst": worst_lag,
        "server_cores": server_cpu / wall,
        "server_ms_per_frame": 1000.0 * server_cpu / frames_out if frames_out else None,
        "client_cores": client,
        "push_sent": delta["push_sent"],
        "push_lost": delta["push_lost"],
        "received": got[0] if kind == "webhook" else got[1] if kind != "none" else 0,
    }
    row["sustained"] = (
        live.sustained(row["fps_in_per_stream"], worst_lag, row["dropped_fraction"])
        and row["push_lost"] == 0
    )
    return row


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    base = {r["streams"]: r for r in rows if r["output"] == "none"}
    lines = [
        f"Machine: {meta['cpu']}, {meta['cores']} cores; each stream {meta['size']} H.264 at "
        f"{FPS} fps (real time, looped), `faces` pipeline; {meta['seconds']:.0f} s measured "
        f"per row after {meta['warmup']:.0f} s warm-up; webhook batches of "
        f"{meta['batch_size']} records or {meta['batch_ms']} ms; commit {meta['commit']}.",
        "",
    ]
    for kind in dict.fromkeys(r["output"] for r in rows):
        best = max((r["streams"] for r in rows if r["output"] == kind and r["sustained"]),
                   default=0)  # fmt: skip
        lines.append(f"- **{kind}**: largest N sustained {best}")
    lines += [
        "",
        "| output | streams | fps in / stream | dropped | lag p99 ms (worst) | server cores "
        "| ms CPU / frame | vs none | push sent | push lost | received | client cores "
        "| sustained |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ref = base.get(r["streams"])
        per = r["server_ms_per_frame"]
        ratio = (per / ref["server_ms_per_frame"]
                 if per and ref and ref["server_ms_per_frame"] else None)  # fmt: skip
        lag = r["lag_p99_ms_worst"]
        lines.append(
            f"| {r['output']} | {r['streams']} | {r['fps_in_per_stream']:.1f} | "
            f"{r['dropped_fraction']:.2%} | {'-' if lag is None else f'{lag:.0f}'} | "
            f"{r['server_cores']:.2f} | {'-' if per is None else f'{per:.2f}'} | "
            f"{'-' if ratio is None else f'{ratio:.3f}x'} | {r['push_sent']} | "
            f"{r['push_lost']} | {r['received']} | {r['client_cores']:.2f} | "
            f"{'yes' if r['sustained'] else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def kinds(text: str) -> list[str]:
    """``--outputs``: "none,webhook,mqtt" -> the kinds, each one of ``KINDS``."""
    chosen = [k.strip() for k in text.split(",") if k.strip()]
    if not chosen or not set(chosen) <= set(KINDS):
        raise argparse.ArgumentTypeError(f"expected some of {','.join(KINDS)}, got {text!r}")
    return chosen


def size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WxH like 1280x720, got {text!r}") from None
    return w, h


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--streams",
        type=live.stream_counts,
        default="1,4,8",
        help="comma-separated stream counts, measured for every output kind",
    )
    parser.add_argument(
        "--outputs",
        type=kinds,
        default=",".join(KINDS),
        help=f"output kinds to measure, in this order ({','.join(KINDS)})",
    )
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--batch-size", type=int, default=50, help="webhook records per POST")
    parser.add_argument("--batch-ms", type=int, default=1000, help="webhook batch wait")
    parser.add_argument("--size", type=size, default="1280x720", help="the clip's frame size")
    parser.add_argument("--clip-seconds", type=int, default=10, help="the clip's length")
    parser.add_argument("--repository", type=Path, default=ROOT / "models")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()  # fmt: skip
    wanted = args.outputs
    if any(k.startswith("mqtt") for k in wanted) and not shutil.which(MOSQUITTO):
        say(f"{MOSQUITTO} is missing (Debian package mosquitto): MQTT rows skipped")
        wanted = [k for k in wanted if not k.startswith("mqtt")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="frameserve-push-bench-") as tmp:
        work = Path(tmp)
        media = work / "media"
        media.mkdir()
        say(f"making the clip ({args.clip_seconds} s of {args.size[0]}x{args.size[1]})...")
        make_benchmark_clip(media / "clip.mp4", frames=args.clip_seconds * FPS, size=args.size,
                            fps=FPS, gop=FPS)  # fmt: skip
        receiver = Receiver()
        broker = Broker(work) if any(k.startswith("mqtt") for k in wanted) else None
        # allowed to push to this process's loopback receivers
        server = live.Server(
            args.repository.resolve(), media, work, extra=("--allow-network", f"{LOOPBACK}/32")
        )
        try:
            for n in args.streams:
                for kind in wanted:
                    rows.append(measure(server, kind, n, args, receiver, broker))
                    r = rows[-1]
                    say(f"{kind} N={n}: {r['fps_in_per_stream']:.1f} fps/stream, server "
                        f"{r['server_cores']:.2f} cores, {r['server_ms_per_frame']} ms/frame, "
                        f"push sent {r['push_sent']} lost {r['push_lost']}")  # fmt: skip
        finally:
            server.stop()
            receiver.stop()
            if broker is not None:
                broker.stop()
    meta = live.run_meta(
        args,
        size=f"{args.size[0]}x{args.size[1]}",
        batch_size=args.batch_size,
        batch_ms=args.batch_ms,
    )
    write_latest(args.out, {"meta": meta, "rows": rows}, markdown(rows, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
