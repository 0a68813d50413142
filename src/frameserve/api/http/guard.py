"""The HTTP side of the access check: run before routing, for the infer fast path and the
router alike, so a refused request is answered before its body is read."""

from __future__ import annotations

import functools

import orjson
from starlette.datastructures import Headers
from starlette.requests import cookie_parser
from starlette.responses import Response
from starlette.types import Scope

from frameserve.api.access import AccessPolicy, http_rule
from frameserve.api.auth import ApiKey, caller
from frameserve.api.sessions import COOKIE, SessionStore
from frameserve.api.status import error_message, http_status
from frameserve.errors import FrameserveError


def refuse(
    policy: AccessPolicy,
    scope: Scope,
    headers: Headers | None = None,
    sessions: SessionStore | None = None,
) -> Response | None:
    """None when the request may go on (its key set as the ``caller``), else the answer:
    401 with ``WWW-Authenticate: Bearer``, or 403. ``headers``: the scope's, when the caller
    has parsed them already; ``sessions``: the login sessions whose cookie stands for a key."""
    headers = headers if headers is not None else Headers(scope=scope)
    session = None if sessions is None else functools.partial(_session_key, sessions, headers)
    try:
        key = policy.check(http_rule(scope["method"], scope["path"]), headers.get, session)
    except FrameserveError as err:
        status = http_status(err)
        extra = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        body = orjson.dumps({"error": error_message(err)})
        return Response(body, status, headers=extra, media_type="application/json")
    caller.set(key)  # the request's own task: handlers read it, no reset needed
    return None


def session_id(headers: Headers) -> str | None:
    """The session cookie's value, if the request sent one."""
    cookie = headers.get("cookie")
    return cookie_parser(cookie).get(COOKIE) if cookie else None


def _session_key(sessions: SessionStore, headers: Headers) -> ApiKey | None:
    found = sessions.lookup(session_id(headers))
    return None if found is None else found[0]
