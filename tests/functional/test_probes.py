"""What probes and discovery tools read: gRPC health (per model too), server reflection, process
metrics, and /metrics on a port of its own."""

from __future__ import annotations

import urllib.request

import grpc
import pytest
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from prometheus_client.parser import text_string_to_metric_families

from frameserve.tools.example_models import make_example_repository

from servers import RunningServer

SERVING = health_pb2.HealthCheckResponse.SERVING


@pytest.fixture(scope="module")
def channel(api_server: RunningServer):
    with grpc.insecure_channel(api_server.grpc_url) as ch:
        yield ch


def _check(channel: grpc.Channel, service: str) -> int:
    reply = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=service), timeout=10
    )
    return int(reply.status)


def test_grpc_health_for_the_server_and_each_model(channel):
    assert _check(channel, "") == SERVING
    assert _check(channel, "inference.GRPCInferenceService") == SERVING
    assert _check(channel, "matmul") == SERVING
    assert _check(channel, "convnet") == SERVING
    with pytest.raises(grpc.RpcError) as unknown:
        _check(channel, "no-such-model")
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no-such-model" in unknown.value.details()


def test_grpc_health_watch_sends_the_current_status(channel):
    stream = health_pb2_grpc.HealthStub(channel).Watch(
        health_pb2.HealthCheckRequest(service="matmul"), timeout=10
    )
    assert next(stream).status == SERVING
    stream.cancel()
    unknown = health_pb2_grpc.HealthStub(channel).Watch(
        health_pb2.HealthCheckRequest(service="not-yet"), timeout=10
    )
    assert next(unknown).status == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
    unknown.cancel()


def test_server_reflection_lists_and_describes_the_services(channel):
    db = ProtoReflectionDescriptorDatabase(channel)
    services = set(db.get_services())
    assert {
        "inference.GRPCInferenceService",
        "frameserve.v1.VideoStreams",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= services
    pool = DescriptorPool(db)
    service = pool.FindServiceByName("inference.GRPCInferenceService")
    infer = service.methods_by_name["ModelInfer"]
    assert infer.input_type.full_name == "inference.ModelInferRequest"


def test_process_metrics_are_exported(api_server):
    text = api_server.get("/metrics")[1].decode()
    names = {family.name for family in text_string_to_metric_families(text)}
    expected = {"process_cpu_seconds", "process_resident_memory_bytes", "process_open_fds"}
    assert expected <= names, expected - names
    assert "python_info" in names


def test_metrics_on_a_port_of_their_own(start_server, tmp_path):
    from servers import free_port

    port = free_port()
    make_example_repository(tmp_path / "models")
    server = start_server(tmp_path / "models", "--metrics-port", str(port))
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        assert reply.status == 200
        body = reply.read().decode()
    assert 'frameserve_request_success_total{model="matmul",version="1"}' in body or (
        "frameserve_inference_count" in body
    )
    assert "process_resident_memory_bytes" in body
    with pytest.raises(urllib.error.HTTPError) as other:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=10)
    assert other.value.code == 404  # only /metrics on the metrics port
    assert server.get("/metrics")[0] == 200  # and still on the HTTP port


@pytest.mark.parametrize(
    ("flag", "listener"), [("--metrics-port", "metrics"), ("--http-port", "HTTP")]
)
def test_a_port_in_use_stops_start_up_with_the_reason(start_server, tmp_path, flag, listener):
    import socket

    make_example_repository(tmp_path / "models")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # the launcher's own --http-port comes first: the last one given wins
        server = start_server(tmp_path / "models", flag, str(port), wait=False)
        assert server.proc.wait(60) == 1, server.log()
    assert f"{listener} listener on 127.0.0.1:{port} failed to start" in server.log()


def test_the_launcher_starts_again_when_a_port_it_picked_was_taken(tmp_path, monkeypatch):
    """A port ``free_port`` saw free can be taken before the server binds it (an outgoing
    connection's ephemeral port did so in CI): the tests' launcher starts the server again
    on new ports instead of failing a whole module."""
    import socket

    import servers

    make_example_repository(tmp_path / "models")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        picks = iter([taken.getsockname()[1]])
        fresh = servers.free_port
        monkeypatch.setattr(servers, "free_port", lambda: next(picks, None) or fresh())
        launcher = servers.ServerLauncher(tmp_path)
        try:
            server = launcher.start(tmp_path / "models")
            assert server.get("/v2/health/ready")[0] == 200
            first, second = launcher.started
            assert first.proc.returncode == 1 and "failed to start" in first.log()
            assert second is server and server.http_port != taken.getsockname()[1]
        finally:
            launcher.stop_all()
