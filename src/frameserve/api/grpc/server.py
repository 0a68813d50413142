"""The KServe v2 / Triton gRPC front end (``inference.GRPCInferenceService``).

Every handler is a coroutine on the event loop that owns the ``InferenceServer``, so a request
reaches ``server.infer`` with no thread hop. ``ModelInfer`` and ``ModelStreamInfer`` are
registered without protobuf (de)serialisers: they get the received bytes and answer with bytes,
which lets ``frameserve.api.grpc.codec`` view tensors in place instead of copying them through
protobuf. Errors become gRPC statuses only through ``frameserve.api.status``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.message import DecodeError

from frameserve import logcontext
from frameserve.api import requestid
from frameserve.api.grpc import codec
from frameserve.api.grpc.access import AccessInterceptor
from frameserve.api.grpc.generated import grpc_service_pb2 as pb
from frameserve.api.grpc.health import add_health_and_reflection
from frameserve.api.grpc.video import VIDEO_SERVICE, add_video_service
from frameserve.api.status import grpc_code, grpc_error_message, http_status
from frameserve.api.triton_config import model_config_proto, model_statistics_proto
from frameserve.errors import FrameserveError, InvalidInput, NotSupported, Unavailable

if TYPE_CHECKING:
    from frameserve.api.access import AccessPolicy
    from frameserve.api.shm import SharedMemoryRegistry
    from frameserve.serving.server import InferenceServer
    from frameserve.serving.tracing import RequestTrace, Tracing
    from frameserve.video.live import LiveStreams

log = logging.getLogger(__name__)

SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
DEFAULT_STREAM_WINDOW = 1024  # requests of one stream in flight before reading pauses

_Unary = Callable[..., Awaitable[Any]]  # (request) or, traced, (request, trace)
_Carrier = tuple[str | None, str | None]  # the traceparent and tracestate metadata


def _trace_carrier(context: grpc.aio.ServicerContext) -> _Carrier:
    """W3C trace context from the call's metadata (keys arrive lower-case)."""
    parent = state = None
    for key, value in context.invocation_metadata() or ():
        if key == "traceparent":
            parent = str(value)
        elif key == "tracestate":
            state = str(value)
    return parent, state


def _start_trace(tracing: Tracing, method: str, carrier: _Carrier) -> RequestTrace | None:
    attributes = {"rpc.system": "grpc", "rpc.service": SERVICE.full_name, "rpc.method": method}
    trace = tracing.start_request(f"{SERVICE.full_name}/{method}", *carrier, attributes)
    if trace is not None:
        logcontext.trace_id.set(trace.trace_id)  # the call's own task: no reset needed
    return trace


def _end_trace(trace: RequestTrace | None, err: BaseException | None) -> None:
    if trace is None:
        return
    code = grpc.StatusCode.OK if err is None else grpc_code(err)
    trace.set_attribute("rpc.grpc.status_code", code.value[0])
    trace.end(200 if err is None else http_status(err), None if err is None else str(err))


def _call_request_id(context: grpc.aio.ServicerContext) -> None:
    """Set the call's request id (its ``x-request-id`` metadata when sane, else a new one) in
    the call's own task."""
    given = requestid.from_metadata(context.invocation_metadata())
    logcontext.request_id.set(given or requestid.new_id())


def _log_call(name: str, code: grpc.StatusCode, started: float, context: Any) -> None:
    peer = context.peer() or ""
    requestid.log_access("grpc", "POST", name, code.name, time.perf_counter() - started, peer)


def _rpc(
    name: str, method: _Unary, tracing: Tracing | None = None, access_log: bool = False
) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
    """Wrap a unary handler: FrameserveErrors and unexpected errors become gRPC statuses (an
    unexpected one INTERNAL with only the request id; the detail is logged under it); with
    ``tracing``, ``method`` takes the request's trace as a second argument."""
    rpc = f"{SERVICE.full_name}/{name}"

    @functools.wraps(method)
    async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
        started = time.perf_counter()
        _call_request_id(context)
        trace = None
        if tracing is not None:
            trace = _start_trace(tracing, name, _trace_carrier(context))
        try:
            result = await (method(request) if tracing is None else method(request, trace))
            _end_trace(trace, None)
            if access_log:
                _log_call(rpc, grpc.StatusCode.OK, started, context)
            return result
        except FrameserveError as err:
            code, message = grpc_code(err), grpc_error_message(err, None)
            _end_trace(trace, err)
        except Exception as err:
            log.exception("gRPC %s failed unexpectedly", name)
            code, message = grpc_code(err), grpc_error_message(err, logcontext.request_id.get())
            _end_trace(trace, err)
        if access_log:
            _log_call(rpc, code, started, context)
        await context.abort(code, message)

    return handler


def _parsed(method: _Unary, request_type: Any) -> _Unary:
    """``method`` taking the request's bytes; bytes that do not parse are InvalidInput."""

    async def call(data: bytes) -> Any:
        try:
            request = request_type.FromString(data)
        except DecodeError:
            raise InvalidInput(
                f"{request_type.DESCRIPTOR.name}: expected a serialised protobuf message, got "
                f"{len(data)} bytes that do not parse"
            ) from None
        return await method(request)

    return call


class GRPCInferenceService:
    """Implements every method of ``inference.GRPCInferenceService`` on one event loop.

    Unary methods take the request message and return the response message (``ModelInfer``:
    bytes in, bytes out); ``method_handlers`` adds error mapping and (de)serialisation.
    """

    def __init__(
        self,
        server: InferenceServer,
        shm: SharedMemoryRegistry,
        stream_window: int = DEFAULT_STREAM_WINDOW,
        access_log: bool = False,
    ) -> None:
        self._access_log = access_log
        self._server = server
        self._shm = shm
        self._max_elements = server.limits.max_elements
        self._stream_window = stream_window
        self._tracing = server.tracing

    def method_handlers(self) -> dict[str, grpc.RpcMethodHandler]:
        """A handler for every method of the service, by method name."""
        handlers: dict[str, grpc.RpcMethodHandler] = {}
        for method in SERVICE.methods:
            impl = getattr(self, method.name)
            if method.name == "ModelStreamInfer":
                handlers[method.name] = grpc.stream_stream_rpc_method_handler(impl)
            elif method.name == "ModelInfer":
                handler = _rpc(method.name, impl, self._tracing, self._access_log)
                handlers[method.name] = grpc.unary_unary_rpc_method_handler(handler)
            else:
                request_type = getattr(pb, method.input_type.name)
                response_type = getattr(pb, method.output_type.name)
                # Parsed inside the handler: gRPC's own deserializer answers bad bytes UNKNOWN.
                handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                    _rpc(method.name, _parsed(impl, request_type), None, self._access_log),
                    response_serializer=response_type.SerializeToString,
                )
        return handlers

    # -- health and metadata --------------------------------------------------------------------
    async def ServerLive(self, request: pb.ServerLiveRequest) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self._server.live)

    async def ServerReady(self, request: pb.ServerReadyRequest) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._server.ready)

    async def ServerMetadata(self, request: pb.ServerMetadataRequest) -> pb.ServerMetadataResponse:
        s = self._server
        return pb.ServerMetadataResponse(name=s.name, version=s.version, extensions=s.extensions)

    async def ModelReady(self, request: pb.ModelReadyRequest) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=self._server.model_ready(request.name, request.version))

    async def ModelMetadata(self, request: pb.ModelMetadataRequest) -> pb.ModelMetadataResponse:
        meta = self._server.model_metadata(request.name, request.version)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=meta.name,
            versions=meta.versions,
            platform=meta.platform,
            inputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in meta.inputs],
            outputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in meta.outputs],
        )

    async def ModelConfig(self, request: pb.ModelConfigRequest) -> pb.ModelConfigResponse:
        version = self._server.model_version(request.name, request.version)
        return pb.ModelConfigResponse(config=model_config_proto(version))

    async def ModelStatistics(
        self, request: pb.ModelStatisticsRequest
    ) -> pb.ModelStatisticsResponse:
        return model_statistics_proto(self._server.model_statistics(request.name, request.version))

    # -- inference ------------------------------------------------------------------------------
    async def ModelInfer(self, data: bytes, trace: RequestTrace | None = None) -> bytes:
        """One request: serialised ``ModelInferRequest`` in, ``ModelInferResponse`` out."""
        decoded = self._decode(data)
        decoded.request.trace = trace
        response = await self._server.infer(decoded.request)
        return codec.encode_infer_response(response, decoded.shm_outputs, self._shm)

    def _decode(self, data: bytes) -> codec.DecodedInferRequest:
        if self._server.draining:
            raise Unavailable("the server is draining and accepts no new inference requests")
        decoded = codec.parse_infer_request(data, self._max_elements, self._shm)
        if decoded.request.id and requestid.accept(decoded.request.id):
            logcontext.request_id.set(decoded.request.id)  # the call's (or stream item's) task
        return decoded

    async def ModelStreamInfer(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> None:
        """Run each request of the stream as soon as it arrives; write each response when done.

        Responses carry the request ``id`` and may come back out of order. A failed request is
        answered in-stream with ``error_message``; the stream stays open. At most
        ``stream_window`` requests run at once: beyond that reading pauses, and gRPC flow
        control pushes back on the client.
        """
        started = time.perf_counter()
        _call_request_id(context)
        window = asyncio.Semaphore(self._stream_window)
        write_lock = asyncio.Lock()  # gRPC allows one outstanding write per stream
        running: set[asyncio.Task[None]] = set()
        # One trace context for the stream: each request's span is a child of it.
        carrier = _trace_carrier(context) if self._tracing is not None else None

        async def write(payload: bytes) -> None:
            async with write_lock:
                await context.write(payload)

        try:
            async for data in requests:
                await window.acquire()
                task = asyncio.create_task(self._stream_one(data, write, window, carrier))
                running.add(task)
                task.add_done_callback(running.discard)
            if running:
                await asyncio.gather(*running)
        finally:
            for task in running:  # the client went away: nobody waits for these answers
                task.cancel()
            if self._access_log:
                _log_call(
                    f"{SERVICE.full_name}/ModelStreamInfer", grpc.StatusCode.OK, started, context
                )

    async def _stream_one(
        self,
        data: bytes,
        write: Callable[[bytes], Awaitable[None]],
        window: asyncio.Semaphore,
        carrier: _Carrier | None,
    ) -> None:
        """One request of a stream; never raises (its errors are answered in-stream)."""
        request_id = ""
        trace = None
        if self._tracing is not None and carrier is not None:
            trace = _start_trace(self._tracing, "ModelStreamInfer", carrier)
        failure: BaseException | None = None
        try:
            try:
                decoded = self._decode(data)
                request_id = decoded.request.id
                decoded.request.trace = trace
                response = await self._server.infer(decoded.request)
                payload = codec.encode_infer_response(
                    response, decoded.shm_outputs, self._shm, stream=True
                )
            except FrameserveError as err:
                failure = err
                payload = codec.encode_stream_error(grpc_error_message(err, None), request_id)
            except Exception as err:
                failure = err
                log.exception("gRPC ModelStreamInfer request %r failed unexpectedly", request_id)
                message = grpc_error_message(err, logcontext.request_id.get())
                payload = codec.encode_stream_error(message, request_id)
            _end_trace(trace, failure)
            await write(payload)
        except Exception:
            log.exception("gRPC ModelStreamInfer: could not answer request %r", request_id)
        finally:
            window.release()

    # -- repository -----------------------------------------------------------------------------
    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest
    ) -> pb.RepositoryIndexResponse:
        _single_repository(request.repository_name)
        index = pb.RepositoryIndexResponse.ModelIndex
        return pb.RepositoryIndexResponse(
            models=[
                index(name=e.name, version=e.version, state=e.state, reason=e.reason)
                for e in self._server.repository_index(ready_only=request.ready)
            ]
        )

    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest
    ) -> pb.RepositoryModelLoadResponse:
        _single_repository(request.repository_name)
        config: str | None = None
        for key, param in request.parameters.items():
            if key == "config" and param.WhichOneof("parameter_choice") == "string_param":
                config = param.string_param
            elif key.startswith("file:"):
                raise NotSupported(
                    f"parameters['{key}']: frameserve loads models from its repository folder; "
                    "expected no file overrides"
                )
            else:
                raise InvalidInput(
                    f"parameters['{key}']: expected 'config' (string_param), "
                    f"got {key!r} ({param.WhichOneof('parameter_choice') or 'no value'})"
                )
        await self._server.load_model(request.model_name, config)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest
    ) -> pb.RepositoryModelUnloadResponse:
        _single_repository(request.repository_name)
        for key in request.parameters:
            if key != "unload_dependents":  # no ensembles here, so nothing depends on a model
                raise InvalidInput(
                    f"parameters['{key}']: expected 'unload_dependents', got {key!r}"
                )
        await self._server.unload_model(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    # -- shared memory --------------------------------------------------------------------------
    async def SystemSharedMemoryStatus(
        self, request: pb.SystemSharedMemoryStatusRequest
    ) -> pb.SystemSharedMemoryStatusResponse:
        response = pb.SystemSharedMemoryStatusResponse()
        for region in self._shm.status(request.name or None):
            entry = response.regions[region.name]
            entry.name, entry.key = region.name, region.key
            entry.offset, entry.byte_size = region.offset, region.byte_size
        return response

    async def SystemSharedMemoryRegister(
        self, request: pb.SystemSharedMemoryRegisterRequest
    ) -> pb.SystemSharedMemoryRegisterResponse:
        self._shm.register(request.name, request.key, request.offset, request.byte_size)
        return pb.SystemSharedMemoryRegisterResponse()

    async def SystemSharedMemoryUnregister(
        self, request: pb.SystemSharedMemoryUnregisterRequest
    ) -> pb.SystemSharedMemoryUnregisterResponse:
        self._shm.unregister(request.name or None)
        return pb.SystemSharedMemoryUnregisterResponse()

    # perf_analyzer calls CudaSharedMemoryUnregister after every shared-memory run and prints
    # "Unable to unregister all shared memory regions" on this answer (its exit code stays 0).
    async def CudaSharedMemoryStatus(self, request: Any) -> Any:
        raise NotSupported(_NO_CUDA_SHM)

    async def CudaSharedMemoryRegister(self, request: Any) -> Any:
        raise NotSupported(_NO_CUDA_SHM)

    async def CudaSharedMemoryUnregister(self, request: Any) -> Any:
        raise NotSupported(_NO_CUDA_SHM)

    # -- settings frameserve does not offer -----------------------------------------------------
    async def TraceSetting(self, request: Any) -> Any:
        raise NotSupported("TraceSetting: frameserve has no trace extension; use /metrics")

    async def LogSettings(self, request: Any) -> Any:
        raise NotSupported("LogSettings: frameserve sets logging from its command line only")


_NO_CUDA_SHM = (
    "CUDA shared memory is not supported by frameserve; register system shared memory "
    "(SystemSharedMemoryRegister) instead"
)


def _single_repository(name: str) -> None:
    if name:
        raise NotSupported(
            f"repository_name: frameserve serves one repository, expected '', got {name!r}"
        )


def create_grpc_server(
    server: InferenceServer,
    shm: SharedMemoryRegistry,
    address: str,
    streams: LiveStreams | None = None,
    access: AccessPolicy | None = None,
    credentials: grpc.ServerCredentials | None = None,
    access_log: bool = False,
) -> grpc.aio.Server:
    """A gRPC server for ``server`` with its port added at ``address`` (not started yet);
    with ``streams``, frameserve's ``VideoStreams`` service beside the KServe one; with
    ``access``, every call's key and restricted-protocol metadata are checked first; with
    ``credentials`` (``frameserve.api.tls``), a TLS port instead of a plaintext one.

    Messages may be as large as ``server.limits.max_body_bytes``; gRPC answers larger ones with
    RESOURCE_EXHAUSTED. Call ``start()`` from the event loop that owns ``server``.
    """
    limit = server.limits.max_body_bytes
    interceptors = [AccessInterceptor(access)] if access is not None and access.active else []
    grpc_server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            ("grpc.so_reuseport", 0),  # a second server on the same port must fail, not share
            # One client connection cannot hold more calls than this at once (HTTP/2 streams).
            ("grpc.max_concurrent_streams", server.limits.max_grpc_streams),
        ],
    )
    handlers = GRPCInferenceService(server, shm, access_log=access_log).method_handlers()
    name = SERVICE.full_name
    grpc_server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, handlers),))
    grpc_server.add_registered_method_handlers(name, handlers)  # type: ignore[attr-defined]
    services = [name]
    if streams is not None:
        add_video_service(grpc_server, streams)
        services.append(VIDEO_SERVICE)
    add_health_and_reflection(grpc_server, server, services)
    if credentials is None:
        grpc_server.add_insecure_port(address)
    else:
        grpc_server.add_secure_port(address, credentials)
    return grpc_server
