"""The API reference: ``/openapi.json`` and a Swagger UI page at ``/docs``.

The description is ``openapi.yaml`` next to this module, the one source of truth; it is read
once, on the first request, and served with ``servers`` and ``info.version`` set for the server
that answers (the address the client used, so a description fetched through a proxy or a port
forward points back the same way). The page and its assets come from ``static/`` in the package
(a vendored Swagger UI, see ``static/README.md``): nothing is loaded from another origin.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

import orjson
import yaml
from starlette.requests import Request
from starlette.responses import Response

from frameserve.errors import NotFound

# name -> media type; nothing else under static/ is served (licences, README).
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "docs.js": "text/javascript; charset=utf-8",
}
# The assets change only with the package, but a day keeps an upgrade visible the next day
# without versioned URLs; the ETag makes the revalidation after that a 304.
ASSET_CACHE_CONTROL = "public, max-age=86400"
_PACKAGE = "frameserve.api.http"

Endpoint = Callable[[Request], Awaitable[Response]]


def load_description() -> dict[str, Any]:
    """The OpenAPI description as shipped (``servers`` and ``info.version`` not yet filled)."""
    text = resources.files(_PACKAGE).joinpath("openapi.yaml").read_text(encoding="utf-8")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~10x faster to parse
    description: dict[str, Any] = yaml.load(text, Loader=loader)
    return description


def _static(name: str) -> bytes:
    return resources.files(_PACKAGE).joinpath("static", name).read_bytes()


@dataclass(frozen=True, slots=True)
class _Asset:
    body: bytes
    media_type: str
    etag: str


class ApiReference:
    """The ``/openapi.json``, ``/docs`` and ``/docs/static/{file}`` endpoints.

    Runs on the server's loop; the files are read on first use and kept (about 2 MB).
    """

    def __init__(self, server_version: str) -> None:
        self.server_version = server_version
        self._description: dict[str, Any] | None = None
        self._assets: dict[str, _Asset] = {}

    def description(self, base_url: str) -> dict[str, Any]:
        """The description for a server reached at ``base_url``."""
        if self._description is None:
            self._description = load_description()
        out = copy.copy(self._description)  # only top-level keys are replaced
        out["info"] = {**out["info"], "version": self.server_version}
        out["servers"] = [{"url": base_url.rstrip("/")}]
        return out

    async def openapi(self, request: Request) -> Response:
        body = orjson.dumps(self.description(str(request.base_url)))
        return Response(body, media_type="application/json")

    async def page(self, request: Request) -> Response:
        return Response(
            _static("docs.html"),
            media_type="text/html; charset=utf-8",
            headers={"Cache-Control": "no-cache"},
        )

    def _asset(self, name: str) -> _Asset:
        if name not in ASSETS:
            raise NotFound(f"docs asset {name!r}: expected one of {sorted(ASSETS)}")
        if name not in self._assets:
            body = _static(name)
            etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
            self._assets[name] = _Asset(body, ASSETS[name], etag)
        return self._assets[name]

    async def asset(self, request: Request) -> Response:
        asset = self._asset(request.path_params["file"])
        headers = {
            "Cache-Control": ASSET_CACHE_CONTROL,
            "ETag": asset.etag,
            "X-Content-Type-Options": "nosniff",
        }
        if asset.etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        return Response(asset.body, headers=headers, media_type=asset.media_type)

    def routes(self) -> list[tuple[str, Endpoint, str]]:
        """(path, endpoint, method) rows; the app wraps them with its error mapping."""
        return [
            ("/openapi.json", self.openapi, "GET"),
            ("/docs", self.page, "GET"),
            ("/docs/static/{file}", self.asset, "GET"),
        ]
