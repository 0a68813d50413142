"""Who a log line is about: the request, job or stream that a piece of work belongs to.

Context variables, shared by every layer like ``errors.py``: a front end sets the request id
(and the trace id when tracing is on) in the request's own task, a job or live-stream thread
sets its id when it starts; ``frameserve.cli.logs`` copies whatever is set onto each record.
Asyncio tasks copy the context they are created in, so a value follows a request through its
awaits; threads start with an empty context (Python 3.11), so threads started for a job or
stream are given theirs with ``bound``.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
trace_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("trace_id", default=None)
job_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("job_id", default=None)
stream_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("stream_id", default=None)

FIELDS: dict[str, contextvars.ContextVar[str | None]] = {
    "request_id": request_id,
    "trace_id": trace_id,
    "job_id": job_id,
    "stream_id": stream_id,
}


def current() -> dict[str, str]:
    """The fields set in the running context (empty when none is)."""
    found: dict[str, str] = {}
    for name, var in FIELDS.items():
        value = var.get()
        if value is not None:
            found[name] = value
    return found


@contextmanager
def bind(**fields: str) -> Iterator[None]:
    """Set fields (names from ``FIELDS``) for the block, then restore what was there."""
    tokens = [(FIELDS[name], FIELDS[name].set(value)) for name, value in fields.items()]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def bound(fn: Callable[..., Any], **fields: str) -> Callable[..., Any]:
    """``fn`` to run as a thread's target: in a fresh context holding only ``fields``, so a
    thread started from a request's context does not carry that request's id."""

    def run(*args: Any, **kwargs: Any) -> Any:
        def body() -> Any:
            with bind(**fields):
                return fn(*args, **kwargs)

        return contextvars.Context().run(body)

    return run
