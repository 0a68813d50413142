"""KServe v2 over gRPC with Triton's own client (sync, aio, streaming, shared memory)."""

from __future__ import annotations

import asyncio
import queue

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aiogrpcclient
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException

from frameserve.datatypes import to_numpy

from repos import ECHO_DATATYPES


@pytest.fixture(scope="module")
def client(api_server):
    c = grpcclient.InferenceServerClient(api_server.grpc_url)
    yield c
    c.close()


def _data(dt: str) -> np.ndarray:
    if dt == "BYTES":
        return np.array([[b"a", b"", b"\x00\xff", "é".encode()]], dtype=object)
    if dt == "BOOL":
        return np.array([[True, False, False, True]])
    return (np.arange(4).reshape(1, 4) * 3).astype(to_numpy(dt))


def test_health_metadata_config(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.get_server_metadata(as_json=True)["name"] == "frameserve"
    assert client.is_model_ready("convnet")
    meta = client.get_model_metadata("matmul", as_json=True)
    assert meta["inputs"][0] == {"name": "x", "datatype": "FP32", "shape": ["-1", "64"]}
    config = client.get_model_config("matmul", as_json=True)["config"]
    assert config["max_batch_size"] == 16
    assert config["platform"] == "onnxruntime_onnx"


@pytest.mark.parametrize("dt", ECHO_DATATYPES)
def test_every_datatype_round_trips(client, dt):
    data = _data(dt)
    inp = grpcclient.InferInput("IN", list(data.shape), dt)
    inp.set_data_from_numpy(data)
    got = client.infer(f"echo_{dt.lower()}", [inp]).as_numpy("OUT")
    if dt == "BYTES":
        assert list(got.reshape(-1)) == list(data.reshape(-1))
    else:
        assert got.dtype == data.dtype
        np.testing.assert_array_equal(got, data)


def test_unknown_model_is_not_found(client):
    inp = grpcclient.InferInput("x", [1, 64], "FP32")
    inp.set_data_from_numpy(np.ones((1, 64), np.float32))
    with pytest.raises(InferenceServerException) as err:
        client.infer("no_such_model", [inp])
    assert err.value.status() == "StatusCode.NOT_FOUND"


def test_statistics_and_index(client):
    stats = client.get_inference_statistics("matmul", as_json=True)
    assert stats["model_stats"][0]["name"] == "matmul"
    index = client.get_model_repository_index(as_json=True)
    assert any(m["name"] == "convnet" and m["state"] == "READY" for m in index["models"])


def test_streaming_infer_answers_every_request(client, api_server):
    responses: queue.Queue = queue.Queue()
    stream_client = grpcclient.InferenceServerClient(api_server.grpc_url)
    stream_client.start_stream(callback=lambda result, error: responses.put((result, error)))
    try:
        for i in range(20):
            inp = grpcclient.InferInput("x", [1, 64], "FP32")
            inp.set_data_from_numpy(np.full((1, 64), float(i), np.float32))
            stream_client.async_stream_infer("matmul", [inp], request_id=str(i))
        # an error inside the stream comes back in-stream and does not close it
        bad = grpcclient.InferInput("x", [1, 63], "FP32")
        bad.set_data_from_numpy(np.ones((1, 63), np.float32))
        stream_client.async_stream_infer("matmul", [bad], request_id="bad")
        got = [responses.get(timeout=30) for _ in range(21)]
    finally:
        stream_client.stop_stream()
        stream_client.close()
    ok = {r.get_response().id for r, e in got if e is None}
    errors = [e for r, e in got if e is not None]
    assert ok == {str(i) for i in range(20)}
    assert len(errors) == 1 and "shape" in str(errors[0])


def test_aio_client_concurrent(api_server):
    async def run() -> None:
        c = aiogrpcclient.InferenceServerClient(api_server.grpc_url)
        try:

            async def one(i: int) -> np.ndarray:
                inp = aiogrpcclient.InferInput("IN", [1, 4], "INT32")
                inp.set_data_from_numpy(np.full((1, 4), i, np.int32))
                return (await c.infer("echo_int32", [inp])).as_numpy("OUT")

            outs = await asyncio.gather(*(one(i) for i in range(50)))
            for i, out in enumerate(outs):
                np.testing.assert_array_equal(out, np.full((1, 4), i, np.int32))
        finally:
            await c.close()

    asyncio.run(asyncio.wait_for(run(), 60))


def test_system_shared_memory_input_and_output(client):
    x = np.random.default_rng(0).random((2, 64), dtype=np.float32)
    nbytes = x.nbytes
    key = f"/frameserve_test_{id(x)}"
    handle = shm.create_shared_memory_region("fs_io", key, nbytes * 2)
    try:
        shm.set_shared_memory_region(handle, [x])
        client.register_system_shared_memory("fs_io", key, nbytes * 2)
        status = client.get_system_shared_memory_status(as_json=True)
        assert any(r["name"] == "fs_io" for r in status["regions"].values())
        inp = grpcclient.InferInput("x", [2, 64], "FP32")
        inp.set_shared_memory("fs_io", nbytes)
        out = grpcclient.InferRequestedOutput("y")
        out.set_shared_memory("fs_io", nbytes, offset=nbytes)
        result = client.infer("matmul", [inp], outputs=[out])
        output = result.get_output("y")  # metadata only: the data is in shared memory
        assert output is not None and list(output.shape) == [2, 64]
        y = shm.get_contents_as_numpy(handle, np.float32, [2, 64], offset=nbytes)
        plain = grpcclient.InferInput("x", [2, 64], "FP32")
        plain.set_data_from_numpy(x)
        np.testing.assert_array_equal(y, client.infer("matmul", [plain]).as_numpy("y"))
        client.unregister_system_shared_memory("fs_io")
    finally:
        shm.destroy_shared_memory_region(handle)


def test_unregistered_region_is_an_error(client):
    inp = grpcclient.InferInput("x", [1, 64], "FP32")
    inp.set_shared_memory("never_registered", 256)
    with pytest.raises(InferenceServerException) as err:
        client.infer("matmul", [inp])
    assert "never_registered" in str(err.value)


def test_cuda_shared_memory_is_unimplemented(api_server):
    from frameserve.api.grpc.generated import grpc_service_pb2 as pb
    from frameserve.api.grpc.generated import grpc_service_pb2_grpc as pb_grpc

    with grpc.insecure_channel(api_server.grpc_url) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.CudaSharedMemoryStatus(pb.CudaSharedMemoryStatusRequest())
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
