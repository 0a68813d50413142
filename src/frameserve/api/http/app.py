"""The HTTP front end: KServe v2 endpoints plus the Triton extensions real clients use.

Each route checks the names in its path, calls one ``InferenceServer`` method and renders the
result; there is no model logic here. Errors become statuses only through
``frameserve.api.status``, with Triton's body ``{"error": "<message>"}``; anything unexpected is
logged with its traceback and answered 500, and the server keeps serving.
The app runs on the server's event loop. Inference requests skip Starlette: its middleware,
routing and request wrappers cost about 13 us a request (measured in-process), as much as
decoding and encoding a small tensor, so ``HttpApp`` matches the infer path itself and hands
every other path to a Starlette router. Bodies are decoded inline (no thread hop), which is
cheapest for the small and medium bodies this server is tuned for.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from frameserve import logcontext
from frameserve.api import requestid, triton_config
from frameserve.api.access import AccessPolicy
from frameserve.api.http import codec, predict
from frameserve.api.http.body import check_header_length, check_json_size, read_body
from frameserve.api.http.dashboard import Dashboard
from frameserve.api.http.deadlines import bounded_receive
from frameserve.api.http.guard import refuse
from frameserve.api.http.login import SessionRoutes
from frameserve.api.http.metrics import metrics_response
from frameserve.api.http.overview import OverviewRoutes
from frameserve.api.http.reference import ApiReference
from frameserve.api.http.response import encode_infer_response
from frameserve.api.http.tracing import end_trace, start_trace, traced
from frameserve.api.http.video import VideoRoutes
from frameserve.api.sessions import SessionStore
from frameserve.api.shm import SharedMemoryRegistry
from frameserve.api.status import error_body, http_status
from frameserve.errors import (
    FrameserveError,
    InvalidInput,
    NotSupported,
    RequestTimeout,
    Unavailable,
)
from frameserve.serving.repository import check_model_name
from frameserve.serving.server import InferenceServer
from frameserve.serving.tracing import RequestTrace, Tracing
from frameserve.serving.types import TensorMetadata

logger = logging.getLogger(__name__)

Endpoint = Callable[[Request], Awaitable[Response]]
_CUDA_SHM_MESSAGE = (
    "CUDA shared memory is not supported on this server; use system shared memory "
    "(/v2/systemsharedmemory) instead"
)


def json_response(content: Any, status_code: int = 200) -> Response:
    """A JSON response rendered with orjson."""
    return Response(orjson.dumps(content), status_code, media_type=codec.JSON_CONTENT_TYPE)


def error_response(err: BaseException) -> Response:
    """Triton's error body plus the request id, with the status ``frameserve.api.status`` gives
    the error (unexpected errors: an opaque 500 whose detail is in the log under that id)."""
    response = json_response(error_body(err, logcontext.request_id.get()), http_status(err))
    if isinstance(err, RequestTimeout):  # the rest of a late body must not read as a request
        response.headers["Connection"] = "close"
    return response


def _check_names(name: str, version: str) -> tuple[str, str]:
    """The model name and version ("" = newest) from a path, or InvalidInput."""
    check_model_name(name)
    if version and not (version.isascii() and version.isdigit()):
        raise InvalidInput(f"model version: expected a positive integer, got {version!r}")
    return name, version


def _model_path(request: Request) -> tuple[str, str]:
    return _check_names(request.path_params["model"], request.path_params.get("version", ""))


async def _answer(method: str, path: str, handle: Callable[[], Awaitable[Response]]) -> Response:
    """Answer FrameserveErrors with their status and anything unexpected with a logged 500."""
    try:
        return await handle()
    except FrameserveError as err:
        return error_response(err)
    except ClientDisconnect:
        return Response(status_code=400)  # nobody is listening; uvicorn drops it
    except Exception as err:
        logger.exception("unexpected error in %s %s", method, path)
        return error_response(err)


def _guarded(handler: Endpoint) -> Endpoint:
    """A Starlette endpoint that answers errors the way ``_answer`` does."""

    @functools.wraps(handler)
    async def endpoint(request: Request) -> Response:
        return await _answer(request.method, request.url.path, lambda: handler(request))

    return endpoint


def _tensor_json(tensor: TensorMetadata) -> dict[str, Any]:
    return {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}


class _RejectEncodedSlashes:
    """Refuse paths with an encoded '/' or '\\' before routing.

    Routing sees the decoded path, where ``a%2Fb`` has already become two segments; checking the
    raw path is the only way to answer such a model name with a clear 400 instead of a 404.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            raw = bytes(scope.get("raw_path") or b"").lower()
            if b"%2f" in raw or b"%5c" in raw:
                err = InvalidInput(
                    f"path {scope['path']!r}: model and region names must not contain '/' "
                    f"or '\\' (found an encoded one: %2F or %5C)"
                )
                await error_response(err)(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _http_exception(request: Request, exc: Exception) -> Response:
    """Unknown paths and wrong methods, with Triton's JSON error body."""
    assert isinstance(exc, HTTPException)
    body = {"error": exc.detail, "request_id": logcontext.request_id.get() or ""}
    return Response(
        orjson.dumps(body),
        exc.status_code,
        headers=exc.headers,
        media_type=codec.JSON_CONTENT_TYPE,
    )


class _Routes:
    """The endpoint coroutines, bound to one server and one shared-memory registry."""

    def __init__(self, server: InferenceServer, shm: SharedMemoryRegistry) -> None:
        self.server = server
        self.shm = shm

    async def _json_body(self, request: Request) -> dict[str, Any]:
        """An optional JSON object body ({} when empty)."""
        limits = self.server.limits
        body = await read_body(request.receive, request.headers, limits.max_body_bytes)
        check_json_size(len(body), limits.max_json_bytes)
        return codec.parse_json_object(body) if body.strip() else {}

    # -- inference ------------------------------------------------------------------------

    async def infer(
        self,
        name: str,
        version: str,
        headers: Headers,
        receive: Receive,
        trace: RequestTrace | None = None,
    ) -> Response:
        """``POST .../infer``: decode, run, encode in the format the request asked for."""
        _check_names(name, version)
        if self.server.draining:
            raise Unavailable("server is draining: it accepts no new inference requests")
        limits = self.server.limits
        check_header_length(headers.get(codec.HEADER_LENGTH), limits.max_json_bytes)
        decoded = codec.decode_infer_request(
            await read_body(receive, headers, limits.max_body_bytes),
            name,
            version,
            header_length=headers.get(codec.HEADER_LENGTH),
            content_encoding=headers.get("content-encoding"),
            limits=limits,
            shm=self.shm,
        )
        # Without an X-Request-ID the request's own "id" names it (log lines, response header).
        own_id = decoded.request.id
        if own_id and requestid.HEADER not in headers and requestid.accept(own_id):
            logcontext.request_id.set(own_id)  # the request's own task
        decoded.request.trace = trace
        response = await self.server.infer(decoded.request)
        encoded = encode_infer_response(response, decoded, self.shm)
        extra = None
        if encoded.header_length is not None:
            extra = {codec.HEADER_LENGTH: str(encoded.header_length)}
        return Response(encoded.body, headers=extra, media_type=encoded.content_type)

    async def infer_route(self, request: Request) -> Response:
        """The infer path for requests the fast path leaves to the router (escaped names)."""
        name, version = request.path_params["model"], request.path_params.get("version", "")
        trace = getattr(request.state, "trace", None)
        return await self.infer(name, version, request.headers, request.receive, trace)

    # -- health and metadata --------------------------------------------------------------

    # Triton answers an unhealthy server with 400; 503 says "try elsewhere" to load balancers
    # and probes alike, and clients only test for 200.
    async def predict(self, request: Request) -> Response:
        name, _ = _model_path(request)
        return await predict.predict(self.server, request, name)

    async def live(self, request: Request) -> Response:
        return Response(status_code=200 if self.server.live else 503)

    async def ready(self, request: Request) -> Response:
        return Response(status_code=200 if self.server.ready else 503)

    async def server_metadata(self, request: Request) -> Response:
        s = self.server
        return json_response(
            {"name": s.name, "version": s.version, "extensions": list(s.extensions)}
        )

    async def model_metadata(self, request: Request) -> Response:
        meta = self.server.model_metadata(*_model_path(request))
        return json_response(
            {
                "name": meta.name,
                "versions": list(meta.versions),
                "platform": meta.platform,
                "inputs": [_tensor_json(t) for t in meta.inputs],
                "outputs": [_tensor_json(t) for t in meta.outputs],
            }
        )

    async def model_ready(self, request: Request) -> Response:
        ready = self.server.model_ready(*_model_path(request))
        return Response(status_code=200 if ready else 400)

    async def model_config(self, request: Request) -> Response:
        version = self.server.model_version(*_model_path(request))
        return json_response(triton_config.triton_json(triton_config.model_config_proto(version)))

    async def model_stats(self, request: Request) -> Response:
        name, version = _model_path(request) if "model" in request.path_params else ("", "")
        stats = self.server.model_statistics(name, version)
        message = triton_config.model_statistics_proto(stats)
        return json_response(triton_config.triton_json(message))

    async def metrics(self, request: Request) -> Response:
        return metrics_response(self.server.metrics.registry)

    # -- model repository -----------------------------------------------------------------

    async def repository_index(self, request: Request) -> Response:
        ready = (await self._json_body(request)).get("ready", False)
        if not isinstance(ready, bool):
            raise InvalidInput(f"ready: expected a boolean, got {ready!r}")
        entries = self.server.repository_index(ready_only=ready)
        return json_response([dataclasses.asdict(e) for e in entries])

    async def load(self, request: Request) -> Response:
        name = check_model_name(request.path_params["model"])
        params = _parameters(await self._json_body(request), allowed=("config",))
        config = params.get("config")
        if config is not None and not isinstance(config, str):
            raise InvalidInput(
                f"parameters.config: expected the model config as a JSON string, got {config!r}"
            )
        await self.server.load_model(name, config)
        return Response()

    async def unload(self, request: Request) -> Response:
        name = check_model_name(request.path_params["model"])
        # There are no ensembles yet, so there are no dependents to unload with the model.
        _parameters(await self._json_body(request), allowed=("unload_dependents",))
        await self.server.unload_model(name)
        return Response()

    # -- system shared memory -------------------------------------------------------------

    async def shm_status(self, request: Request) -> Response:
        regions = self.shm.status(request.path_params.get("region"))
        return json_response([dataclasses.asdict(r) for r in regions])

    async def shm_register(self, request: Request) -> Response:
        body = await self._json_body(request)
        missing = [k for k in ("key", "byte_size") if k not in body]
        if missing:
            raise InvalidInput(f"request body: expected 'key' and 'byte_size', missing {missing}")
        region = request.path_params["region"]
        # The registry checks the types and values, naming the field.
        self.shm.register(region, body["key"], body.get("offset", 0), body["byte_size"])
        return Response()

    async def shm_unregister(self, request: Request) -> Response:
        self.shm.unregister(request.path_params.get("region"))
        return Response()

    async def cuda_shm(self, request: Request) -> Response:
        raise NotSupported(_CUDA_SHM_MESSAGE)


def _parameters(body: dict[str, Any], allowed: tuple[str, ...]) -> dict[str, Any]:
    """The body's ``parameters`` object, refusing names this server does not act on."""
    params = body.get("parameters") or {}
    if not isinstance(params, dict):
        raise InvalidInput(f"parameters: expected a JSON object, got {params!r}")
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise NotSupported(f"parameters: expected only {list(allowed)}, got {unknown}")
    return params


def _routes(r: _Routes, tracing: Tracing | None) -> list[Route]:
    model = "/v2/models/{model}"
    version = "/v2/models/{model}/versions/{version}"
    shm = "/v2/systemsharedmemory"
    cuda = "/v2/cudasharedmemory"
    table: list[tuple[str, Endpoint, str]] = [
        (f"{model}/infer", r.infer_route, "POST"),
        (f"{version}/infer", r.infer_route, "POST"),
        ("/v2/health/live", r.live, "GET"),
        ("/v2/health/ready", r.ready, "GET"),
        ("/v2", r.server_metadata, "GET"),
        ("/v2/models/stats", r.model_stats, "GET"),
        (model, r.model_metadata, "GET"),
        (version, r.model_metadata, "GET"),
        (f"{model}/ready", r.model_ready, "GET"),
        (f"{version}/ready", r.model_ready, "GET"),
        (f"{model}/config", r.model_config, "GET"),
        (f"{version}/config", r.model_config, "GET"),
        (f"{model}/stats", r.model_stats, "GET"),
        (f"{version}/stats", r.model_stats, "GET"),
        ("/v2/repository/index", r.repository_index, "POST"),
        ("/v2/repository/models/{model}/load", r.load, "POST"),
        ("/v2/repository/models/{model}/unload", r.unload, "POST"),
        (f"{shm}/status", r.shm_status, "GET"),
        (f"{shm}/region/{{region}}/status", r.shm_status, "GET"),
        (f"{shm}/region/{{region}}/register", r.shm_register, "POST"),
        (f"{shm}/region/{{region}}/unregister", r.shm_unregister, "POST"),
        (f"{shm}/unregister", r.shm_unregister, "POST"),
        (f"{cuda}/status", r.cuda_shm, "GET"),
        (f"{cuda}/region/{{region}}/status", r.cuda_shm, "GET"),
        (f"{cuda}/region/{{region}}/register", r.cuda_shm, "POST"),
        (f"{cuda}/region/{{region}}/unregister", r.cuda_shm, "POST"),
        (f"{cuda}/unregister", r.cuda_shm, "POST"),
        ("/metrics", r.metrics, "GET"),
        ("/v1/models/{model}/predict", r.predict, "POST"),
    ]
    spanned = (r.infer_route, r.predict) if tracing is not None else ()
    routes = []
    for path, fn, method in table:
        endpoint = _guarded(fn)
        if tracing is not None and fn in spanned:
            endpoint = traced(tracing, path, endpoint)
        routes.append(Route(path, endpoint, methods=[method]))
    return routes


_MODEL_ROUTE = "/v2/models/{model}/infer"
_VERSION_ROUTE = "/v2/models/{model}/versions/{version}/infer"
_INFER_PATH = re.compile(r"/v2/models/(?P<model>[^/]+)(?:/versions/(?P<version>[^/]+))?/infer")


class HttpApp:
    """The ASGI app: a direct path for inference, a Starlette router for everything else."""

    def __init__(
        self,
        server: InferenceServer,
        shm: SharedMemoryRegistry,
        video: VideoRoutes | None = None,
        access: AccessPolicy | None = None,
        access_log: bool = False,
    ) -> None:
        self._routes = _Routes(server, shm)
        self._access = access if access is not None and access.active else None
        self._access_log = access_log
        self._tracing = server.tracing
        self._body_timeout_s = server.limits.request_timeout_s
        # browser logins (POST /v1/session): a session cookie stands for a key of the key file
        keys = access.keys if access is not None else None
        self._sessions = SessionStore(keys) if keys is not None else None
        extra = ApiReference(server.version).routes() + (video.routes() if video else [])
        extra += Dashboard().routes() + SessionRoutes(self._sessions).routes()
        extra += OverviewRoutes(server).routes()
        routes = _routes(self._routes, server.tracing) + [
            Route(path, _guarded(fn), methods=[method]) for path, fn, method in extra
        ]
        self.router = Starlette(
            routes=routes,
            middleware=[Middleware(_RejectEncodedSlashes)],
            exception_handlers={HTTPException: _http_exception},
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.router(scope, receive, send)
            return
        headers = Headers(scope=scope)
        # uvicorn runs each request in its own task: the id set here is this request's alone.
        logcontext.request_id.set(
            requestid.accept(headers.get(requestid.HEADER)) or requestid.new_id()
        )
        started = time.perf_counter()
        status = 0

        async def send_with_id(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                rid = (logcontext.request_id.get() or "").encode()
                message = {
                    **message,
                    "headers": [*message.get("headers", ()), (b"x-request-id", rid)],
                }
            await send(message)

        try:
            # One check for the fast path and the router, before anything reads the body.
            refused = None
            if self._access is not None:
                refused = refuse(self._access, scope, headers, self._sessions)
            if refused is not None:
                await refused(scope, receive, send_with_id)
                return
            if self._body_timeout_s is not None:
                receive = bounded_receive(scope, receive, self._body_timeout_s)
            await self._dispatch(scope, receive, send_with_id, headers)
        finally:
            if self._access_log:
                client = scope.get("client")
                peer = f"{client[0]}:{client[1]}" if client else ""
                path = scope["path"]
                requestid.log_access(
                    "http", scope["method"], path, status, time.perf_counter() - started, peer
                )

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send, headers: Headers) -> None:
        """The infer fast path, or the router for everything else."""
        if scope["method"] == "POST":
            match = _INFER_PATH.fullmatch(scope["path"])
            # Escaped paths go to the router, which refuses encoded slashes by the raw path.
            if match is not None and b"%" not in scope.get("raw_path", b"%"):
                name, version = match["model"], match["version"] or ""
                trace = None
                if self._tracing is not None:
                    route = _VERSION_ROUTE if match["version"] else _MODEL_ROUTE
                    trace = start_trace(self._tracing, route, scope["path"], headers, name)
                response = await _answer(
                    "POST",
                    scope["path"],
                    lambda: self._routes.infer(name, version, headers, receive, trace),
                )
                end_trace(trace, response)
                await response(scope, receive, send)
                return
        await self.router(scope, receive, send)


def create_http_app(
    server: InferenceServer,
    shm: SharedMemoryRegistry,
    video: VideoRoutes | None = None,
    access: AccessPolicy | None = None,
    access_log: bool = False,
) -> HttpApp:
    """The ASGI app serving ``server`` over KServe v2 HTTP; ``shm`` is shared with gRPC;
    ``video`` adds the jobs and live-stream endpoints; ``access`` checks keys and restricted
    categories before anything else; ``access_log``: one log line per request.

    The app does not start or stop the server: whoever runs uvicorn owns that.
    """
    return HttpApp(server, shm, video, access, access_log)
