"""One exception tree for frameserve.

Each class says what went wrong in the user's terms; the front ends map a class to an HTTP
status and a gRPC code in exactly one place (``frameserve.api.status``). Messages name the
field, the expected and the actual value.
"""

from __future__ import annotations


class FrameserveError(Exception):
    """Base of every error frameserve raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidInput(FrameserveError):
    """The request is malformed or does not match the model (HTTP 400)."""


class Unauthenticated(FrameserveError):
    """No valid API key came with the request (HTTP 401 / UNAUTHENTICATED)."""


class PermissionDenied(FrameserveError):
    """The caller's key may not do this (HTTP 403 / PERMISSION_DENIED)."""


class Restricted(PermissionDenied):
    """A restricted API category's header is missing or wrong (HTTP 403; gRPC UNAVAILABLE,
    as Triton answers ``--grpc-restricted-protocol``)."""


class NotFound(FrameserveError):
    """Unknown model, version or shared-memory region (HTTP 404)."""


class Conflict(FrameserveError):
    """The resource is not in the state the request needs, e.g. the summary of a job that
    has not succeeded (HTTP 409 / FAILED_PRECONDITION)."""


class PayloadTooLarge(FrameserveError):
    """A body or tensor is larger than the configured limit (HTTP 413)."""


class InsufficientStorage(FrameserveError):
    """The server's state folder is over its quota: new jobs and uploads wait (HTTP 507)."""


class RequestTimeout(InvalidInput):
    """The client did not send its request body in time (HTTP 408)."""


class QueueFull(FrameserveError):
    """The model's queue is at ``max_queue_size`` (HTTP 429)."""


class TooManyAttempts(FrameserveError):
    """Too many failed logins from one client in a short time (HTTP 429, with Retry-After)."""

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Unavailable(FrameserveError):
    """The server or model is not ready, or is draining (HTTP 503)."""


class DeadlineExceeded(FrameserveError):
    """The request's timeout passed before it ran (HTTP 504)."""


class FrameDropped(FrameserveError):
    """A droppable item was replaced by a newer one of the same stream (HTTP 503)."""


class ConfigError(FrameserveError):
    """A ``model.yaml`` or server setting is invalid; the message names the field."""


class ModelLoadError(FrameserveError):
    """A backend could not load a model version."""


class ModelExecutionError(FrameserveError):
    """The backend raised while running a batch (HTTP 500)."""


class NotSupported(FrameserveError):
    """A valid request for a feature this server does not provide (HTTP 400 / UNIMPLEMENTED)."""


class VideoError(InvalidInput):
    """A video cannot be read (not a video, no video stream, unreadable) or written."""


class MissingExtra(NotSupported):
    """A feature needs a package from an optional extra that is not installed."""


class CrossSiteRequest(FrameserveError):
    """A browser request from another site to a state-changing route (HTTP 403)."""


class MisdirectedRequest(FrameserveError):
    """The request's ``Host`` is not one ``--allowed-host`` lists (HTTP 421)."""
