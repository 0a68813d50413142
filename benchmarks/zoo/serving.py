"""Image requests through a real ``frameserve serve`` on loopback, timed by client and server.

The server is started on free ports and stopped by its PID (SIGTERM, then SIGKILL after a
grace period); requests are sequential over one keep-alive connection, and each response's
``Server-Timing`` splits the server's time into decode, preprocess, infer and postprocess.
"""

from __future__ import annotations

import http.client
import json
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import free_port
from inputs import encoded_image

LOOPBACK = "127.0.0.1"
STEPS = ("decode", "preprocess", "infer", "postprocess")


def _status(port: int, path: str) -> int | None:
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=2)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    except OSError:
        return None
    finally:
        conn.close()


class ZooServer:
    """``frameserve serve`` on a repository, as a child process."""

    def __init__(self, repository: Path, log_path: Path) -> None:
        self.http_port = free_port()
        grpc = free_port()
        while grpc == self.http_port:
            grpc = free_port()
        exe = Path(sys.executable).parent / "frameserve"
        cmd = [str(exe)] if exe.is_file() else [sys.executable, "-m", "frameserve.cli.main"]
        self.command = [
            *cmd, "serve", "--repository", str(repository), "--host", LOOPBACK,
            "--http-port", str(self.http_port), "--grpc-port", str(grpc),
            "--log-format", "text", "--log-level", "info",
        ]  # fmt: skip
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self, models: list[str], timeout_s: float = 240.0) -> float:
        """Seconds until ``/v2/health/ready`` and every model's ready endpoint answer 200."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        paths = ["/v2/health/ready", *(f"/v2/models/{m}/ready" for m in models)]
        while time.perf_counter() - t0 < timeout_s:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"server exited with {self.proc.returncode}; see {self.log_path}"
                )
            if all(_status(self.http_port, p) == 200 for p in paths):
                return time.perf_counter() - t0
            time.sleep(0.2)
        raise TimeoutError(f"server not ready within {timeout_s:.0f} s; see {self.log_path}")

    def loaded_models(self) -> dict[str, str]:
        """What the server says it compiled, per model (its ``loaded NAME vN: ...`` lines)."""
        found = {}
        for line in self.log_path.read_text(errors="replace").splitlines():
            match = re.search(r"loaded (\S+) v\d+: (.*)$", line)
            if match:
                found[match.group(1)] = match.group(2).strip()
        return found

    def stop(self, grace_s: float = 20.0) -> int | None:
        """SIGTERM by PID, wait, then SIGKILL if it is still there."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode


def parse_server_timing(header: str | None) -> dict[str, float]:
    """``decode;dur=1.23, infer;dur=4.5`` -> {"decode": 1.23, "infer": 4.5} (milliseconds)."""
    out: dict[str, float] = {}
    for part in (header or "").split(","):
        name, _, rest = part.strip().partition(";")
        if rest.startswith("dur="):
            out[name] = float(rest[4:])
    return out


def describe_result(body: bytes) -> str:
    """A few words on what the server found, to show that the request did real work."""
    data = json.loads(body)
    if "detections" in data:
        return f"{len(data['detections'])} detections"
    if "mask" in data:
        return f"mask {data['mask']['width']}x{data['mask']['height']}"
    if "texts" in data:
        texts = [t["text"] for t in data["texts"] if t.get("text")]
        return f"{len(data['texts'])} regions" + (f": {' / '.join(texts[:2])!r}" if texts else "")
    return ", ".join(sorted(data))[:60]


def image_requests(port: int, model: str, count: int, warmup: int) -> dict:
    """``count`` sequential requests (after ``warmup``) with the model's real image."""
    body, content_type = encoded_image(model)
    headers = {"Content-Type": content_type, "Content-Length": str(len(body))}
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=120)
    client: list[float] = []
    steps: dict[str, list[float]] = {s: [] for s in STEPS}
    record: dict = {"image_bytes": len(body), "content_type": content_type, "error": None}
    try:
        for i in range(warmup + count):
            t0 = time.perf_counter()
            conn.request("POST", f"/v1/models/{model}/predict", body, headers)
            resp = conn.getresponse()
            data = resp.read()
            elapsed = (time.perf_counter() - t0) * 1000
            if resp.status != 200:
                record["error"] = f"HTTP {resp.status}: {data[:300]!r}"
                break
            if i < warmup:
                continue
            client.append(elapsed)
            timing = parse_server_timing(resp.getheader("Server-Timing"))
            for step in STEPS:
                steps[step].append(timing.get(step, 0.0))
            record["result"] = describe_result(data)
    finally:
        conn.close()
    record.update(_shares(client, steps))
    return record


def _shares(client: list[float], steps: dict[str, list[float]]) -> dict:
    """Client p50/p90, and per step the median ms and the median share of the client time."""
    if not client:
        return {"n": 0}
    ordered = sorted(client)
    out: dict = {
        "n": len(client),
        "p50_ms": statistics.median(client),
        "p90_ms": ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))],
        "steps": {},
    }
    rest = [c - sum(steps[s][i] for s in STEPS) for i, c in enumerate(client)]
    for step, values in [*steps.items(), ("http_and_queue", rest)]:
        out["steps"][step] = {
            "ms": statistics.median(values),
            "share": statistics.median(v / c for v, c in zip(values, client, strict=True)),
        }
    return out
