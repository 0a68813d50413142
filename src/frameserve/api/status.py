"""The one place where frameserve errors become HTTP statuses and gRPC codes."""

from __future__ import annotations

import grpc

from frameserve import errors

_HTTP: dict[type[errors.FrameserveError], int] = {
    errors.InvalidInput: 400,
    errors.ConfigError: 400,
    errors.NotSupported: 400,
    errors.Unauthenticated: 401,
    errors.PermissionDenied: 403,
    errors.CrossSiteRequest: 403,
    errors.NotFound: 404,
    errors.RequestTimeout: 408,
    errors.Conflict: 409,
    errors.PayloadTooLarge: 413,
    errors.MisdirectedRequest: 421,
    errors.QueueFull: 429,
    errors.TooManyAttempts: 429,
    errors.ModelLoadError: 500,
    errors.ModelExecutionError: 500,
    errors.Unavailable: 503,
    errors.FrameDropped: 503,
    errors.DeadlineExceeded: 504,
    errors.InsufficientStorage: 507,
}
_GRPC: dict[type[errors.FrameserveError], grpc.StatusCode] = {
    errors.InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    errors.ConfigError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotSupported: grpc.StatusCode.UNIMPLEMENTED,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.Restricted: grpc.StatusCode.UNAVAILABLE,
    errors.CrossSiteRequest: grpc.StatusCode.PERMISSION_DENIED,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.Conflict: grpc.StatusCode.FAILED_PRECONDITION,
    errors.PayloadTooLarge: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.MisdirectedRequest: grpc.StatusCode.PERMISSION_DENIED,
    errors.QueueFull: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.TooManyAttempts: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.ModelLoadError: grpc.StatusCode.INTERNAL,
    errors.ModelExecutionError: grpc.StatusCode.INTERNAL,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.FrameDropped: grpc.StatusCode.UNAVAILABLE,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.InsufficientStorage: grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def _lookup(err: BaseException, table: dict, default):  # type: ignore[no-untyped-def]
    for cls in type(err).__mro__:
        if cls in table:
            return table[cls]
    return default


def http_status(err: BaseException) -> int:
    """HTTP status for an error; 500 for anything that is not a ``FrameserveError``."""
    return int(_lookup(err, _HTTP, 500))


def grpc_code(err: BaseException) -> grpc.StatusCode:
    """gRPC status code for an error; INTERNAL for anything unexpected."""
    code: grpc.StatusCode = _lookup(err, _GRPC, grpc.StatusCode.INTERNAL)
    return code


INTERNAL_ERROR = "internal error"


def error_message(err: BaseException) -> str:
    """The text a client sees: a FrameserveError's message; for anything unexpected only
    ``internal error`` (its detail, which may hold paths or internal state, goes to the log)."""
    if isinstance(err, errors.FrameserveError):
        return err.message
    return INTERNAL_ERROR


def error_body(err: BaseException, request_id: str | None) -> dict[str, str]:
    """The JSON error body: Triton's ``{"error": message}`` plus the request id."""
    body = {"error": error_message(err)}
    if request_id:
        body["request_id"] = request_id
    return body


def grpc_error_message(err: BaseException, request_id: str | None) -> str:
    """A gRPC status message; an unexpected error names the request id its log lines carry."""
    message = error_message(err)
    if request_id and not isinstance(err, errors.FrameserveError):
        message = f"{message} (request id {request_id})"
    return message
