"""The dashboard at ``/ui/``: a page, a script and a style sheet shipped in the package.

The page is plain HTML with one JavaScript module (no framework, nothing built, nothing loaded
from another origin) that reads the server's public APIs, the same JSON any client gets. Every
answer carries a strict Content-Security-Policy (only this origin; no inline script or style;
no framing), so an injected string in a model or job name cannot run as script. The files are
read on first use and kept; browsers keep them and revalidate them by ETag on every load.

The routes are open (``frameserve.api.access``): the page has to load before its user logs in,
and it holds nothing secret.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response

from frameserve.errors import NotFound

# name -> media type; nothing else under ui/ is served.
ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
# Stored, but revalidated on every load (a 304 while unchanged): the page and its script always
# come from the same server version, so an upgrade never pairs an old script with a new API.
CACHE_CONTROL = "no-cache"
_PACKAGE = "frameserve.api.http"

Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class _Asset:
    body: bytes
    media_type: str
    etag: str


class Dashboard:
    """The ``/ui/`` and ``/ui/{file}`` endpoints (``/ui`` is redirected to ``/ui/`` by the
    router). Runs on the server's loop; the files (some 40 kB) are read once."""

    def __init__(self) -> None:
        self._assets: dict[str, _Asset] = {}

    def _asset(self, name: str) -> _Asset:
        if name not in ASSETS:
            raise NotFound(f"dashboard file {name!r}: expected one of {sorted(ASSETS)}")
        if name not in self._assets:
            body = resources.files(_PACKAGE).joinpath("ui", name).read_bytes()
            etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
            self._assets[name] = _Asset(body, ASSETS[name], etag)
        return self._assets[name]

    def _send(self, request: Request, name: str) -> Response:
        asset = self._asset(name)
        headers = {
            "Cache-Control": CACHE_CONTROL,
            "ETag": asset.etag,
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "no-referrer",
        }
        if asset.etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        return Response(asset.body, headers=headers, media_type=asset.media_type)

    async def page(self, request: Request) -> Response:
        return self._send(request, "index.html")

    async def file(self, request: Request) -> Response:
        return self._send(request, request.path_params["file"])

    def routes(self) -> list[tuple[str, Endpoint, str]]:
        """(path, endpoint, method) rows; the app wraps them with its error mapping."""
        return [
            ("/ui/", self.page, "GET"),
            ("/ui/{file}", self.file, "GET"),
        ]
