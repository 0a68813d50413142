"""``/v1/session``: log a browser in with an API key, ask who is logged in, log out.

``POST /v1/session`` with ``{"key": "<secret>"}`` checks the key as a Bearer header would be
checked and answers with a session cookie (``HttpOnly``, ``SameSite=Strict``, ``Path=/``, and
``Secure`` when the request came over TLS); the cookie then counts wherever a Bearer key does
(``frameserve.api.http.guard``). The route itself is open (the page must be able to log in),
so it brakes guessing with ``LoginBrake``. Being a POST, a login from another site's page is
refused by the ``BrowserGuard`` like every other state change. Without ``--api-key-file``
there is nothing to log in to: the answers say so (``keys_required: false``) and set no cookie.

Handlers run on the server's loop, which owns the session store and the brake.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from frameserve import logcontext
from frameserve.api.auth import ApiKey
from frameserve.api.http.body import read_body
from frameserve.api.http.codec import parse_json_object
from frameserve.api.http.guard import session_id
from frameserve.api.sessions import COOKIE, LoginBrake, Session, SessionStore
from frameserve.api.status import error_body, http_status
from frameserve.errors import InvalidInput, TooManyAttempts, Unauthenticated
from frameserve.serving.config import format_validation_error

Endpoint = Callable[[Request], Awaitable[Response]]
BODY_LIMIT = 4096


class LoginRequest(BaseModel):
    """``POST /v1/session``'s body."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: Annotated[StrictStr, Field(min_length=1, max_length=1024)]


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _json(content: Any, status_code: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code, media_type="application/json")


def _state(
    required: bool, key: ApiKey | None, via: str | None, session: Session | None = None
) -> dict[str, Any]:
    return {
        "keys_required": required,
        "authenticated": key is not None,
        "key": None if key is None else key.name,
        "admin": bool(key is not None and key.admin),
        "via": via,
        "expires": None if session is None else _iso(session.expires),
    }


class SessionRoutes:
    """The three ``/v1/session`` endpoints over one session store (None: keys are off)."""

    def __init__(self, sessions: SessionStore | None, brake: LoginBrake | None = None) -> None:
        self.sessions = sessions
        self.brake = brake or LoginBrake()

    async def login(self, request: Request) -> Response:
        body = await read_body(request.receive, request.headers, BODY_LIMIT)
        try:
            secret = LoginRequest.model_validate(parse_json_object(body)).key
        except ValidationError as err:
            raise InvalidInput(format_validation_error(err, "session")) from None
        if self.sessions is None:
            return _json(_state(False, None, None))
        client = request.client.host if request.client else ""
        try:
            self.brake.attempt(client)
        except TooManyAttempts as err:
            return _refusal(err, {"Retry-After": str(err.retry_after_s)})
        key = self.sessions.keys.ring.match(secret.strip())
        if key is None:
            await asyncio.sleep(self.brake.delay_s)  # every wrong guess costs the guesser
            raise Unauthenticated(
                "key: not a valid API key; expected the SECRET of a NAME:SECRET line of the "
                "server's --api-key-file (the secret is not shown)"
            )
        self.brake.succeeded(client)
        self.sessions.close(session_id(request.headers))  # a new login replaces the old one
        sid, session = self.sessions.open(key)
        response = _json(_state(True, key, "cookie", session))
        response.set_cookie(
            COOKIE,
            sid,
            max_age=int(self.sessions.ttl_s),
            path="/",
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )
        return response

    async def whoami(self, request: Request) -> Response:
        """Who this request is: by its Bearer header if it sends one, else by its cookie."""
        if self.sessions is None:
            return _json(_state(False, None, None))
        authorization = request.headers.get("authorization")
        if authorization:
            try:
                key = self.sessions.keys.authenticate(authorization)
            except Unauthenticated:
                return _json(_state(True, None, None))
            return _json(_state(True, key, "bearer"))
        found = self.sessions.lookup(session_id(request.headers))
        if found is None:
            return _json(_state(True, None, None))
        return _json(_state(True, found[0], "cookie", found[1]))

    async def logout(self, request: Request) -> Response:
        if self.sessions is None:
            return _json(_state(False, None, None))
        self.sessions.close(session_id(request.headers))
        response = _json(_state(True, None, None))
        response.delete_cookie(
            COOKIE,
            path="/",
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )
        return response

    def routes(self) -> list[tuple[str, Endpoint, str]]:
        """(path, endpoint, method) rows; the app wraps them with its error mapping."""
        return [
            ("/v1/session", self.login, "POST"),
            ("/v1/session", self.whoami, "GET"),
            ("/v1/session", self.logout, "DELETE"),
        ]


def _refusal(err: TooManyAttempts, headers: dict[str, str]) -> Response:
    body = orjson.dumps(error_body(err, logcontext.request_id.get()))
    return Response(body, http_status(err), headers=headers, media_type="application/json")
