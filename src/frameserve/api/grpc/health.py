"""gRPC's standard health service (``grpc.health.v1.Health``) and server reflection.

Kubernetes gRPC probes, Envoy and ``grpc_health_probe`` ask ``Check`` with a service name:
- ``""`` and ``inference.GRPCInferenceService``: SERVING while the server is ready (the same
  answer as ``/v2/health/ready``; NOT_SERVING while starting or leaving);
- a model's or model pipeline's name: SERVING while that model is ready to infer;
- anything else: NOT_FOUND (``Check``) or SERVICE_UNKNOWN (``Watch``), as the protocol says.
Answers are computed when asked, so they never go stale; ``Watch`` checks again every
``WATCH_INTERVAL_S`` and sends each change.

Reflection (``grpc.reflection.v1alpha``) lets ``grpcurl`` and Postman list and call the services
without the .proto files.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

if TYPE_CHECKING:
    from frameserve.serving.server import InferenceServer

HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
WATCH_INTERVAL_S = 0.5
_Status = health_pb2.HealthCheckResponse.ServingStatus


class HealthService(health_pb2_grpc.HealthServicer):
    """Answers from the server's readiness; lives on the loop that owns the server."""

    def __init__(self, server: InferenceServer, server_services: Iterable[str]) -> None:
        self._server = server
        self._server_services = {"", *server_services}

    def _status(self, service: str) -> int | None:
        """SERVING / NOT_SERVING, or None for a name that is neither the server nor a model."""
        if service in self._server_services:
            ready = self._server.ready
        elif self._server.has_model(service):
            ready = self._server.ready and self._server.model_ready(service)
        else:
            return None
        return _Status.SERVING if ready else _Status.NOT_SERVING

    async def Check(  # type: ignore[override]
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        status = self._status(request.service)
        if status is None:
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"service: expected '' (the server), a service it serves or a model name, "
                f"got {request.service!r}",
            )
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(  # type: ignore[override]
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        last = -1
        while True:
            status = self._status(request.service)
            if status is None:
                status = _Status.SERVICE_UNKNOWN  # a model may appear later: keep watching
            if status != last:
                yield health_pb2.HealthCheckResponse(status=status)
                last = status
            await asyncio.sleep(WATCH_INTERVAL_S)


def add_health_and_reflection(
    grpc_server: grpc.aio.Server, server: InferenceServer, services: list[str]
) -> None:
    """Serve ``grpc.health.v1.Health`` for ``server`` and reflection for ``services`` (their
    full names) plus the two standard services, on ``grpc_server`` before it starts."""
    health_pb2_grpc.add_HealthServicer_to_server(HealthService(server, services), grpc_server)
    names = [*services, HEALTH_SERVICE, reflection.SERVICE_NAME]
    reflection.enable_server_reflection(names, grpc_server)
