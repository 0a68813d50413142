"""Browser sessions in-process: the session store and the login brake on their own, then
``/v1/session`` and the cookie through the real HTTP app (behind the ``BrowserGuard``, as
``serve`` runs it) over a real ``InferenceServer``."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from api.asgi import Answer, call
from frameserve.api.access import AccessPolicy
from frameserve.api.auth import AuthSettings, Keys
from frameserve.api.http.app import create_http_app
from frameserve.api.http.browser import BrowserGuard, BrowserPolicy
from frameserve.api.sessions import COOKIE, LoginBrake, SessionStore
from frameserve.api.shm import SharedMemoryRegistry
from frameserve.errors import TooManyAttempts
from frameserve.serving.server import InferenceServer, ServerSettings

ALICE = "alice-secret-0123456789"
BOB = "bob-secret-9876543210xyz"
ROOT = "root-secret-abcdefghijklmn"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    path = tmp_path / "keys.txt"
    path.write_text(f"alice:{ALICE}\nbob:{BOB}\nroot:{ROOT}:admin\n")
    return Keys(path)


def test_a_session_stands_for_its_key_until_it_expires(keys: Keys) -> None:
    clock = Clock()
    store = SessionStore(keys, ttl_s=60, clock=clock)
    alice = keys.ring.match(ALICE)
    assert alice is not None
    sid, session = store.open(alice)
    assert len(sid) >= 40 and ALICE not in sid  # opaque: 32 random bytes, nothing of the key
    assert store.lookup(sid) == (alice, session)
    assert store.lookup("not-a-session") is None and store.lookup(None) is None
    clock.now += 61
    assert store.lookup(sid) is None and len(store) == 0


def test_a_reload_that_removes_or_changes_a_key_ends_its_sessions(keys: Keys) -> None:
    store = SessionStore(keys)
    alice, bob = keys.ring.match(ALICE), keys.ring.match(BOB)
    assert alice is not None and bob is not None
    a, b = store.open(alice)[0], store.open(bob)[0]
    keys.path.write_text(f"bob:{BOB}-rotated\nroot:{ROOT}:admin\n")
    assert keys.reload()
    assert store.lookup(a) is None  # alice is gone
    assert store.lookup(b) is None  # bob has a new secret: the old login does not carry over
    assert len(store) == 0


def test_the_store_is_bounded_and_drops_the_session_nearest_its_end(keys: Keys) -> None:
    clock = Clock()
    store = SessionStore(keys, ttl_s=100, max_sessions=3, clock=clock)
    alice = keys.ring.match(ALICE)
    assert alice is not None
    ids = []
    for _ in range(3):
        ids.append(store.open(alice)[0])
        clock.now += 1
    newest = store.open(alice)[0]
    assert len(store) == 3
    assert store.lookup(ids[0]) is None
    assert all(store.lookup(s) is not None for s in (*ids[1:], newest))


def test_the_login_brake_refuses_a_guessing_client_for_a_while() -> None:
    clock = Clock()
    brake = LoginBrake(max_failures=3, window_s=60, max_clients=2, clock=clock)
    for _ in range(3):  # attempts count as failures until one succeeds, even in parallel
        brake.attempt("10.0.0.1")
    with pytest.raises(TooManyAttempts, match="3 failed attempts") as refused:
        brake.attempt("10.0.0.1")
    assert refused.value.retry_after_s == 60
    brake.attempt("10.0.0.2")  # another client is not affected
    brake.succeeded("10.0.0.2")
    clock.now += 61
    brake.attempt("10.0.0.1")  # the window passed
    brake.succeeded("10.0.0.1")  # a login: the failures are forgotten
    for _ in range(3):
        brake.attempt("10.0.0.1")
    for client in ("a", "b", "c"):  # at most max_clients are remembered
        brake.attempt(client)
    assert len(brake._failures) == 2


def _app(tmp_path: Path, keys: Keys | None) -> BrowserGuard:
    server = InferenceServer(ServerSettings(repository=tmp_path / "models"))
    access = AccessPolicy.for_http(AuthSettings(), keys)
    app = create_http_app(server, SharedMemoryRegistry(), access=access)
    return BrowserGuard(app, BrowserPolicy())


def _cookie(answer: Answer) -> str:
    header = answer.header("set-cookie")
    assert header is not None
    return header.split(";")[0].split("=", 1)[1]


def _login(app: BrowserGuard, secret: str, scheme: str = "http") -> Answer:
    body = orjson.dumps({"key": secret})
    headers = {"Content-Type": "application/json", "Origin": f"{scheme}://127.0.0.1:8000"}
    return asyncio.run(call(app, "POST", "/v1/session", body, headers, scheme=scheme))


@pytest.fixture
def app(tmp_path: Path, keys: Keys) -> Iterator[BrowserGuard]:
    yield _app(tmp_path, keys)


def test_login_sets_a_strict_http_only_cookie_that_counts_as_the_key(app: BrowserGuard) -> None:
    answer = _login(app, ALICE)
    assert answer.status == 200, answer.body
    assert answer.json() == {
        "keys_required": True, "authenticated": True, "key": "alice", "admin": False,
        "via": "cookie", "expires": answer.json()["expires"],
    }  # fmt: skip
    flags = [f.strip().lower() for f in answer.header("set-cookie").split(";")[1:]]  # type: ignore[union-attr]
    assert {"httponly", "path=/", "samesite=strict"} <= set(flags)
    assert "secure" not in flags  # plain HTTP: a Secure cookie would never come back
    cookie = {"Cookie": f"{COOKIE}={_cookie(answer)}"}
    assert asyncio.run(call(app, "GET", "/v2", headers=cookie)).status == 200
    assert asyncio.run(call(app, "GET", "/v2")).status == 401
    # a POST from the page's own origin, authorised by the cookie alone
    own = {**cookie, "Origin": "http://127.0.0.1:8000", "Content-Type": "application/json"}
    assert asyncio.run(call(app, "POST", "/v2/repository/index", b"{}", own)).status == 200
    who = asyncio.run(call(app, "GET", "/v1/session", headers=cookie)).json()
    assert (who["authenticated"], who["key"], who["via"]) == (True, "alice", "cookie")
    # a Bearer header, when sent, is what counts: a wrong one is not rescued by the cookie
    wrong = {**cookie, "Authorization": "Bearer not-a-key-0123456789"}
    assert asyncio.run(call(app, "GET", "/v2", headers=wrong)).status == 401


def test_the_cookie_is_secure_over_tls(app: BrowserGuard) -> None:
    answer = _login(app, ALICE, scheme="https")
    assert answer.status == 200
    assert "secure" in answer.header("set-cookie").lower().split("; ")  # type: ignore[union-attr]


def test_a_cross_site_post_with_the_cookie_is_refused(app: BrowserGuard) -> None:
    cookie = f"{COOKIE}={_cookie(_login(app, ALICE))}"
    for headers in (
        {"Origin": "https://evil.example"},
        {"Sec-Fetch-Site": "cross-site"},
    ):
        sent = {"Cookie": cookie, "Content-Type": "application/json", **headers}
        answer = asyncio.run(call(app, "POST", "/v2/repository/index", b"{}", sent))
        assert answer.status == 403, answer.body
        assert "cross-site request refused" in answer.json()["error"]
        out = asyncio.run(call(app, "DELETE", "/v1/session", headers=sent))
        assert out.status == 403  # another site cannot log the user out either
    evil_login = {"Origin": "https://evil.example", "Content-Type": "application/json"}
    body = orjson.dumps({"key": ALICE})
    assert asyncio.run(call(app, "POST", "/v1/session", body, evil_login)).status == 403


def test_logout_ends_the_session(app: BrowserGuard) -> None:
    cookie = {"Cookie": f"{COOKIE}={_cookie(_login(app, BOB))}"}
    out = asyncio.run(call(app, "DELETE", "/v1/session", headers=cookie))
    assert out.status == 200 and out.json()["authenticated"] is False
    cleared = out.header("set-cookie")
    assert cleared is not None and cleared.startswith(f'{COOKIE}=""') and "Max-Age=0" in cleared
    assert asyncio.run(call(app, "GET", "/v2", headers=cookie)).status == 401
    who = asyncio.run(call(app, "GET", "/v1/session", headers=cookie)).json()
    assert who["keys_required"] is True and who["authenticated"] is False


def test_a_wrong_key_is_refused_with_a_clear_message(app: BrowserGuard) -> None:
    answer = _login(app, "not-the-key-0123456789")
    assert answer.status == 401
    assert "not a valid API key" in answer.json()["error"]
    assert answer.header("set-cookie") is None
    bad = asyncio.run(
        call(app, "POST", "/v1/session", b'{"secret": "x"}', {"Content-Type": "application/json"})
    )
    assert bad.status == 400 and "key" in bad.json()["error"]


def test_without_keys_there_is_nothing_to_log_in_to(tmp_path: Path) -> None:
    app = _app(tmp_path, None)
    answer = _login(app, ALICE)
    assert answer.status == 200 and answer.header("set-cookie") is None
    assert answer.json()["keys_required"] is False
    assert asyncio.run(call(app, "GET", "/v1/session")).json()["keys_required"] is False


def test_guessing_in_parallel_is_counted_and_refused_with_retry_after(app: BrowserGuard) -> None:
    body = orjson.dumps({"key": "a-guess-0123456789abc"})
    headers = {"Content-Type": "application/json"}

    async def guesses() -> list[Answer]:
        sent = [
            call(app, "POST", "/v1/session", body, headers, client="10.1.2.3") for _ in range(12)
        ]
        return list(await asyncio.gather(*sent))

    statuses = sorted(a.status for a in asyncio.run(guesses()))
    assert statuses == [401] * 10 + [429] * 2  # counted before any was answered
    again = _login_from(app, ALICE, "10.1.2.3")  # even the right key waits now
    assert again.status == 429 and int(again.header("retry-after") or 0) > 0
    assert "failed attempts" in again.json()["error"]
    assert _login_from(app, ALICE, "10.9.9.9").status == 200  # other clients are not slowed


def _login_from(app: BrowserGuard, secret: str, client: str) -> Answer:
    body = orjson.dumps({"key": secret})
    headers = {"Content-Type": "application/json"}
    return asyncio.run(call(app, "POST", "/v1/session", body, headers, client=client))
