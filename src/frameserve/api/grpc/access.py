"""The gRPC side of the access check: a server interceptor that runs before any handler, so a
refused call is answered UNAUTHENTICATED / PERMISSION_DENIED (UNAVAILABLE for a restricted
protocol, as Triton) without its request being read."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from frameserve.api.access import AccessPolicy, grpc_rule
from frameserve.api.auth import caller
from frameserve.api.status import error_message, grpc_code
from frameserve.errors import FrameserveError

_Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]


def _refusal(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str) -> Any:
    """A handler of the same kind as ``handler`` that only aborts."""

    async def abort(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(code, message)

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(abort)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(abort)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(abort)
    return grpc.unary_unary_rpc_method_handler(abort)


class AccessInterceptor(grpc.aio.ServerInterceptor):
    """Checks each call's ``authorization`` metadata and restricted-protocol keys."""

    def __init__(self, policy: AccessPolicy) -> None:
        self._policy = policy

    async def intercept_service(  # type: ignore[override]
        self, continuation: _Continuation, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(details)
        if handler is None:
            return None
        metadata = details.invocation_metadata or ()  # type: ignore[attr-defined]

        def header(name: str) -> str | None:
            for key, value in metadata:
                if key == name:
                    return value if isinstance(value, str) else None
            return None

        try:
            key = self._policy.check(grpc_rule(details.method), header)  # type: ignore[attr-defined]
        except FrameserveError as err:
            return _refusal(handler, grpc_code(err), error_message(err))
        # The interceptor runs in the call's own task, before its handler: handlers read it.
        caller.set(key)
        return handler
