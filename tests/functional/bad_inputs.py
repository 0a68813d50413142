"""The bad-input corpus kit: what a case is, how it is sent, and the cases that need setup.

``test_bad_input_corpus.py`` holds the table (``CASES``); suites for keys, TLS, the source policy
and limits add their rows there with these helpers: ``http`` / ``infer`` for HTTP, ``grpc_raw`` /
``grpc_infer`` for gRPC, or any ``Send`` (a function of the ``Target`` returning the status and
the message).
"""

from __future__ import annotations

import gzip
import json
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.client import HTTPConnection
from pathlib import Path

import grpc

from frameserve.api.grpc.generated import grpc_service_pb2 as pb
from frameserve.api.grpc.generated import video_streams_pb2 as vpb

from servers import RunningServer

SHM_PREFIX = "frameserve_corpus_"
ROW = [1.0] * 64  # one row of matmul's input x [-1, 64]


@dataclass
class Target:
    """What a case talks to: the server, a gRPC channel, and a scratch shared-memory object."""

    server: RunningServer
    channel: grpc.Channel
    shm_key: str  # a 256-byte object under SHM_PREFIX, made fresh for each case that needs it


Answer = tuple[int | str, str]  # HTTP status or gRPC code name, and the message
Send = Callable[[Target], Answer]


@dataclass(frozen=True)
class Case:
    area: str  # http, grpc, repository, shm, image, job, upload, stream (and later rows' own)
    name: str
    send: Send
    status: int | str
    says: str  # a substring of the error message ("" when the answer has no body to name)

    @property
    def id(self) -> str:
        return f"{self.area}-{self.name}"


# -- senders ---------------------------------------------------------------------------------------
def http(
    method: str, path: str, body: bytes | dict | list | str = b"", headers: dict | None = None
) -> Send:
    """An HTTP request; a dict/list body is sent as JSON, a str as UTF-8."""
    if isinstance(body, dict | list):
        data = json.dumps(body).encode()
    elif isinstance(body, str):
        data = body.encode()
    else:
        data = body

    def send(t: Target) -> Answer:
        return http_answer(t.server, method, path, data, headers or {})

    return send


def http_answer(
    server: RunningServer, method: str, path: str, data: bytes, headers: dict
) -> Answer:
    conn = HTTPConnection("127.0.0.1", server.http_port, timeout=30)
    try:
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
    finally:
        conn.close()
    try:
        message = json.loads(raw).get("error", "")
    except (ValueError, AttributeError):
        message = raw.decode(errors="replace")
    return resp.status, message


def infer(inputs: object, model: str = "matmul", **extra: object) -> Send:
    return http("POST", f"/v2/models/{model}/infer", {"inputs": inputs, **extra})


def x(**overrides: object) -> dict:
    return {"name": "x", "datatype": "FP32", "shape": [1, 64], "data": ROW, **overrides}


def grpc_raw(method: str, data: bytes) -> Send:
    """Bytes to an ``inference.GRPCInferenceService`` method, as a hostile client sends them."""

    def send(t: Target) -> Answer:
        call = t.channel.unary_unary(f"/inference.GRPCInferenceService/{method}")
        try:
            call(data, timeout=30)
        except grpc.RpcError as err:
            return err.code().name, err.details() or ""
        return "OK", ""

    return send


def grpc_subscribe(stream_id: str) -> Send:
    """``frameserve.v1.VideoStreams/Subscribe`` (server streaming): the first answer."""
    data = vpb.SubscribeRequest(stream_id=stream_id).SerializeToString()

    def send(t: Target) -> Answer:
        call = t.channel.unary_stream("/frameserve.v1.VideoStreams/Subscribe")
        try:
            next(iter(call(data, timeout=30)))
        except grpc.RpcError as err:
            return err.code().name, err.details() or ""
        return "OK", ""

    return send


def grpc_infer(message: pb.ModelInferRequest) -> Send:
    return grpc_raw("ModelInfer", message.SerializeToString())


def grpc_x(dims: list[int], raw: bytes, model: str = "matmul") -> pb.ModelInferRequest:
    message = pb.ModelInferRequest(model_name=model)
    tensor = message.inputs.add(name="x", datatype="FP32")
    tensor.shape.extend(dims)
    message.raw_input_contents.append(raw)
    return message


def grpc_shm_x(region: str, byte_size: int = 256) -> pb.ModelInferRequest:
    """matmul's x read from a shared-memory region."""
    message = pb.ModelInferRequest(model_name="matmul")
    tensor = message.inputs.add(name="x", datatype="FP32")
    tensor.shape.extend([1, 64])
    tensor.parameters["shared_memory_region"].string_param = region
    tensor.parameters["shared_memory_byte_size"].int64_param = byte_size
    return message


def multipart(fields: dict[str, str], files: dict[str, bytes]) -> tuple[bytes, dict]:
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields.items()
    ]
    for k, v in files.items():
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"; filename="f.mp4"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n"
        )
        parts.append(head.encode() + v + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def upload(fields: dict[str, str], files: dict[str, bytes]) -> Send:
    body, headers = multipart(fields, files)
    return http("POST", "/v1/jobs", body, headers)


# -- shared memory cases that need a real object -----------------------------------------------
def _shm_path(t: Target) -> Path:
    return Path("/dev/shm") / t.shm_key.lstrip("/")


def register_region(t: Target, name: str, byte_size: int = 256) -> None:
    body = {"key": t.shm_key, "offset": 0, "byte_size": byte_size}
    status, message = http_answer(
        t.server,
        "POST",
        f"/v2/systemsharedmemory/region/{name}/register",
        json.dumps(body).encode(),
        {},
    )
    assert status == 200, message


def shm_truncated(t: Target) -> Answer:
    """Register, shrink the object (os.ftruncate), then infer from it: a SIGBUS before."""
    register_region(t, "shrunk")
    fd = os.open(_shm_path(t), os.O_RDWR)
    try:
        os.ftruncate(fd, 100)
    finally:
        os.close(fd)
    params = {"shared_memory_region": "shrunk", "shared_memory_byte_size": 256}
    tensor = {"name": "x", "datatype": "FP32", "shape": [1, 64], "parameters": params}
    return infer([tensor])(t)


def shm_output_truncated(t: Target) -> Answer:
    """The output half of the above: the result is written into a shrunk region."""
    register_region(t, "out")
    os.truncate(_shm_path(t), 16)
    params = {"shared_memory_region": "out", "shared_memory_byte_size": 256}
    return infer([x()], outputs=[{"name": "y", "parameters": params}])(t)


def shm_grpc_truncated(t: Target) -> Answer:
    register_region(t, "g")
    os.truncate(_shm_path(t), 0)
    return grpc_infer(grpc_shm_x("g"))(t)


def shm_over_cap(t: Target) -> Answer:
    """The server runs with --max-shm-regions 3."""
    for i in range(3):
        register_region(t, f"cap{i}")
    return http(
        "POST", "/v2/systemsharedmemory/region/cap3/register", {"key": t.shm_key, "byte_size": 16}
    )(t)


def shm_window_outside(t: Target) -> Answer:
    register_region(t, "small", 64)
    params = {"shared_memory_region": "small", "shared_memory_byte_size": 256}
    tensor = {"name": "x", "datatype": "FP32", "shape": [1, 64], "parameters": params}
    return infer([tensor])(t)


def binary_past_body() -> Send:
    """A binary-tensor request whose input claims 256 bytes where 10 follow the header."""
    params = {"binary_data_size": 256}
    header = json.dumps(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 64], "parameters": params}]}
    ).encode()
    length = {"Inference-Header-Content-Length": str(len(header))}
    return http("POST", "/v2/models/matmul/infer", header + b"\0" * 10, length)


def shm_size_not_the_shape(t: Target) -> Answer:
    register_region(t, "half")
    params = {"shared_memory_region": "half", "shared_memory_byte_size": 128}
    tensor = {"name": "x", "datatype": "FP32", "shape": [1, 64], "parameters": params}
    return infer([tensor])(t)


def shm_grpc_size_not_the_shape(t: Target) -> Answer:
    register_region(t, "gs")
    return grpc_infer(grpc_shm_x("gs", 255))(t)


def gzip_bomb() -> bytes:
    return gzip.compress(b"{" + b" " * (20 * 2**20) + b"}")  # 20 MB of spaces, > 8 MB limit


def grpc_load(**params: str) -> bytes:
    request = pb.RepositoryModelLoadRequest(model_name="matmul")
    for key, value in params.items():
        request.parameters[key].string_param = value
    return request.SerializeToString()
