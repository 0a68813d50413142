"""Request spans for HTTP routes (OpenTelemetry through ``serving.tracing``; nothing here runs
when tracing is off): the infer fast path calls ``start_trace``/``end_trace``, routed
endpoints are wrapped by ``traced``."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response

from frameserve import logcontext
from frameserve.serving.tracing import RequestTrace, Tracing

Endpoint = Callable[[Request], Awaitable[Response]]


def start_trace(
    tracing: Tracing, route: str, path: str, headers: Headers, model: str
) -> RequestTrace | None:
    """The span of one traced request (a child of its ``traceparent`` header, if any)."""
    trace = tracing.start_request(
        f"POST {route}",
        headers.get("traceparent"),
        headers.get("tracestate"),
        {
            "http.request.method": "POST",
            "http.route": route,
            "url.path": path,
            "frameserve.model": model,
        },
    )
    if trace is not None:
        logcontext.trace_id.set(trace.trace_id)  # the request's own task: no reset needed
    return trace


def end_trace(trace: RequestTrace | None, response: Response) -> None:
    if trace is not None:
        trace.set_attribute("http.response.status_code", response.status_code)
        trace.end(response.status_code)


def traced(tracing: Tracing, route: str, handler: Endpoint) -> Endpoint:
    """A routed endpoint with a request span; the handler finds it in ``request.state``."""

    @functools.wraps(handler)
    async def endpoint(request: Request) -> Response:
        model = request.path_params.get("model", "")
        trace = start_trace(tracing, route, request.url.path, request.headers, model)
        request.state.trace = trace
        response = await handler(request)
        end_trace(trace, response)
        return response

    return endpoint
