"""``/metrics`` on a port of its own (``serve --metrics-port``), as Triton's 8002: a scraper can
be let through a firewall that keeps the inference port closed. The main HTTP port keeps serving
``/metrics`` too."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def metrics_response(registry: CollectorRegistry) -> Response:
    """The registry in Prometheus' text format."""
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def create_metrics_app(registry: CollectorRegistry) -> Starlette:
    """An ASGI app answering ``GET /metrics`` only (404 elsewhere)."""

    async def metrics(request: Request) -> Response:
        return metrics_response(registry)

    return Starlette(routes=[Route("/metrics", metrics, methods=["GET"])])
