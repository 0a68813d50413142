"""One HTTP request through an ASGI app, in-process (no socket, no HTTP client library)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name.lower()), None)

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name.lower()]

    def json(self) -> Any:
        import orjson

        return orjson.loads(self.body)


async def call(
    app: Any,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    scheme: str = "http",
    client: str = "127.0.0.1",
) -> Answer:
    """``method path`` with ``body`` and ``headers`` (a Host is added) through ``app``."""
    path, _, query = path.partition("?")
    raw = {"host": "127.0.0.1:8000", **{k.lower(): v for k, v in (headers or {}).items()}}
    scope = {
        "type": "http", "method": method, "path": path, "raw_path": path.encode(),
        "query_string": query.encode(), "root_path": "", "scheme": scheme,
        "http_version": "1.1", "headers": [(k.encode(), v.encode()) for k, v in raw.items()],
        "server": ("127.0.0.1", 8000), "client": (client, 40000),
    }  # fmt: skip
    sent: list[dict[str, Any]] = []
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if delivered:
            return {"type": "http.disconnect"}
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    content = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    decoded = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in start["headers"]]
    return Answer(start["status"], decoded, content)
