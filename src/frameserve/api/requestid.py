"""Request ids: echoed from a client when sane, generated otherwise; and the access log.

Every HTTP response carries ``X-Request-ID`` and every log line written for a request carries
the same id (``frameserve.logcontext``), so a client quoting the id of an opaque 500 leads an
operator to its traceback.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Iterable
from typing import Any

HEADER = "x-request-id"
# Printable, no spaces or quotes: a client's id is echoed into headers and log lines as is.
_SANE = re.compile(r"[A-Za-z0-9._:@+=/-]{1,128}")
access_log = logging.getLogger("frameserve.access")


def accept(value: str | None) -> str | None:
    """``value`` when a client may name its request with it, else None."""
    if value is not None and _SANE.fullmatch(value):
        return value
    return None


def from_metadata(metadata: Iterable[tuple[str, Any]] | None) -> str | None:
    """A sane ``x-request-id`` from gRPC invocation metadata (keys arrive lower-case)."""
    for key, value in metadata or ():
        if key == HEADER and isinstance(value, str):
            return accept(value)
    return None


def new_id() -> str:
    """A fresh id: 16 hex digits. Ids name requests and guard nothing, so the non-cryptographic
    generator does (a quarter of the cost of ``os.urandom``, which is a system call)."""
    return f"{random.getrandbits(64):016x}"


def log_access(
    protocol: str, method: str, path: str, status: int | str, duration_s: float, peer: str
) -> None:
    """One access-log line; the request id comes from the log context of the caller."""
    access_log.info(
        "%s %s %s %s %.1f ms",
        protocol,
        method,
        path,
        status,
        duration_s * 1e3,
        extra={
            "protocol": protocol,
            "method": method,
            "path": path,
            "status": status,
            "duration_ms": round(duration_s * 1e3, 3),
            "peer": peer,
        },
    )
