"""Every bad request gets a clear error naming what was wrong; the server stays up."""

from __future__ import annotations

import http.client
import json
import struct
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

MATMUL_ROW = [1.0] * 64


def post(server, path: str, body: bytes, headers: dict | None = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
    try:
        conn.request("POST", path, body=body, headers=headers or {})
        resp = conn.getresponse()
        raw = resp.read()
    finally:
        conn.close()
    try:
        return resp.status, json.loads(raw)
    except ValueError:
        return resp.status, {"raw": raw.decode(errors="replace")}


def infer_json(server, inputs: list, model: str = "matmul", **extra) -> tuple[int, dict]:
    body = json.dumps({"inputs": inputs, **extra}).encode()
    return post(server, f"/v2/models/{model}/infer", body)


def x_input(**overrides) -> dict:
    return {"name": "x", "datatype": "FP32", "shape": [1, 64], "data": MATMUL_ROW, **overrides}


@pytest.fixture(autouse=True)
def server_still_serves(api_server):
    yield
    status, body = infer_json(api_server, [x_input()])
    assert status == 200, body


def test_unknown_model_404(api_server):
    status, body = infer_json(api_server, [x_input()], model="nope")
    assert status == 404 and "nope" in body["error"]


def test_unknown_version_404(api_server):
    status, body = post(
        api_server,
        "/v2/models/matmul/versions/7/infer",
        json.dumps({"inputs": [x_input()]}).encode(),
    )
    assert status == 404 and "7" in body["error"]


def test_wrong_input_name(api_server):
    status, body = infer_json(api_server, [x_input(name="images")])
    assert status == 400
    assert (
        "inputs[0].name" in body["error"] and "'x'" in body["error"] and "images" in body["error"]
    )


def test_wrong_datatype(api_server):
    status, body = infer_json(api_server, [x_input(datatype="INT32", data=[1] * 64)])
    assert status == 400
    assert "datatype" in body["error"] and "FP32" in body["error"] and "INT32" in body["error"]


def test_wrong_shape(api_server):
    status, body = infer_json(api_server, [x_input(shape=[1, 32], data=[1.0] * 32)])
    assert status == 400
    assert "shape" in body["error"] and "64" in body["error"] and "32" in body["error"]


def test_batch_over_max_batch_size(api_server):
    status, body = infer_json(api_server, [x_input(shape=[17, 64], data=[1.0] * 64 * 17)])
    assert status == 400 and "16" in body["error"] and "17" in body["error"]


def test_json_data_length_not_matching_shape(api_server):
    status, body = infer_json(api_server, [x_input(data=[1.0] * 63)])
    assert status == 400
    assert "inputs[0]" in body["error"] and "64" in body["error"] and "63" in body["error"]


def test_malformed_json(api_server):
    status, body = post(api_server, "/v2/models/matmul/infer", b'{"inputs": [')
    assert status == 400 and "JSON" in body["error"]


def test_missing_inputs_field(api_server):
    status, body = post(api_server, "/v2/models/matmul/infer", b'{"outputs": []}')
    assert status == 400 and "inputs" in body["error"]


def _binary_request(nbytes_declared: int, payload: bytes, header_len: int | None = None):
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": [1, 64],
                    "parameters": {"binary_data_size": nbytes_declared},
                }
            ]
        }
    ).encode()
    length = len(header) if header_len is None else header_len
    return header + payload, {"Inference-Header-Content-Length": str(length)}


def test_binary_size_not_matching_shape(api_server):
    body, headers = _binary_request(128, b"\0" * 128)
    status, reply = post(api_server, "/v2/models/matmul/infer", body, headers)
    assert status == 400 and "256" in reply["error"] and "128" in reply["error"]


def test_truncated_binary_body(api_server):
    body, headers = _binary_request(256, b"\0" * 100)
    status, reply = post(api_server, "/v2/models/matmul/infer", body, headers)
    assert status == 400 and "binary" in reply["error"].lower()


def test_header_length_larger_than_body(api_server):
    body, headers = _binary_request(256, b"\0" * 256, header_len=10_000)
    status, reply = post(api_server, "/v2/models/matmul/infer", body, headers)
    assert status == 400 and "Inference-Header-Content-Length" in reply["error"]


def test_body_over_limit_413(api_server):
    n = 3 * 2**20  # 12 MiB of FP32 against --max-request-mb 8
    body, headers = _binary_request(4 * n, b"\0" * (4 * n))
    status, reply = post(api_server, "/v2/models/matmul/infer", body, headers)
    assert status == 413


def test_element_count_over_limit_413(api_server):
    # 2,000,000 elements against --max-elements 1000000, declared in a small body
    header = json.dumps(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [31250, 64], "data": [0.0]}]}
    ).encode()
    status, reply = post(api_server, "/v2/models/matmul/infer", header)
    assert status == 413 and "1000000" in reply["error"]


@pytest.mark.parametrize("name", ["a%2Fb", "..", "%2E%2E", "a/../../etc", "..%2F..%2Fetc"])
def test_model_names_that_could_escape_the_repository(api_server, name):
    for action in ("load", "unload"):
        status, _ = post(api_server, f"/v2/repository/models/{name}/{action}", b"{}")
        assert 400 <= status < 500, (name, action, status)
    assert (api_server.repository / "matmul" / "model.yaml").is_file()


def test_queue_full_is_429(api_server):
    # `slow` sleeps 0.3 s per batch of up to 8 and queues at most 4 requests
    def call(_: int) -> int:
        return infer_json(
            api_server,
            [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}],
            model="slow",
        )[0]

    with ThreadPoolExecutor(24) as pool:
        codes = list(pool.map(call, range(24)))
    assert 429 in codes and 200 in codes
    assert set(codes) <= {200, 429}


def test_request_timeout_is_504(api_server):
    slow_input = {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}

    def call(timeout_us: int) -> tuple[int, dict]:
        params = {"parameters": {"timeout": timeout_us}} if timeout_us else {}
        return infer_json(api_server, [slow_input], model="slow", **params)

    with ThreadPoolExecutor(2) as pool:
        busy = pool.submit(call, 0)  # occupies the model for 0.3 s
        time.sleep(0.05)
        status, body = call(1000)  # 1 ms: expires while queued behind the busy batch
        assert busy.result()[0] == 200
    assert status == 504 and "timeout" in body["error"]


def test_priority_out_of_range(api_server):
    status, body = infer_json(api_server, [x_input()], parameters={"priority": 9})
    assert status == 400 and "priority" in body["error"]


def test_grpc_codes_match(api_server):
    client = grpcclient.InferenceServerClient(api_server.grpc_url)
    try:
        bad = grpcclient.InferInput("x", [1, 63], "FP32")
        bad.set_data_from_numpy(np.ones((1, 63), np.float32))
        with pytest.raises(InferenceServerException) as err:
            client.infer("matmul", [bad])
        assert err.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert "shape" in err.value.message()
        wrong_type = grpcclient.InferInput("x", [1, 64], "INT32")
        wrong_type.set_data_from_numpy(np.ones((1, 64), np.int32))
        with pytest.raises(InferenceServerException) as err:
            client.infer("matmul", [wrong_type])
        assert err.value.status() == "StatusCode.INVALID_ARGUMENT"
    finally:
        client.close()


def test_grpc_raw_contents_length_mismatch(api_server):
    from frameserve.api.grpc.generated import grpc_service_pb2 as pb
    from frameserve.api.grpc.generated import grpc_service_pb2_grpc as pb_grpc

    request = pb.ModelInferRequest(model_name="matmul")
    tensor = request.inputs.add(name="x", datatype="FP32")
    tensor.shape.extend([1, 64])
    request.raw_input_contents.append(struct.pack("<10f", *range(10)))
    with grpc.insecure_channel(api_server.grpc_url) as channel, pytest.raises(grpc.RpcError) as err:
        pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "raw_input_contents[0]" in err.value.details()
    assert "256" in err.value.details() and "40" in err.value.details()


def test_grpc_message_over_limit(api_server):
    client = grpcclient.InferenceServerClient(api_server.grpc_url)
    try:
        big = grpcclient.InferInput("x", [16, 64 * 2**10], "FP32")  # 4 MiB ... x 4 = 16 MiB
        big.set_data_from_numpy(np.zeros((16, 64 * 2**10), np.float32))
        with pytest.raises(InferenceServerException) as err:
            client.infer("matmul", [big])
        assert err.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
    finally:
        client.close()
