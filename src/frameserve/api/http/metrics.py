"""``/metrics`` on a port of its own (``serve --metrics-port``), as Triton's 8002: a scraper can
be let through a firewall that keeps the inference port closed. The main HTTP port keeps serving
``/metrics`` too."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from frameserve.api.access import AccessPolicy
from frameserve.api.http.guard import refuse


def metrics_response(registry: CollectorRegistry) -> Response:
    """The registry in Prometheus' text format."""
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def create_metrics_app(registry: CollectorRegistry, access: AccessPolicy | None = None) -> ASGIApp:
    """An ASGI app answering ``GET /metrics`` only (404 elsewhere); with ``access``, a key is
    needed as on the HTTP port (unless ``--metrics-open``)."""

    async def metrics(request: Request) -> Response:
        return metrics_response(registry)

    app = Starlette(routes=[Route("/metrics", metrics, methods=["GET"])])
    if access is None or not access.active:
        return app

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        refused = refuse(access, scope) if scope["type"] == "http" else None
        await (refused or app)(scope, receive, send)

    return guarded
