"""What ``frameserve bench`` and ``tune`` send requests to: this process or a running server.

Three targets share one small surface (``open``, ``infer``, ``stats``, ``close``) and run on the
caller's event loop:

- ``LocalTarget``: a repository model served by ``InferenceServer`` in this process (the caller
  runs on the server's own loop, so a request costs what the server costs, with no transport);
- ``HttpTarget``: KServe v2 over HTTP with Triton's binary tensor extension (aiohttp);
- ``GrpcTarget``: ``inference.GRPCInferenceService/ModelInfer`` with the request serialised
  once and replies left unparsed, so the client spends as little CPU as it can.

Statistics come back as Triton's ``ModelStatistics`` message from all three, so the bench reads
the server's own queue/compute split and inference counts the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import numpy as np
from google.protobuf import json_format

from frameserve.api.grpc.generated import grpc_service_pb2 as pb
from frameserve.api.triton_config import model_statistics_proto
from frameserve.datatypes import from_numpy, to_numpy
from frameserve.errors import FrameserveError, InvalidInput, NotFound, Unavailable
from frameserve.serving.server import InferenceServer
from frameserve.serving.types import InferRequest, InputTensor

GRPC_INFER = "/inference.GRPCInferenceService/ModelInfer"


@dataclass(frozen=True)
class InputInfo:
    name: str
    datatype: str
    dims: tuple[int, ...]  # without the batch dimension; -1 = any size


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    max_batch_size: int
    inputs: tuple[InputInfo, ...]


@dataclass(frozen=True)
class StatsSnapshot:
    """Cumulative counters of one model version, as Triton's statistics extension gives them."""

    success: int = 0
    failures: int = 0
    inferences: int = 0
    executions: int = 0
    queue_ns: int = 0
    compute_input_ns: int = 0
    compute_infer_ns: int = 0
    compute_output_ns: int = 0

    @classmethod
    def from_proto(cls, response: pb.ModelStatisticsResponse, version: str) -> StatsSnapshot:
        rows = [s for s in response.model_stats if not version or s.version == version]
        if not rows:
            return cls()
        s = rows[0]
        i = s.inference_stats
        return cls(
            i.success.count,
            i.fail.count,
            s.inference_count,
            s.execution_count,
            i.queue.ns,
            i.compute_input.ns,
            i.compute_infer.ns,
            i.compute_output.ns,
        )

    def __sub__(self, other: StatsSnapshot) -> StatsSnapshot:
        return StatsSnapshot(
            *(getattr(self, f) - getattr(other, f) for f in self.__dataclass_fields__)
        )


class Target(Protocol):
    """A model to load: metadata, one inference, the server's statistics."""

    description: str

    async def open(self) -> ModelInfo: ...

    def prepare(self, inputs: dict[str, np.ndarray]) -> Any:
        """Turn tensors into whatever ``infer`` sends (encoded once, sent many times)."""
        ...

    async def infer(self, prepared: Any) -> None: ...

    async def stats(self) -> StatsSnapshot: ...

    async def close(self) -> None: ...


class LocalTarget:
    """A model of an ``InferenceServer`` running on the caller's loop."""

    def __init__(self, server: InferenceServer, model: str, version: str = "") -> None:
        self._server = server
        self._model = model
        self._version = version
        self.description = f"in-process {model}" + (f" v{version}" if version else "")

    async def open(self) -> ModelInfo:
        mv = self._server.model_version(self._model, self._version)
        self._version = str(mv.version)
        inputs = tuple(InputInfo(t.name, t.datatype, tuple(t.dims)) for t in mv.inputs)
        return ModelInfo(mv.name, self._version, mv.max_batch_size, inputs)

    def prepare(self, inputs: dict[str, np.ndarray]) -> Any:
        return [(n, a) for n, a in inputs.items()]

    async def infer(self, prepared: Any) -> None:
        tensors = [InputTensor(n, _datatype_of(a), a.shape, a) for n, a in prepared]
        await self._server.infer(InferRequest(self._model, tensors, self._version))

    async def stats(self) -> StatsSnapshot:
        rows = self._server.model_statistics(self._model, self._version)
        return StatsSnapshot.from_proto(model_statistics_proto(rows), self._version)

    async def close(self) -> None:
        return None


def _datatype_of(array: np.ndarray) -> str:
    return from_numpy(array.dtype)


class HttpTarget:
    """KServe v2 over HTTP, binary tensor data in and out."""

    def __init__(
        self,
        url: str,
        model: str,
        version: str = "",
        concurrency: int = 64,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self._base = url.rstrip("/")
        self._model = model
        self._version = version
        self._limit = concurrency
        self._headers = dict(headers)  # sent with every request (an API key)
        self._session: Any = None
        self.description = f"HTTP {self._base} {model}"

    def _path(self) -> str:
        v = f"/versions/{self._version}" if self._version else ""
        return f"{self._base}/v2/models/{self._model}{v}"

    async def open(self) -> ModelInfo:
        import aiohttp

        connector = aiohttp.TCPConnector(limit=0, force_close=False)
        self._session = aiohttp.ClientSession(connector=connector, headers=self._headers)
        try:
            meta = await self._get_json(self._path())
            config = await self._get_json(self._path() + "/config")
        except FrameserveError:
            await self._session.close()  # the caller never gets a target to close
            raise
        self._version = self._version or str(max(int(v) for v in meta.get("versions", ["1"])))
        return _info_from_metadata(meta, int(config.get("max_batch_size", 0)), self._version)

    async def _get_json(self, url: str) -> dict[str, Any]:
        try:
            async with self._session.get(url) as response:
                body = await response.read()
                if response.status != 200:
                    raise _http_error(url, response.status, body)
                return dict(json.loads(body))
        except OSError as err:
            raise Unavailable(f"{url}: cannot connect: {err}") from None

    def prepare(self, inputs: dict[str, np.ndarray]) -> Any:
        header = {
            "inputs": [
                {
                    "name": n,
                    "shape": list(a.shape),
                    "datatype": _datatype_of(a),
                    "parameters": {"binary_data_size": a.nbytes},
                }
                for n, a in inputs.items()
            ],
            "parameters": {"binary_data_output": True},
        }
        head = json.dumps(header).encode()
        body = head + b"".join(np.ascontiguousarray(a).tobytes() for a in inputs.values())
        headers = {
            "Inference-Header-Content-Length": str(len(head)),
            "Content-Type": "application/octet-stream",
        }
        return self._path() + "/infer", body, headers

    async def infer(self, prepared: Any) -> None:
        url, body, headers = prepared
        async with self._session.post(url, data=body, headers=headers) as response:
            payload = await response.read()
            if response.status != 200:
                raise _http_error(url, response.status, payload)

    async def stats(self) -> StatsSnapshot:
        data = await self._get_json(self._path() + "/stats")
        message = json_format.ParseDict(
            data, pb.ModelStatisticsResponse(), ignore_unknown_fields=True
        )
        return StatsSnapshot.from_proto(message, self._version)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def _http_error(url: str, status: int, body: bytes) -> Exception:
    try:
        message = json.loads(body).get("error", body[:200].decode(errors="replace"))
    except (ValueError, AttributeError):
        message = body[:200].decode(errors="replace")
    cls: type[FrameserveError] = (
        NotFound if status == 404 else Unavailable if status in (503, 429) else InvalidInput
    )
    return cls(f"{url}: HTTP {status}: {message}")


def _info_from_metadata(meta: dict[str, Any], max_batch_size: int, version: str) -> ModelInfo:
    lead = 1 if max_batch_size > 0 else 0
    inputs = tuple(
        InputInfo(t["name"], t["datatype"], tuple(int(d) for d in t["shape"][lead:]))
        for t in meta.get("inputs", [])
    )
    return ModelInfo(meta.get("name", ""), version, max_batch_size, inputs)


class GrpcTarget:
    """KServe v2 over gRPC; requests serialised once, replies checked for status only."""

    def __init__(
        self, address: str, model: str, version: str = "", headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        self._address = address
        self._model = model
        self._version = version
        # gRPC metadata keys are lower case; sent with every call (an API key)
        self._metadata = tuple((k.lower(), v) for k, v in headers)
        self._channel: Any = None
        self.description = f"gRPC {address} {model}"

    async def open(self) -> ModelInfo:
        import grpc

        from frameserve.api.grpc.generated import grpc_service_pb2_grpc as rpc

        options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
        self._channel = grpc.aio.insecure_channel(self._address, options=options)
        self._stub = rpc.GRPCInferenceServiceStub(self._channel)
        self._raw_infer = self._channel.unary_unary(GRPC_INFER)  # bytes in, bytes out
        try:
            meta = await self._stub.ModelMetadata(
                pb.ModelMetadataRequest(name=self._model, version=self._version),
                metadata=self._metadata,
            )
            config = await self._stub.ModelConfig(
                pb.ModelConfigRequest(name=self._model, version=self._version),
                metadata=self._metadata,
            )
        except grpc.aio.AioRpcError as err:
            raise _grpc_error(self._address, err) from None
        self._version = self._version or str(max(int(v) for v in meta.versions or ["1"]))
        data = json_format.MessageToDict(meta, preserving_proto_field_name=True)
        for t in data.get("inputs", []):
            t["shape"] = [int(d) for d in t.get("shape", [])]
        return _info_from_metadata(data, config.config.max_batch_size, self._version)

    def prepare(self, inputs: dict[str, np.ndarray]) -> Any:
        request = pb.ModelInferRequest(model_name=self._model, model_version=self._version)
        for n, a in inputs.items():
            request.inputs.add(name=n, datatype=_datatype_of(a), shape=list(a.shape))
            request.raw_input_contents.append(np.ascontiguousarray(a).tobytes())
        return request.SerializeToString()

    async def infer(self, prepared: Any) -> None:
        import grpc

        try:
            await self._raw_infer(prepared, metadata=self._metadata)
        except grpc.aio.AioRpcError as err:
            raise _grpc_error(self._address, err) from None

    async def stats(self) -> StatsSnapshot:
        message = await self._stub.ModelStatistics(
            pb.ModelStatisticsRequest(name=self._model, version=self._version),
            metadata=self._metadata,
        )
        return StatsSnapshot.from_proto(message, self._version)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()


def _grpc_error(address: str, err: Any) -> Exception:
    import grpc

    code = err.code()
    cls: type[FrameserveError] = NotFound if code == grpc.StatusCode.NOT_FOUND else InvalidInput
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED):
        cls = Unavailable
    return cls(f"{address}: gRPC {code.name}: {err.details()}")


def remote_target(
    url: str, model: str, version: str = "", headers: tuple[tuple[str, str], ...] = ()
) -> Target:
    """``http://host:port`` or ``grpc://host:port`` -> the matching target; ``headers`` go with
    every request (HTTP headers, gRPC metadata), e.g. ``("Authorization", "Bearer ...")``."""
    parts = urlsplit(url)
    if parts.scheme in ("http", "https") and parts.netloc:
        return HttpTarget(url, model, version, headers=headers)
    if parts.scheme == "grpc" and parts.netloc:
        return GrpcTarget(parts.netloc, model, version, headers)
    raise InvalidInput(f"--url: expected http://HOST:PORT or grpc://HOST:PORT, got {url!r}")


def make_inputs(
    info: ModelInfo, batch_size: int, shapes: dict[str, tuple[int, ...]], seed: int = 0
) -> dict[str, np.ndarray]:
    """Random tensors for every input: ``shapes`` fills the dims the model leaves open."""
    rng = np.random.default_rng(seed)
    if info.max_batch_size == 0 and batch_size != 1:
        raise InvalidInput(
            f"--batch-size: model {info.name!r} takes no batch dimension, got {batch_size}"
        )
    if info.max_batch_size and batch_size > info.max_batch_size:
        raise InvalidInput(
            f"--batch-size: model {info.name!r} has max_batch_size {info.max_batch_size}, "
            f"got {batch_size}"
        )
    out = {}
    for t in info.inputs:
        dims = shapes.get(t.name, t.dims)
        if len(dims) != len(t.dims) or any(d < 0 for d in dims):
            raise InvalidInput(
                f"--shape {t.name}: the model's input has dims {list(t.dims)} (-1 = any); "
                f"give every dim as --shape {t.name}:" + ",".join(["N"] * len(t.dims))
                + (f", got {list(dims)}" if t.name in shapes else "")
            )  # fmt: skip
        if t.datatype == "BYTES":
            raise InvalidInput(f"input {t.name!r}: BYTES inputs are not supported by bench")
        shape = ((batch_size,) if info.max_batch_size else ()) + tuple(dims)
        dtype = to_numpy(t.datatype)
        if dtype.kind == "f":
            out[t.name] = rng.random(shape, dtype=np.float32).astype(dtype)
        elif dtype.kind == "b":
            out[t.name] = rng.integers(0, 2, shape).astype(dtype)
        else:
            out[t.name] = rng.integers(0, 100, shape).astype(dtype)
    return out
