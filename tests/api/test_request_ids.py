"""Request ids, opaque 500s and the access log, in-process: the real HTTP (uvicorn) and gRPC
front ends on loopback ports over a real ``InferenceServer``.

An unexpected error cannot be provoked through a correct server on purpose, so the one thing
swapped here is ``InferenceServer.model_metadata``, made to raise a RuntimeError that carries a
"secret" path, as a bug deep in the server would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import grpc
import pytest
import uvicorn

from frameserve.api.grpc.generated import grpc_service_pb2 as pb
from frameserve.api.grpc.server import create_grpc_server
from frameserve.api.http.app import create_http_app
from frameserve.api.shm import SharedMemoryRegistry
from frameserve.cli.logs import ContextFilter
from frameserve.serving.server import InferenceServer, ServerSettings

from models import make_model, onnx_file, simple_add_sub
from servers import free_port

SECRET = "/srv/secret/models/internal_state.py"


class _Uvicorn(uvicorn.Server):
    def capture_signals(self) -> contextlib.AbstractContextManager[None]:  # type: ignore[override]
        return contextlib.nullcontext()


def _broken(*args: object) -> None:
    raise RuntimeError(f"bug near {SECRET}")


@contextlib.asynccontextmanager
async def _serving(repo: Path) -> AsyncIterator[tuple[int, int]]:
    server = InferenceServer(ServerSettings(repository=repo))
    server.model_metadata = _broken  # type: ignore[method-assign]
    shm = SharedMemoryRegistry()
    http_port, grpc_port = free_port(), free_port()
    app = create_http_app(server, shm, access_log=True)
    http = _Uvicorn(uvicorn.Config(app, port=http_port, lifespan="off", log_config=None))
    grpc_server = create_grpc_server(server, shm, f"127.0.0.1:{grpc_port}", access_log=True)
    await grpc_server.start()
    task = asyncio.get_running_loop().create_task(http.serve())
    while not http.started:
        await asyncio.sleep(0.01)
    try:
        yield http_port, grpc_port
    finally:
        await grpc_server.stop(None)
        http.should_exit = True
        await task
        shm.close()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    make_model(tmp_path, "simple", "onnxruntime", onnx_file(simple_add_sub), {"max_batch_size": 8})
    return tmp_path


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.handler.addFilter(ContextFilter())  # as cli/logs.py installs it
    caplog.set_level(logging.INFO)
    return caplog


def _run(repo: Path, client: Callable[[int, int], Awaitable[None]]) -> None:
    async def main() -> None:
        async with _serving(repo) as ports:
            await client(*ports)

    asyncio.run(main())


def test_every_response_carries_a_request_id(repo: Path) -> None:
    seen: dict[str, str] = {}

    async def client(http_port: int, _: int) -> None:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{http_port}") as s:
            for name, path, headers in [
                ("echoed", "/v2/health/live", {"X-Request-ID": "client-7.a:b"}),
                ("insane", "/v2/health/live", {"X-Request-ID": 'has space"quote'}),
                ("none", "/v2/nowhere", {}),
                ("too-long", "/v2", {"X-Request-ID": "a" * 129}),
            ]:
                async with s.get(path, headers=headers) as r:
                    seen[name] = r.headers["X-Request-ID"]
            body = {"id": "body-id-1", "inputs": []}
            async with s.post("/v2/models/simple/infer", json=body) as r:
                seen["body-id"] = r.headers["X-Request-ID"]
                assert (await r.json())["request_id"] == "body-id-1"

    _run(repo, client)
    assert seen["echoed"] == "client-7.a:b"
    for name in ("insane", "none", "too-long"):
        assert len(seen[name]) == 16 and int(seen[name], 16) >= 0, seen
    assert len({seen["insane"], seen["none"], seen["too-long"]}) == 3
    assert seen["body-id"] == "body-id-1"  # a request's own "id" names it without a header


def test_unexpected_http_error_is_opaque_and_logged_under_its_id(
    repo: Path, logs: pytest.LogCaptureFixture
) -> None:
    answers: list[tuple[int, dict, str]] = []

    async def client(http_port: int, _: int) -> None:
        url = f"http://127.0.0.1:{http_port}/v2/models/simple"
        async with (
            aiohttp.ClientSession() as s,
            s.get(url, headers={"X-Request-ID": "req-500"}) as r,
        ):
            answers.append((r.status, await r.json(), r.headers["X-Request-ID"]))

    _run(repo, client)
    status, body, header = answers[0]
    assert (status, body, header) == (500, {"error": "internal error", "request_id": "req-500"},
                                      "req-500")  # fmt: skip
    failures = [r for r in logs.records if r.exc_info and getattr(r, "request_id", "") == "req-500"]
    assert failures and SECRET in logs.text  # the detail is in the log, under the same id
    access = [r for r in logs.records if r.name == "frameserve.access"]
    assert any(
        r.path == "/v2/models/simple" and r.status == 500 and r.request_id == "req-500"  # type: ignore[attr-defined]
        for r in access
    ), [r.getMessage() for r in access]


def test_unexpected_grpc_error_is_internal_naming_the_request_id(
    repo: Path, logs: pytest.LogCaptureFixture
) -> None:
    errors: list[grpc.aio.AioRpcError] = []

    async def client(_: int, grpc_port: int) -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            call = channel.unary_unary(
                "/inference.GRPCInferenceService/ModelMetadata",
                request_serializer=pb.ModelMetadataRequest.SerializeToString,
                response_deserializer=pb.ModelMetadataResponse.FromString,
            )
            try:
                await call(
                    pb.ModelMetadataRequest(name="simple"), metadata=(("x-request-id", "g-1"),)
                )
            except grpc.aio.AioRpcError as err:
                errors.append(err)

    _run(repo, client)
    assert errors and errors[0].code() == grpc.StatusCode.INTERNAL
    assert errors[0].details() == "internal error (request id g-1)"
    assert SECRET in logs.text
    access = [r for r in logs.records if r.name == "frameserve.access"]
    assert any(r.status == "INTERNAL" and r.request_id == "g-1" for r in access)  # type: ignore[attr-defined]
