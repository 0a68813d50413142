"""Lifecycle under load: version switch, reload, drain on SIGTERM, bad configs, readiness."""

from __future__ import annotations

import shutil
import signal
import threading
import time
from collections import Counter

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from frameserve.tools.example_models import matmul_relu, write_model_yaml

from repos import SLOW, python_model

MATMUL = {"backend": "onnxruntime", "max_batch_size": 16, "dynamic_batching": {}, "warmup": 1}


class LoadGenerator:
    """Sends matmul requests from a few threads until stopped; counts outcomes."""

    def __init__(self, url: str, threads: int = 4, model: str = "matmul") -> None:
        self.url, self.model = url, model
        self.outcomes: Counter[str] = Counter()
        self.errors: list[str] = []
        self.versions: Counter[str] = Counter()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def _run(self) -> None:
        client = httpclient.InferenceServerClient(self.url, network_timeout=60)
        x = np.ones((1, 64), np.float32)
        deadline = time.monotonic() + 120  # bounded even if stop is never called
        while not self._stop.is_set() and time.monotonic() < deadline:
            inp = httpclient.InferInput("x", [1, 64], "FP32")
            inp.set_data_from_numpy(x)
            try:
                result = client.infer(self.model, [inp])
                with self._lock:
                    self.outcomes["ok"] += 1
                    self.versions[result.get_response()["model_version"]] += 1
            except InferenceServerException as err:
                with self._lock:
                    self.outcomes["error"] += 1
                    self.errors.append(str(err))
        client.close()

    def __enter__(self) -> LoadGenerator:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)

    def wait_for(self, n: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        start = self.outcomes["ok"]
        while self.outcomes["ok"] - start < n and time.monotonic() < deadline:
            time.sleep(0.02)


def _matmul_repo(repo, versions=(1,), policy=None):
    for v in versions:
        matmul_relu(repo / "matmul" / str(v) / "model.onnx", seed=v)
    config = dict(MATMUL)
    if policy:
        config["version_policy"] = policy
    write_model_yaml(repo / "matmul", config)
    return repo


def _wait(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


def test_version_switch_under_load_fails_no_request(start_server, repo_dir):
    server = start_server(
        _matmul_repo(repo_dir), "--model-control-mode", "poll", "--poll-interval", "0.2"
    )
    with LoadGenerator(server.http_url) as load:
        load.wait_for(50)
        matmul_relu(repo_dir / "matmul" / "2" / "model.onnx", seed=2)  # a new version appears
        _wait(lambda: load.versions["2"] > 50)
    assert load.outcomes["error"] == 0, load.errors[:3]
    assert load.versions["1"] > 0 and load.versions["2"] > 0
    index = {
        (r["name"], r["version"])
        for r in httpclient.InferenceServerClient(server.http_url).get_model_repository_index()
    }
    assert ("matmul", "2") in index and ("matmul", "1") not in index  # latest: 1 retired v1


def test_reload_under_load_fails_no_request(start_server, repo_dir):
    server = start_server(
        _matmul_repo(repo_dir), "--model-control-mode", "explicit", "--load-model", "matmul"
    )
    client = httpclient.InferenceServerClient(server.http_url)
    with LoadGenerator(server.http_url) as load:
        load.wait_for(50)
        for batch in (8, 4, 16):  # three reloads with a changed config while traffic flows
            client.load_model(
                "matmul", config=f'{{"backend": "onnxruntime", "max_batch_size": {batch}}}'
            )
            assert client.get_model_config("matmul")["max_batch_size"] == batch
            load.wait_for(20)
    assert load.outcomes["error"] == 0, load.errors[:3]


def test_sigterm_drains_in_flight_requests(start_server, repo_dir):
    python_model(
        repo_dir,
        "slow",
        SLOW,
        {
            "max_batch_size": 1,
            "instances": 1,
            "parameters": {"delay_s": 0.5},
            "inputs": [{"name": "x", "datatype": "FP32", "dims": [4]}],
            "outputs": [{"name": "y", "datatype": "FP32", "dims": [4]}],
            "warmup": 0,
        },
    )
    server = start_server(repo_dir, "--exit-timeout", "30")
    results: list[object] = []

    def call() -> None:
        client = httpclient.InferenceServerClient(server.http_url, network_timeout=60)
        inp = httpclient.InferInput("x", [1, 4], "FP32")
        inp.set_data_from_numpy(np.ones((1, 4), np.float32))
        try:
            results.append(client.infer("slow", [inp]).as_numpy("y"))
        except InferenceServerException as err:
            results.append(err)

    threads = [threading.Thread(target=call) for _ in range(4)]  # 4 x 0.5 s, one at a time
    for t in threads:
        t.start()
    inflight = b'frameserve_inflight_requests{model="slow",version="1"} 4.0'
    _wait(lambda: inflight in server.get("/metrics")[1], 20)
    server.proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    # draining: not ready, and new work is refused with 503 while the 4 requests finish
    assert server.get("/v2/health/ready")[0] == 503
    client = httpclient.InferenceServerClient(server.http_url)
    inp = httpclient.InferInput("x", [1, 4], "FP32")
    inp.set_data_from_numpy(np.ones((1, 4), np.float32))
    with pytest.raises(InferenceServerException) as refused:
        client.infer("slow", [inp])
    assert refused.value.status() == "503"
    for t in threads:
        t.join(60)
    assert server.proc.wait(60) == 0
    assert all(isinstance(r, np.ndarray) for r in results), results
    np.testing.assert_array_equal(results[0], np.full((1, 4), 2.0, np.float32))


def test_invalid_model_yaml_others_keep_serving(start_server, repo_dir):
    _matmul_repo(repo_dir)
    shutil.copytree(repo_dir / "matmul", repo_dir / "broken")
    (repo_dir / "broken" / "model.yaml").write_text("backend: openvino\nmax_batch_size: -3\n")
    server = start_server(repo_dir)
    client = httpclient.InferenceServerClient(server.http_url)
    assert client.is_server_ready()
    assert client.is_model_ready("matmul") and not client.is_model_ready("broken")
    broken = [r for r in client.get_model_repository_index() if r["name"] == "broken"][0]
    assert broken["state"] == "UNAVAILABLE"
    assert "max_batch_size" in broken["reason"] and "-3" in broken["reason"]


def test_strict_readiness_keeps_server_unready(start_server, repo_dir):
    _matmul_repo(repo_dir)
    (repo_dir / "broken").mkdir()
    (repo_dir / "broken" / "model.yaml").write_text("backend: tensorflow\n")
    server = start_server(repo_dir, "--strict-readiness", wait=False)
    server.wait_live()
    _wait(lambda: server.get("/v2/models/matmul/ready")[0] == 200)
    time.sleep(0.5)
    assert server.get("/v2/health/ready")[0] == 503
    index = httpclient.InferenceServerClient(server.http_url).get_model_repository_index()
    broken = [r for r in index if r["name"] == "broken"][0]
    assert broken["state"] == "UNAVAILABLE" and "tensorflow" in broken["reason"]


def test_explicit_mode_load_and_unload(start_server, repo_dir):
    _matmul_repo(repo_dir)
    server = start_server(repo_dir, "--model-control-mode", "explicit")
    client = httpclient.InferenceServerClient(server.http_url)
    assert not client.is_model_ready("matmul")
    client.load_model("matmul")
    assert client.is_model_ready("matmul")
    client.unload_model("matmul")
    _wait(lambda: not client.is_model_ready("matmul"))
    with pytest.raises(InferenceServerException, match="not loaded"):
        inp = httpclient.InferInput("x", [1, 64], "FP32")
        inp.set_data_from_numpy(np.ones((1, 64), np.float32))
        client.infer("matmul", [inp])


def test_load_in_none_mode_is_refused(start_server, repo_dir):
    server = start_server(_matmul_repo(repo_dir))
    client = httpclient.InferenceServerClient(server.http_url)
    with pytest.raises(InferenceServerException, match="explicit"):
        client.load_model("matmul")


def test_version_policy_all_serves_each_version(start_server, repo_dir):
    server = start_server(_matmul_repo(repo_dir, versions=(1, 2, 3), policy="all"))
    client = httpclient.InferenceServerClient(server.http_url)
    x = np.ones((1, 64), np.float32)
    outs = []
    for v in ("1", "2", "3"):
        inp = httpclient.InferInput("x", [1, 64], "FP32")
        inp.set_data_from_numpy(x)
        result = client.infer("matmul", [inp], model_version=v)
        assert result.get_response()["model_version"] == v
        outs.append(result.as_numpy("y"))
    assert not np.array_equal(outs[0], outs[1])  # different weights per version
    assert client.get_model_metadata("matmul")["versions"] == ["1", "2", "3"]


def test_drain_delay_keeps_serving_while_unready(start_server, repo_dir):
    """--drain-delay: after SIGTERM readiness is 503 at once, but requests (and gRPC health)
    keep being answered for the delay; then the drain refuses new work and the server exits 0."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    server = start_server(_matmul_repo(repo_dir), "--drain-delay", "6", "--exit-timeout", "10")
    channel = grpc.insecure_channel(server.grpc_url)
    health = health_pb2_grpc.HealthStub(channel)
    serving = health_pb2.HealthCheckResponse.SERVING
    assert health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10).status == serving
    with LoadGenerator(server.http_url, threads=2) as load:
        load.wait_for(20)
        sent = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        _wait(lambda: server.get("/v2/health/ready")[0] == 503, 5)
        assert time.monotonic() - sent < 2  # unready long before the delay is over
        reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
        before = load.outcomes["ok"]
        load.wait_for(20, timeout=2)  # still served while unready
        assert load.outcomes["ok"] - before >= 20
        assert server.get("/v2/health/live")[0] == 200
    assert time.monotonic() - sent < 6, "the load stopped within the delay"
    assert load.outcomes["error"] == 0, load.errors
    channel.close()
    assert server.proc.wait(60) == 0
    assert time.monotonic() - sent >= 6, "the drain waited for --drain-delay"
