"""The HTTP side of the access check: run before routing, for the infer fast path and the
router alike, so a refused request is answered before its body is read."""

from __future__ import annotations

import orjson
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import Scope

from frameserve.api.access import AccessPolicy, http_rule
from frameserve.api.auth import caller
from frameserve.api.status import error_message, http_status
from frameserve.errors import FrameserveError


def refuse(policy: AccessPolicy, scope: Scope, headers: Headers | None = None) -> Response | None:
    """None when the request may go on (its key set as the ``caller``), else the answer:
    401 with ``WWW-Authenticate: Bearer``, or 403. ``headers``: the scope's, when the caller
    has parsed them already."""
    headers = headers if headers is not None else Headers(scope=scope)
    try:
        key = policy.check(http_rule(scope["method"], scope["path"]), headers.get)
    except FrameserveError as err:
        status = http_status(err)
        extra = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        body = orjson.dumps({"error": error_message(err)})
        return Response(body, status, headers=extra, media_type="application/json")
    caller.set(key)  # the request's own task: handlers read it, no reset needed
    return None
