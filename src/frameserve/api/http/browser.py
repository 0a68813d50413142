"""Refuses what a web page in someone's browser could make the server do.

A page on any site can send a "simple" cross-site request (a form post, ``fetch`` with
``mode: "no-cors"``) to a server the browser reaches, loopback included: no CORS preflight is
needed to *send* it, only to read the answer. So state-changing requests (every method but
GET, HEAD and OPTIONS) that a browser marks as coming from another site are refused with 403:
an ``Origin`` that is neither this server's own origin nor listed with ``--allowed-origin``,
or, without an ``Origin``, a ``Sec-Fetch-Site`` other than ``same-origin`` / ``none``.
Non-browser clients (curl, tritonclient, perf_analyzer) send neither header and are not
affected.

A DNS-rebinding page (a name of the attacker's that first resolves to the attacker and then
to 127.0.0.1) *is* same-origin in the browser's eyes, so the check above cannot see it; its
requests carry the attacker's name in ``Host``. ``--allowed-host`` lists the names the server
answers to; any other ``Host`` (or none) gets 421 Misdirected Request, the status RFC 9110
(15.5.20) defines for a request whose authority this server is not configured to answer for.
Without ``--allowed-host`` every ``Host`` is accepted, as before.

The checks are one set lookup per request header (none at all for a GET without
``--allowed-host``), about 0.5 us a request in-process (1 us with ``--allowed-host``), so the
inference fast path behind it keeps its speed.
"""

from __future__ import annotations

import orjson
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from frameserve.api.http.origins import BrowserPolicy, without_default_port
from frameserve.api.status import error_message, http_status
from frameserve.errors import CrossSiteRequest, FrameserveError, MisdirectedRequest

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_WATCHED = frozenset({b"host", b"origin", b"sec-fetch-site"})
_SAME_SITE_FETCHES = (b"same-origin", b"none")  # ``none``: typed in the address bar, a bookmark


class BrowserGuard:
    """ASGI middleware applying a ``BrowserPolicy`` to every HTTP request before ``app``."""

    def __init__(self, app: ASGIApp, policy: BrowserPolicy) -> None:
        self.app = app
        self.policy = policy
        hosts = policy.allowed_hosts
        # compared with the raw header bytes, so a request costs no decoding
        self._hosts = None if hosts is None else frozenset(h.encode("ascii") for h in hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = self.refusal(scope)
            if refusal is not None:
                body = orjson.dumps({"error": error_message(refusal)})
                response = Response(body, http_status(refusal), media_type="application/json")
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def refusal(self, scope: Scope) -> FrameserveError | None:
        """Why this request is refused, or None."""
        hosts = self._hosts
        safe = scope["method"] in SAFE_METHODS
        if safe and hosts is None:
            return None
        host = origin = fetch_site = None
        for name, value in scope["headers"]:
            if name in _WATCHED:  # one hash lookup per header on the common path
                if name == b"host":
                    host = value
                elif name == b"origin":
                    origin = value
                else:
                    fetch_site = value
        if hosts is not None and not _host_listed(host, hosts):
            shown = "no Host header" if host is None else f"Host {_text(host)!r}"
            return MisdirectedRequest(
                f"{shown}: this server answers only to the names given with --allowed-host"
            )
        if safe:
            return None
        if origin is not None:
            return self._origin_refusal(_text(origin), scope["scheme"], host)
        if fetch_site is not None and fetch_site not in _SAME_SITE_FETCHES:
            return CrossSiteRequest(
                f"cross-site request refused: Sec-Fetch-Site is {_text(fetch_site)!r} (a "
                f"browser request from another site) on {scope['method']} {scope['path']}; "
                "send it from this server's own origin or list the page's origin with "
                "--allowed-origin"
            )
        return None

    def _origin_refusal(
        self, origin: str, scheme: str, host: bytes | None
    ) -> FrameserveError | None:
        origin = without_default_port(origin.partition(":")[0], origin.lower())
        own = None
        if host is not None:
            own = without_default_port(scheme, f"{scheme}://{_text(host).lower()}")
        if origin == own or origin in self.policy.allowed_origins:
            return None
        return CrossSiteRequest(
            f"cross-site request refused: Origin {origin!r} is not this server's origin "
            f"({own or 'unknown: no Host header'}); a browser page may change state only from "
            "its own origin or one listed with --allowed-origin"
        )


def _host_listed(host: bytes | None, allowed: frozenset[bytes]) -> bool:
    if host is None:
        return False
    name = host.lower()
    if name in allowed:
        return True
    # without its port: "[::1]:8000" -> "[::1]", "models.example:8000" -> "models.example"
    colon = name.rfind(b":")
    return colon > name.rfind(b"]") and name[:colon] in allowed


def _text(value: bytes) -> str:
    return value.decode("latin-1")
