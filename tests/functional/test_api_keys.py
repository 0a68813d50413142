"""API keys with owners through a real ``frameserve serve --api-key-file``: tritonclient HTTP and
gRPC, plain HTTP requests, ownership of jobs and streams across two keys and an admin, Triton's
restricted categories, and SIGHUP reloading the key file (a bad file keeps the old keys).
A secret never appears in the server's log."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.utils import InferenceServerException
from video.media import make_clip

from frameserve.api.grpc.generated import video_streams_pb2 as vpb
from frameserve.api.grpc.generated import video_streams_pb2_grpc as vgrpc
from frameserve.tools.example_models import matmul_relu, write_model_yaml

from servers import RunningServer, ServerLauncher

ALICE = "alice-secret-0123456789"
BOB = "bob-secret-9876543210xyz"
ROOT = "root-secret-abcdefghijklmn"
CAROL = "carol-secret-00000000000"
KEYS = f"# test keys\nalice:{ALICE}\n\nbob:{BOB}\nroot:{ROOT}:admin\n"
SECRETS = (ALICE, BOB, ROOT, CAROL)


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def grpc_meta(secret: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {secret}")]


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "keys.txt"
    path.write_text(KEYS)
    return path


@pytest.fixture(scope="module")
def server(
    zoo_repository: Path, key_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    folder = tmp_path_factory.mktemp("keys-server")
    repo = folder / "models"
    matmul_relu(repo / "matmul" / "1" / "model.onnx", size=4)
    write_model_yaml(repo / "matmul", {"backend": "onnxruntime", "max_batch_size": 4})
    shutil.copytree(zoo_repository / "faces", repo / "faces")  # a link would leave the repo
    media = folder / "media"
    media.mkdir()
    make_clip(media / "clip.mp4", frames=24, size=(160, 120), gop=8, fps=24, audio=False)
    launcher = ServerLauncher(folder)
    running = launcher.start(
        repo,
        "--model-control-mode", "explicit", "--load-model", "*",
        "--media-root", str(media), "--state-dir", str(folder / "state"),
        "--api-key-file", str(key_file), "--log-format", "text", "--max-request-mb", "8",
        "--http-restricted-api", "model-config:x-config-key=open-sesame",
        "--grpc-restricted-protocol", "model-config:config-key=open-sesame",
    )  # fmt: skip
    yield running
    assert running.terminate() == 0, running.log()
    log = running.log()
    for secret in SECRETS:
        assert secret not in log


def http(server: RunningServer, method: str, path: str, secret: str | None = None, **kw: Any):
    headers = {**(bearer(secret) if secret else {}), **kw.pop("headers", {})}
    return requests.request(
        method, f"http://{server.http_url}{path}", headers=headers, timeout=60, **kw
    )


def test_health_is_open_and_everything_else_needs_a_key(server: RunningServer) -> None:
    assert http(server, "GET", "/v2/health/live").status_code == 200
    assert http(server, "GET", "/v2/health/ready").status_code == 200
    for method, path in [
        ("GET", "/v2"),
        ("GET", "/v2/models/matmul"),
        ("GET", "/v2/models/matmul/ready"),
        ("POST", "/v2/repository/index"),
        ("GET", "/v2/systemsharedmemory/status"),
        ("GET", "/metrics"),
        ("GET", "/v1/jobs"),
        ("GET", "/v1/streams"),
        ("GET", "/nowhere"),
    ]:
        for headers in ({}, bearer("not-a-key-0123456789"), {"Authorization": f"Basic {ALICE}"}):
            r = http(server, method, path, headers=headers)
            assert r.status_code == 401, (path, r.text)
            assert r.headers["WWW-Authenticate"] == "Bearer"
            assert "error" in r.json() and ALICE not in r.text
    assert http(server, "GET", "/v2", ALICE).status_code == 200
    assert http(server, "GET", "/metrics", BOB).status_code == 200


def test_a_refused_infer_is_not_read(server: RunningServer) -> None:
    """The infer fast path checks the key first: a body far over the limit gets 401, not 413."""
    body = b"x" * (16 * 2**20)  # twice --max-request-mb: a read would answer 413
    r = http(server, "POST", "/v2/models/matmul/infer", data=body)
    assert r.status_code == 401


def test_tritonclient_http_and_grpc_with_a_key(server: RunningServer) -> None:
    x = np.ones((1, 4), np.float32)
    client = httpclient.InferenceServerClient(server.http_url)
    with pytest.raises(InferenceServerException) as err:
        client.get_server_metadata()
    assert "authorization" in str(err.value)
    assert client.is_server_live()  # the probes need no key
    inp = httpclient.InferInput("x", [1, 4], "FP32")
    inp.set_data_from_numpy(x)
    result = client.infer("matmul", [inp], headers=bearer(ALICE))
    assert result.as_numpy("y").shape == (1, 4)

    g = grpcclient.InferenceServerClient(server.grpc_url)
    assert g.is_server_live() and g.is_server_ready()
    with pytest.raises(InferenceServerException) as err:
        g.get_server_metadata()
    assert err.value.status() == "StatusCode.UNAUTHENTICATED"
    with pytest.raises(InferenceServerException) as err:
        g.get_server_metadata(headers={"authorization": "Bearer wrong-key-0123456789"})
    assert err.value.status() == "StatusCode.UNAUTHENTICATED"
    assert g.get_server_metadata(headers={"authorization": f"Bearer {BOB}"}).name
    ginp = grpcclient.InferInput("x", [1, 4], "FP32")
    ginp.set_data_from_numpy(x)
    out = g.infer("matmul", [ginp], headers={"authorization": f"Bearer {BOB}"})
    assert out.as_numpy("y").shape == (1, 4)
    with grpc.insecure_channel(server.grpc_url) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        answer = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=30)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_repository_and_shared_memory_changes_need_an_admin(server: RunningServer) -> None:
    r = http(server, "POST", "/v2/repository/models/matmul/load", ALICE)
    assert r.status_code == 403 and "admin" in r.json()["error"], r.text
    r = http(server, "POST", "/v2/systemsharedmemory/region/r/register", ALICE, json={})
    assert r.status_code == 403
    assert http(server, "POST", "/v2/repository/index", ALICE).status_code == 200
    assert http(server, "POST", "/v2/repository/models/matmul/load", ROOT).status_code == 200
    g = grpcclient.InferenceServerClient(server.grpc_url)
    with pytest.raises(InferenceServerException) as err:
        g.unload_model("matmul", headers={"authorization": f"Bearer {ALICE}"})
    assert err.value.status() == "StatusCode.PERMISSION_DENIED"
    with pytest.raises(InferenceServerException) as err:
        g.register_system_shared_memory("r", "/k", 64, headers={"authorization": f"Bearer {BOB}"})
    assert err.value.status() == "StatusCode.PERMISSION_DENIED"
    g.load_model("matmul", headers={"authorization": f"Bearer {ROOT}"})


def test_a_restricted_category_needs_its_header_too(server: RunningServer) -> None:
    r = http(server, "GET", "/v2/models/matmul/config", ALICE)
    assert r.status_code == 403
    assert r.json() == {"error": "This API is restricted, expecting header 'x-config-key'"}
    wrong = http(server, "GET", "/v2/models/matmul/config", ALICE, headers={"x-config-key": "no"})
    assert wrong.status_code == 403
    good = {"x-config-key": "open-sesame"}
    assert http(server, "GET", "/v2/models/matmul/config", ALICE, headers=good).status_code == 200
    assert http(server, "GET", "/v2/models/matmul/config", headers=good).status_code == 401
    g = grpcclient.InferenceServerClient(server.grpc_url)
    meta = {"authorization": f"Bearer {ALICE}"}
    with pytest.raises(InferenceServerException) as err:
        g.get_model_config("matmul", headers=meta)
    assert err.value.status() == "StatusCode.UNAVAILABLE"
    assert "triton-grpc-protocol-config-key" in str(err.value)
    ok = {**meta, "triton-grpc-protocol-config-key": "open-sesame"}
    assert g.get_model_config("matmul", headers=ok).config.name == "matmul"


def test_jobs_belong_to_the_key_that_submitted_them(server: RunningServer) -> None:
    body = {"pipeline": "faces", "input": "clip.mp4"}
    r = http(server, "POST", "/v1/jobs", ALICE, json=body)
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["owner"] == "alice"
    path = f"/v1/jobs/{job['id']}"
    for suffix in ("", "/results", "/output"):
        assert http(server, "GET", path + suffix, BOB).status_code == 404
    assert http(server, "DELETE", path, BOB).status_code == 404
    assert job["id"] not in [j["id"] for j in http(server, "GET", "/v1/jobs", BOB).json()["jobs"]]
    for secret in (ALICE, ROOT):
        assert http(server, "GET", path, secret).json()["owner"] == "alice"
        listed = http(server, "GET", "/v1/jobs", secret).json()["jobs"]
        assert job["id"] in [j["id"] for j in listed]
    assert http(server, "DELETE", path, ALICE).status_code == 200


def test_streams_belong_to_the_key_that_attached_them(server: RunningServer) -> None:
    body = {"source": "clip.mp4", "pipeline": "faces", "loop": True}
    r = http(server, "POST", "/v1/streams", BOB, json=body)
    assert r.status_code == 201, r.text
    stream_id = r.json()["id"]
    try:
        path = f"/v1/streams/{stream_id}"
        assert http(server, "GET", path, ALICE).status_code == 404
        assert http(server, "GET", path + "/events", ALICE).status_code == 404
        for preview in ("/preview.jpg", "/preview.mjpeg", "/hls/index.m3u8"):
            assert http(server, "GET", path + preview, ALICE).status_code == 404
            assert http(server, "GET", path + preview, None).status_code == 401
        assert http(server, "DELETE", path, ALICE).status_code == 404
        assert http(server, "GET", "/v1/streams", ALICE).json() == {"streams": []}
        assert http(server, "GET", path, ROOT).json()["owner"] == "bob"
        with grpc.insecure_channel(server.grpc_url) as channel:
            stub = vgrpc.VideoStreamsStub(channel)
            listed = stub.ListStreams(vpb.ListStreamsRequest(), metadata=grpc_meta(ALICE))
            assert list(listed.stream_json) == []
            listed = stub.ListStreams(vpb.ListStreamsRequest(), metadata=grpc_meta(ROOT))
            assert stream_id in [json.loads(s)["id"] for s in listed.stream_json]
            call = stub.Subscribe(
                vpb.SubscribeRequest(stream_id=stream_id), metadata=grpc_meta(ALICE), timeout=30
            )
            with pytest.raises(grpc.RpcError) as err:
                next(iter(call))
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
            with pytest.raises(grpc.RpcError) as err:
                stub.ListStreams(vpb.ListStreamsRequest(), timeout=30)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        assert http(server, "DELETE", f"/v1/streams/{stream_id}", BOB).status_code == 200


@pytest.mark.parametrize("scheme", ["http", "grpc"])
def test_bench_sends_a_key_with_header(server: RunningServer, scheme: str) -> None:
    """``frameserve bench --header`` reaches a keyed server (HTTP headers, gRPC metadata), with
    the restricted model-config category's header too (bench reads the model's config)."""
    import subprocess
    import sys

    url = f"{scheme}://{server.http_url if scheme == 'http' else server.grpc_url}"
    argv = [sys.executable, "-m", "frameserve.cli.main", "bench", "--url", url,
            "--model", "matmul", "--concurrency", "1", "--duration", "0.3", "--warmup", "0",
            "--json"]  # fmt: skip
    restricted = "x-config-key" if scheme == "http" else "triton-grpc-protocol-config-key"
    keyed = subprocess.run(
        [*argv, "--header", f"Authorization: Bearer {ALICE}",
         "--header", f"{restricted}: open-sesame"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert keyed.returncode == 0, keyed.stderr
    assert json.loads(keyed.stdout)[0]["throughput"] > 0
    refused = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1
    assert "401" in refused.stderr or "UNAUTHENTICATED" in refused.stderr


def test_sighup_reloads_the_keys_and_a_bad_file_keeps_them(
    server: RunningServer, key_file: Path
) -> None:
    """Last in the module: it changes the keys."""
    key_file.write_text(f"carol:{CAROL}\nroot:{ROOT}:admin\n")
    server.proc.send_signal(signal.SIGHUP)
    _wait(lambda: http(server, "GET", "/v2", CAROL).status_code == 200)
    assert http(server, "GET", "/v2", ALICE).status_code == 401
    key_file.write_text(f"carol:{CAROL}\nbroken line with {ALICE}\n")
    server.proc.send_signal(signal.SIGHUP)
    _wait(lambda: "API keys not reloaded" in server.log())
    assert "line 2" in server.log()
    assert http(server, "GET", "/v2", CAROL).status_code == 200
    assert http(server, "GET", "/v2", ROOT).status_code == 200


def _wait(check: Any, timeout: float = 30.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_a_bad_key_file_stops_start_up_without_showing_the_secret(tmp_path: Path) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text(f"alice:{ALICE}\nbob {BOB}\n")
    (tmp_path / "models").mkdir()
    cmd = [sys.executable, "-m", "frameserve.cli.main", "serve", "--repository", "models"]
    done = subprocess.run(
        [*cmd, "--api-key-file", str(keys)], cwd=tmp_path, capture_output=True, timeout=120
    )
    out = (done.stdout + done.stderr).decode()
    assert done.returncode == 2, out
    assert f"{keys}, line 2" in out and BOB not in out
    done = subprocess.run(
        [*cmd, "--http-restricted-api", "inference,nonsense:k=v"],
        cwd=tmp_path,
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 2 and b"nonsense" in done.stderr
