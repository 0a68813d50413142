"""Request and connection limits against a real server (docs/security-limits.md).

One server with small limits: each refusal is a 4xx/5xx naming the limit, its flag and the
actual value, and the server stays up and answers the next request.
"""

from __future__ import annotations

import io
import json
import shutil
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from PIL import Image
from tritonclient.grpc import service_pb2, service_pb2_grpc

from repos import SLOW, python_model
from servers import RunningServer, ServerLauncher

REQUEST_TIMEOUT_S = 3
MAX_CONNECTIONS = 12


@pytest.fixture(scope="module")
def server(
    zoo_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    folder = tmp_path_factory.mktemp("limits")
    repo = folder / "models"
    shutil.copytree(zoo_repository / "text-det", repo / "text-det")
    io_ = {
        "inputs": [{"name": "x", "datatype": "FP32", "dims": [4]}],
        "outputs": [{"name": "y", "datatype": "FP32", "dims": [4]}],
    }
    python_model(
        repo, "slow", SLOW, {"max_batch_size": 8, "parameters": {"delay_s": 3}, **io_, "warmup": 0}
    )
    running = ServerLauncher(folder).start(
        repo,
        "--max-elements", "20000000",
        "--max-images", "2",
        "--max-json-mb", "0.01",
        "--request-timeout", str(REQUEST_TIMEOUT_S),
        "--model-timeout", "1",
        "--max-connections", str(MAX_CONNECTIONS),
        "--state-quota-mb", "0.001",  # the job database alone is over it
        "--max-grpc-streams", "1",
    )  # fmt: skip
    yield running
    assert running.terminate() == 0, running.log()


def png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 200, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def post(
    server: RunningServer, path: str, body: bytes, headers: dict[str, str]
) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        f"http://{server.http_url}{path}", data=body, method="POST", headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def still_serving(server: RunningServer) -> None:
    assert server.proc.poll() is None
    assert server.get("/v2/health/ready")[0] == 200


def test_a_thin_image_is_refused_before_it_becomes_a_huge_tensor(server: RunningServer) -> None:
    # 2000x1 through limit_side (short side 736) would be a [1, 3, 736, 1472000] float tensor.
    code, body = post(
        server, "/v1/models/text-det/predict", png(2000, 1), {"Content-Type": "image/png"}
    )
    assert code == 413, body
    assert "2000x1 would become shape [1, 3, 736, 1472000]" in body["error"]
    assert "limit of 20000000 elements (max_elements, --max-elements)" in body["error"]
    still_serving(server)


def test_v2_encoded_images_go_through_both_limits(server: RunningServer) -> None:
    client = httpclient.InferenceServerClient(server.http_url)
    name = client.get_model_metadata("text-det")["inputs"][0]["name"]
    for images, pattern in [
        ([png(2000, 1)], "(max_elements, --max-elements)"),
        ([png(8, 8)] * 3, "inputs[0]: 3 encoded images in one request, over the limit of 2 "
                          "(max_images, --max-images)"),
    ]:  # fmt: skip
        item = httpclient.InferInput(name, [len(images)], "BYTES")
        item.set_data_from_numpy(np.array(images, dtype=object), binary_data=True)
        with pytest.raises(httpclient.InferenceServerException) as err:
            client.infer("text-det", [item])
        assert err.value.status() == "413" and pattern in str(err.value), str(err.value)
    still_serving(server)


def test_grpc_encoded_images_over_the_limit_are_resource_exhausted(
    server: RunningServer,
) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    name = client.get_model_metadata("text-det").inputs[0].name
    item = grpcclient.InferInput(name, [3], "BYTES")
    item.set_data_from_numpy(np.array([png(8, 8)] * 3, dtype=object))
    with pytest.raises(grpcclient.InferenceServerException) as err:
        client.infer("text-det", [item])
    assert err.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
    assert "over the limit of 2 (max_images, --max-images)" in str(err.value)


def test_jobs_and_uploads_over_the_state_quota_get_507(server: RunningServer) -> None:
    body = json.dumps({"pipeline": "faces", "input": "clip.mp4"}).encode()
    code, answer = post(server, "/v1/jobs", body, {"Content-Type": "application/json"})
    assert code == 507, answer
    assert "quota of 1048 bytes (state_quota_bytes, --state-quota-mb)" in answer["error"]
    upload = (
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="v.mp4"\r\n\r\n'
        + b"\0" * 1000
        + b"\r\n--b--\r\n"
    )
    code, answer = post(
        server, "/v1/jobs", upload, {"Content-Type": "multipart/form-data; boundary=b"}
    )
    assert code == 507 and "--state-quota-mb" in answer["error"], answer
    still_serving(server)


def test_one_grpc_connection_runs_at_most_max_grpc_streams_calls(server: RunningServer) -> None:
    """With one stream a connection, a second call on the channel waits for the first: it
    ends after it, where it would otherwise end at once (the first runs the slow model)."""
    x = np.ones((1, 4), np.float32)
    slow = service_pb2.ModelInferRequest(model_name="slow")
    slow.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    slow.raw_input_contents.append(x.tobytes())
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=30)  # connected
        first = stub.ModelInfer.future(slow, timeout=60)
        time.sleep(0.2)  # the first call's stream is open
        second = stub.ServerLive.future(service_pb2.ServerLiveRequest(), timeout=60)
        assert second.result().live
        assert first.done()  # the second waited for the first call's stream to close
        assert first.exception() is not None  # 504: the model outlived --model-timeout


def test_json_over_the_limit_is_refused_before_parsing(server: RunningServer) -> None:
    big = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0.0] * 4}]}
    big["id"] = "x" * 20_000
    code, body = post(server, "/v2/models/slow/infer", json.dumps(big).encode(), {})
    assert code == 413
    assert "exceeds the limit of 10485 bytes (max_json_bytes, --max-json-mb)" in body["error"]
    header = {
        "Inference-Header-Content-Length": "50000",
        "Content-Type": "application/octet-stream",
    }
    code, body = post(server, "/v2/models/slow/infer", b"{}" + b" " * 60_000, header)
    assert code == 413 and "Inference-Header-Content-Length: JSON of 50000 bytes" in body["error"]
    still_serving(server)


def test_model_timeout_answers_504_while_the_model_still_runs(server: RunningServer) -> None:
    client = httpclient.InferenceServerClient(server.http_url, network_timeout=60)
    x = httpclient.InferInput("x", [1, 4], "FP32")
    x.set_data_from_numpy(np.ones((1, 4), np.float32))
    with pytest.raises(httpclient.InferenceServerException) as err:
        client.infer("slow", [x])
    assert err.value.status() == "504"
    assert "ran longer than 1 s (model_timeout_s, --model-timeout)" in str(err.value)
    still_serving(server)


def raw(server: RunningServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.http_port), timeout=30)


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_headers_that_do_not_arrive_in_time_close_the_connection(server: RunningServer) -> None:
    with raw(server) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")  # never finished
        assert read_all(sock) == b""  # closed by the server, no answer to a half request
    with raw(server) as sock:
        sock.sendall(b"GET /v2 HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n")
        assert read_all(sock).startswith(b"HTTP/1.1 431 ")
    still_serving(server)


def test_a_body_that_does_not_arrive_in_time_gets_408(server: RunningServer) -> None:
    with raw(server) as sock:
        sock.sendall(
            b"POST /v2/models/slow/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"
        )
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b"(request_timeout_s 3 s, --request-timeout" in answer
    still_serving(server)


def test_connections_over_the_limit_get_503(server: RunningServer) -> None:
    idle = [raw(server) for _ in range(MAX_CONNECTIONS)]
    try:
        time.sleep(0.2)  # let the server accept them
        with raw(server) as sock:
            sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert read_all(sock).startswith(b"HTTP/1.1 503 ")
    finally:
        for sock in idle:
            sock.close()
    time.sleep(0.2)
    still_serving(server)
