"""Two replicas behind HAProxy (``deploy/haproxy/haproxy.cfg`` as shipped, ports replaced by free
ones): one replica is stopped with SIGTERM under HTTP and gRPC load, and no request fails,
because ``--drain-delay`` turns its readiness false while it still serves, and the balancer's
health check takes it out before it drains."""

from __future__ import annotations

import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from frameserve.tools.example_models import make_example_repository

from servers import RunningServer, ServerLauncher, free_port

CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "haproxy" / "haproxy.cfg"
DRAIN_DELAY_S = 3.0

pytestmark = pytest.mark.skipif(
    shutil.which("haproxy") is None,
    reason="haproxy is not installed (make test installs Debian's haproxy with apt-get)",
)


class Load:
    """HTTP and gRPC matmul requests through the balancer from a few threads until stopped."""

    def __init__(self, http_url: str, grpc_url: str) -> None:
        self.outcomes: Counter[str] = Counter()
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(kind, url), daemon=True)
            for kind, url in [("http", http_url), ("http", http_url), ("grpc", grpc_url)]
        ]

    def _run(self, kind: str, url: str) -> None:
        lib = httpclient if kind == "http" else grpcclient
        client = lib.InferenceServerClient(url)
        x = np.ones((1, 64), np.float32)
        deadline = time.monotonic() + 90  # bounded even if stop is never called
        while not self._stop.is_set() and time.monotonic() < deadline:
            inp = lib.InferInput("x", [1, 64], "FP32")
            inp.set_data_from_numpy(x)
            try:
                client.infer("matmul", [inp])
                outcome = f"{kind} ok"
            except Exception as err:  # noqa: BLE001 - every failure counts, whatever its type
                outcome = f"{kind} error"
                with self._lock:
                    self.errors.append(f"{kind}: {err}")
            with self._lock:
                self.outcomes[outcome] += 1
        client.close()

    def ok(self) -> int:
        return self.outcomes["http ok"] + self.outcomes["grpc ok"]

    def wait_for(self, n: int, timeout: float = 30.0) -> None:
        start, deadline = self.ok(), time.monotonic() + timeout
        while self.ok() - start < n and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self.ok() - start >= n, f"{n} requests not done in {timeout}s: {self.outcomes}"

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)


def _haproxy_config(replicas: list[RunningServer], http_port: int, grpc_port: int) -> str:
    text = CONFIG.read_text()
    swaps = {"127.0.0.1:8080": f"127.0.0.1:{http_port}", "127.0.0.1:8081": f"127.0.0.1:{grpc_port}"}
    for replica, (http, grpc) in zip(replicas, [(8000, 8001), (8100, 8101)], strict=True):
        swaps[f"127.0.0.1:{http} "] = f"127.0.0.1:{replica.http_port} "
        swaps[f"127.0.0.1:{grpc} "] = f"127.0.0.1:{replica.grpc_port} "
        swaps[f"check port {http}"] = f"check port {replica.http_port}"
    for old, new in swaps.items():
        assert old in text, f"{CONFIG.name} no longer has {old!r}"
        text = text.replace(old, new)
    return text


def _served(replica: RunningServer) -> float:
    text = replica.get("/metrics")[1].decode()
    line = 'frameserve_request_success_total{model="matmul",version="1"} '
    return sum(float(row[len(line) :]) for row in text.splitlines() if row.startswith(line))


def _wait(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"not reached in {timeout}s: {what}"
        time.sleep(0.1)


def _wait_until_balanced(http_port: int, grpc_port: int, replicas: list[RunningServer]) -> None:
    """The balancer answers on both ports, its health checks having found a replica up."""
    http = httpclient.InferenceServerClient(f"127.0.0.1:{http_port}")
    grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")

    def ready() -> bool:
        try:
            return bool(http.is_server_ready() and grpc.is_server_ready())
        except Exception:  # noqa: BLE001 - not listening yet, or no replica up yet
            return False

    _wait(ready, "haproxy forwards to a ready replica")
    http.close()
    grpc.close()


def test_a_replica_leaves_under_load_without_a_failed_request(tmp_path: Path) -> None:
    make_example_repository(tmp_path / "models")
    launcher = ServerLauncher(tmp_path)
    lb_http, lb_grpc = free_port(), free_port()
    haproxy = None
    try:
        args = ("--drain-delay", str(DRAIN_DELAY_S), "--exit-timeout", "10")
        leaving, staying = (launcher.start(tmp_path / "models", *args) for _ in range(2))
        config = tmp_path / "haproxy.cfg"
        config.write_text(_haproxy_config([leaving, staying], lb_http, lb_grpc))
        with (tmp_path / "haproxy.log").open("wb") as log:
            haproxy = subprocess.Popen(
                ["haproxy", "-db", "-f", str(config)], stdout=log, stderr=log
            )
        _wait_until_balanced(lb_http, lb_grpc, [leaving, staying])
        with Load(f"127.0.0.1:{lb_http}", f"127.0.0.1:{lb_grpc}") as load:
            load.wait_for(200)
            _wait(lambda: all(_served(r) > 0 for r in (leaving, staying)), "both replicas serve")
            leaving.proc.send_signal(signal.SIGTERM)
            assert leaving.proc.wait(DRAIN_DELAY_S + 30) == 0, leaving.log()
            load.wait_for(200)  # the other replica carries on alone
        assert load.errors == [], load.errors[:5]
        assert load.outcomes["http ok"] > 0 and load.outcomes["grpc ok"] > 0
        assert "leaving: readiness is false" in leaving.log()
    finally:
        if haproxy is not None:
            haproxy.terminate()
            haproxy.wait(30)
        launcher.stop_all()
