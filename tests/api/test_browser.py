"""The browser guard's decisions, in-process: which requests a page on another site, or a
DNS-rebinding name, cannot make; what non-browser clients keep doing."""

from __future__ import annotations

import pytest

from frameserve.api.http.browser import BrowserGuard, BrowserPolicy
from frameserve.api.http.origins import parse_host, parse_origin
from frameserve.api.status import http_status


def _scope(method: str = "POST", scheme: str = "http", **headers: str) -> dict:
    raw = [(k.replace("_", "-").lower().encode(), v.encode()) for k, v in headers.items()]
    return {"type": "http", "method": method, "scheme": scheme, "path": "/v2/x", "headers": raw}


def _status(policy: BrowserPolicy, scope: dict) -> int:
    refusal = BrowserGuard(app=None, policy=policy).refusal(scope)  # type: ignore[arg-type]
    return 200 if refusal is None else http_status(refusal)


DEFAULT = BrowserPolicy()
APP = BrowserPolicy.from_flags(["https://App.example:8443/"], [])
HOSTS = BrowserPolicy.from_flags([], ["models.example", "127.0.0.1:8000", "[::1]"])


@pytest.mark.parametrize(
    ("policy", "scope", "status"),
    [
        # non-browser clients: no Origin, no Sec-Fetch-Site
        (DEFAULT, _scope(host="127.0.0.1:8000"), 200),
        (DEFAULT, _scope(), 200),  # not even a Host
        # a page on another site
        (DEFAULT, _scope(host="127.0.0.1:8000", origin="https://evil.example"), 403),
        (DEFAULT, _scope(host="127.0.0.1:8000", origin="null"), 403),  # sandboxed, redirected
        (DEFAULT, _scope("DELETE", host="127.0.0.1:8000", origin="http://localhost:8000"), 403),
        (DEFAULT, _scope(host="127.0.0.1:8000", sec_fetch_site="cross-site"), 403),
        (DEFAULT, _scope(host="127.0.0.1:8000", sec_fetch_site="same-site"), 403),
        # reading is not refused (the browser keeps the answer from the page without CORS)
        (DEFAULT, _scope("GET", host="127.0.0.1:8000", origin="https://evil.example"), 200),
        (DEFAULT, _scope("OPTIONS", host="h", sec_fetch_site="cross-site"), 200),
        # the server's own origin (default ports dropped as browsers do)
        (DEFAULT, _scope(host="127.0.0.1:8000", origin="http://127.0.0.1:8000"), 200),
        (DEFAULT, _scope(host="Models.example", origin="http://models.example"), 200),
        (DEFAULT, _scope("PUT", "https", host="m.example:443", origin="https://m.example"), 200),
        (DEFAULT, _scope(host="127.0.0.1:8000", origin="https://127.0.0.1:8000"), 403),
        (DEFAULT, _scope(host="h", sec_fetch_site="same-origin"), 200),
        (DEFAULT, _scope(host="h", sec_fetch_site="none"), 200),
        # --allowed-origin, even though the browser says cross-site
        (APP, _scope(host="h", origin="https://app.example:8443", sec_fetch_site="same-site"), 200),
        (APP, _scope(host="h", origin="https://app.example", sec_fetch_site="cross-site"), 403),
        # --allowed-host: every method, with or without the port
        (HOSTS, _scope("GET", host="evil.example:8000"), 421),
        (HOSTS, _scope("GET"), 421),  # no Host at all
        (HOSTS, _scope("GET", host="models.example:8000"), 200),
        (HOSTS, _scope("GET", host="127.0.0.1:8000"), 200),
        (HOSTS, _scope("GET", host="127.0.0.1:9000"), 421),  # listed with another port
        (HOSTS, _scope("GET", host="[::1]:8000"), 200),
        (HOSTS, _scope(host="models.example", origin="https://evil.example"), 403),
    ],
)
def test_decisions(policy, scope, status):
    assert _status(policy, scope) == status


def test_the_answer_names_the_header_and_the_flag():
    guard = BrowserGuard(app=None, policy=DEFAULT)  # type: ignore[arg-type]
    origin = guard.refusal(_scope(host="127.0.0.1:8000", origin="https://evil.example"))
    assert origin is not None and "Origin 'https://evil.example'" in origin.message
    assert "--allowed-origin" in origin.message and "http://127.0.0.1:8000" in origin.message
    fetch = guard.refusal(_scope(host="h", sec_fetch_site="cross-site"))
    assert fetch is not None and "Sec-Fetch-Site" in fetch.message
    assert "--allowed-origin" in fetch.message
    host = BrowserGuard(app=None, policy=HOSTS).refusal(_scope(host="evil.example"))  # type: ignore[arg-type]
    assert host is not None and "Host 'evil.example'" in host.message
    assert "--allowed-host" in host.message


@pytest.mark.parametrize(
    "text", ["app.example", "ftp://app.example", "https://", "https://a.example/path", "null"]
)
def test_bad_allowed_origins_are_refused(text):
    with pytest.raises(ValueError, match="expected an origin"):
        parse_origin(text)


def test_origins_and_hosts_are_normalised():
    assert parse_origin("HTTPS://App.Example:443/") == "https://app.example"
    assert parse_origin("http://a.example:8080") == "http://a.example:8080"
    assert parse_host(" Models.Example ") == "models.example"
    with pytest.raises(ValueError, match="expected a host name"):
        parse_host("http://models.example")
    with pytest.raises(ValueError, match="xn-- form"):
        parse_host("bücher.example")
