"""OpenTelemetry tracing, in-process: the real HTTP (uvicorn) and gRPC front ends on loopback
ports over a real ``InferenceServer`` and ONNX Runtime model, with the SDK's in-memory exporter
(the one thing swapped: spans are read back here instead of sent to a collector)."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import uvicorn
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from frameserve.api.grpc.server import create_grpc_server
from frameserve.api.http.app import create_http_app
from frameserve.api.shm import SharedMemoryRegistry
from frameserve.serving.server import InferenceServer, ServerSettings
from frameserve.serving.tracing import Tracing

from models import make_model, onnx_file, simple_add_sub
from servers import free_port

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


class _Uvicorn(uvicorn.Server):
    def capture_signals(self) -> contextlib.AbstractContextManager[None]:  # type: ignore[override]
        return contextlib.nullcontext()


@contextlib.asynccontextmanager
async def _serving(repo: Path, exporter: InMemorySpanExporter) -> AsyncIterator[tuple[int, int]]:
    """HTTP and gRPC front ends on free ports, traced into ``exporter``."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    server = InferenceServer(ServerSettings(repository=repo), tracing=Tracing(provider))
    shm = SharedMemoryRegistry()
    http_port, grpc_port = free_port(), free_port()
    app = create_http_app(server, shm)
    http = _Uvicorn(uvicorn.Config(app, port=http_port, lifespan="off", log_config=None))
    grpc_server = create_grpc_server(server, shm, f"127.0.0.1:{grpc_port}")
    await grpc_server.start()
    task = asyncio.get_running_loop().create_task(http.serve())
    while not http.started:
        await asyncio.sleep(0.01)
    await server.start()
    try:
        yield http_port, grpc_port
    finally:
        await server.drain()
        await grpc_server.stop(None)
        http.should_exit = True
        await task
        shm.close()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    make_model(tmp_path, "simple", "onnxruntime", onnx_file(simple_add_sub), {"max_batch_size": 8})
    return tmp_path


def _run(repo: Path, client: Callable[[int, int], Awaitable[None]]) -> list[ReadableSpan]:
    exporter = InMemorySpanExporter()

    async def main() -> None:
        async with _serving(repo, exporter) as (http_port, grpc_port):
            await client(http_port, grpc_port)

    asyncio.run(main())
    return list(exporter.get_finished_spans())


def _tree(spans: list[ReadableSpan], root_name: str) -> dict[str, ReadableSpan]:
    """The spans under the one request span named ``root_name``, by name (root included)."""
    (root,) = [s for s in spans if s.name == root_name]
    assert root.context is not None
    found = {"": root}
    for s in spans:
        if s.context is not None and s.context.trace_id == root.context.trace_id and s is not root:
            found[s.name] = s
    return found


def _check_request_tree(tree: dict[str, ReadableSpan]) -> None:
    root, queue, batch, infer = (tree[n] for n in ("", "frameserve.queue", "frameserve.batch",
                                                   "frameserve.inference"))  # fmt: skip
    assert root.context is not None and batch.context is not None
    assert f"{root.context.trace_id:032x}" == TRACE_ID  # taken from the incoming traceparent
    assert root.parent is not None and f"{root.parent.span_id:016x}" == PARENT_ID
    for child in (queue, batch):
        assert child.parent is not None and child.parent.span_id == root.context.span_id
    assert infer.parent is not None and infer.parent.span_id == batch.context.span_id
    assert batch.attributes is not None
    assert batch.attributes["frameserve.model"] == "simple"
    assert batch.attributes["frameserve.batch.size"] >= 2  # this request's 2 rows at least
    assert batch.attributes["frameserve.request.batch_size"] == 2
    # measured times nest: queue ends where the batch starts; inference inside the batch
    assert queue.end_time == batch.start_time
    assert batch.start_time <= infer.start_time <= infer.end_time <= batch.end_time  # type: ignore[operator]
    assert root.start_time <= queue.start_time and batch.end_time <= root.end_time  # type: ignore[operator]


def _body() -> dict[str, Any]:
    data = list(range(32))
    tensor = {"shape": [2, 16], "datatype": "INT32", "data": data}
    return {
        "id": "req-7",
        "inputs": [{"name": "INPUT0", **tensor}, {"name": "INPUT1", **tensor}],
    }


def test_http_request_span_follows_traceparent(repo: Path) -> None:
    async def client(http_port: int, _: int) -> None:
        url = f"http://127.0.0.1:{http_port}/v2/models/simple/infer"
        async with aiohttp.ClientSession() as session:
            headers = {"traceparent": TRACEPARENT}
            async with session.post(url, json=_body(), headers=headers) as r:
                assert r.status == 200, await r.text()
            async with session.post(url, json={"inputs": []}) as r:  # no traceparent, a 400
                assert r.status == 400

    spans = _run(repo, client)
    roots = [s for s in spans if s.name == "POST /v2/models/{model}/infer"]
    assert len(roots) == 2
    traced = [s for s in roots if f"{s.context.trace_id:032x}" == TRACE_ID]  # type: ignore[union-attr]
    tree = _tree([s for s in spans if s not in roots or s is traced[0]], roots[0].name)
    _check_request_tree(tree)
    assert tree[""].attributes is not None
    assert tree[""].attributes["http.response.status_code"] == 200
    fresh = next(s for s in roots if s is not traced[0])
    assert fresh.parent is None  # a new trace for a request without traceparent
    assert fresh.attributes is not None and fresh.attributes["http.response.status_code"] == 400


def test_grpc_request_span_follows_traceparent_metadata(repo: Path) -> None:
    import tritonclient.grpc.aio as grpcclient

    async def client(_: int, grpc_port: int) -> None:
        async with grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}") as c:
            inputs = []
            for name in ("INPUT0", "INPUT1"):
                tensor = grpcclient.InferInput(name, [2, 16], "INT32")
                tensor.set_data_from_numpy(np.arange(32, dtype=np.int32).reshape(2, 16))
                inputs.append(tensor)
            result = await c.infer("simple", inputs, headers={"traceparent": TRACEPARENT})
            assert result.as_numpy("OUTPUT0") is not None

    spans = _run(repo, client)
    tree = _tree(spans, "inference.GRPCInferenceService/ModelInfer")
    _check_request_tree(tree)
    attrs = tree[""].attributes
    assert attrs is not None and attrs["rpc.system"] == "grpc"
    assert attrs["rpc.grpc.status_code"] == 0


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )


def test_tracing_off_never_imports_opentelemetry(repo: Path) -> None:
    done = _python(f"""
        import sys
        from pathlib import Path
        from frameserve.api.app import serve  # everything `frameserve serve` imports
        from frameserve.api.http.app import create_http_app
        from frameserve.api.shm import SharedMemoryRegistry
        from frameserve.serving.server import InferenceServer, ServerSettings
        server = InferenceServer(ServerSettings(repository=Path({str(repo)!r})))
        create_http_app(server, SharedMemoryRegistry())
        assert server.tracing is None
        print(sorted(m for m in sys.modules if m.startswith("opentelemetry")))
        """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_tracing_without_the_extra_names_it(repo: Path) -> None:
    done = _python(f"""
        import sys
        class NoOtel:  # as if the tracing extra were not installed
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "opentelemetry":
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        sys.meta_path.insert(0, NoOtel())
        from frameserve.cli.main import main
        sys.exit(main(["serve", "--repository", {str(repo)!r}, "--http-port", "0",
                       "--grpc-port", "0", "--trace-otlp-endpoint", "http://127.0.0.1:4318"]))
        """)
    assert done.returncode == 2, done.stderr
    assert "install the tracing extra, pip install 'frameserve[tracing]'" in done.stderr


def test_endpoint_url_gets_the_traces_path() -> None:
    from frameserve.errors import ConfigError
    from frameserve.serving.tracing import traces_url

    assert traces_url("http://collector:4318") == "http://collector:4318/v1/traces"
    assert traces_url("http://collector:4318/") == "http://collector:4318/v1/traces"
    assert traces_url("https://c/custom/path") == "https://c/custom/path"
    with pytest.raises(ConfigError, match="expected an http"):
        traces_url("collector:4318")


def test_requests_without_traceparent_are_sampled_at_the_rate() -> None:
    """Roots are sampled before the SDK builds a span; a caller's traceparent decides for its
    own request, whatever the rate."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    never = Tracing(provider, sample_rate=0.0)
    assert all(never.start_request("r", None, None, {}) is None for _ in range(200))
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"  # sampled
    trace = never.start_request("r", parent, None, {})
    assert trace is not None and trace.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    trace.end(200)
    some = Tracing(provider, sample_rate=0.25)
    kept = sum(some.start_request("r", None, None, {}) is not None for _ in range(2000))
    assert 300 < kept < 700  # binomial(2000, 0.25): mean 500, sd ~19
    always = Tracing(provider, sample_rate=1.0)
    assert all(always.start_request("r", None, None, {}) is not None for _ in range(50))
