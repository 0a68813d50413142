"""Browser sessions: a key given once (``POST /v1/session``) stands behind an opaque cookie.

A page's ``<img>``, ``<video>`` and ``EventSource`` cannot send an ``Authorization`` header, so
the dashboard logs in with a key once and the browser sends a cookie afterwards. The cookie's
value is a random id (256 bits) that means nothing outside this process: the store maps it to
the key's name and a digest of its secret, with an expiry. A session is good only while a key of
that name with that secret is in force, so a key removed (or re-issued) in the key file ends its
sessions at the next SIGHUP, with no hook into the reload. At most ``max_sessions`` are kept;
a new one beyond that replaces the one closest to expiry.

``LoginBrake`` slows guessing: each failed login from a client waits ``delay_s`` before it is
answered, and a client with ``max_failures`` failures in ``window_s`` is refused (429) until the
oldest of them leaves the window. It remembers at most ``max_clients`` clients.

Both are owned by the server's event loop (the HTTP app's requests run there): no locks.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from frameserve.api.auth import ApiKey, Keys
from frameserve.errors import TooManyAttempts

COOKIE = "frameserve_session"
DEFAULT_TTL_S = 12 * 3600.0
DEFAULT_MAX_SESSIONS = 1024


@dataclass(frozen=True, slots=True)
class Session:
    key_name: str
    digest: bytes
    expires: float  # time.time() seconds


class SessionStore:
    """Session id -> the key it stands for, bounded and expiring; see the module docstring."""

    def __init__(
        self,
        keys: Keys,
        ttl_s: float = DEFAULT_TTL_S,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keys = keys
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self._clock = clock
        self._sessions: dict[str, Session] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def open(self, key: ApiKey) -> tuple[str, Session]:
        """A new session for ``key``: its id (the cookie value) and what it stands for."""
        now = self._clock()
        if len(self._sessions) >= self.max_sessions:
            self._expire(now)
        if len(self._sessions) >= self.max_sessions:
            oldest = min(self._sessions, key=lambda sid: self._sessions[sid].expires)
            del self._sessions[oldest]
        session_id = secrets.token_urlsafe(32)
        session = Session(key.name, key.digest, now + self.ttl_s)
        self._sessions[session_id] = session
        return session_id, session

    def close(self, session_id: str | None) -> bool:
        """End a session; whether there was one."""
        return session_id is not None and self._sessions.pop(session_id, None) is not None

    def lookup(self, session_id: str | None) -> tuple[ApiKey, Session] | None:
        """The key in force behind ``session_id`` and the session, or None (unknown, expired,
        or its key is no longer in the key file: the session ends then)."""
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        if session is None:
            return None
        if session.expires <= self._clock():
            del self._sessions[session_id]
            return None
        for key in self.keys.ring.keys:
            if key.name == session.key_name and key.digest == session.digest:
                return key, session
        del self._sessions[session_id]  # removed or re-issued at a reload
        return None

    def _expire(self, now: float) -> None:
        for sid in [s for s, session in self._sessions.items() if session.expires <= now]:
            del self._sessions[sid]


class LoginBrake:
    """Failed logins per client: a delay for each, a refusal after too many; bounded."""

    def __init__(
        self,
        delay_s: float = 0.5,
        max_failures: int = 10,
        window_s: float = 300.0,
        max_clients: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.delay_s = delay_s
        self.max_failures = max_failures
        self.window_s = window_s
        self.max_clients = max_clients
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, client: str, now: float) -> deque[float]:
        times = self._failures.get(client)
        if times is None:
            return deque()
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if not times:
            del self._failures[client]
        return times

    def attempt(self, client: str) -> None:
        """Count an attempt of ``client`` as a failure until it ``succeeded`` (so guesses sent
        in parallel are counted before any is answered); TooManyAttempts when ``client`` has
        ``max_failures`` in the window already."""
        now = self._clock()
        times = self._recent(client, now)
        if len(times) >= self.max_failures:
            wait = max(1, round(times[0] + self.window_s - now))
            raise TooManyAttempts(
                f"login: {len(times)} failed attempts from this client in the last "
                f"{self.window_s:g} s (the limit is {self.max_failures}); try again in {wait} s",
                retry_after_s=wait,
            )
        if client in self._failures:
            self._failures.move_to_end(client)  # most recent last
        else:
            self._failures[client] = deque(maxlen=self.max_failures)
        self._failures[client].append(now)
        while len(self._failures) > self.max_clients:  # forget the least recent client
            self._failures.popitem(last=False)

    def succeeded(self, client: str) -> None:
        """The client logged in: its failures are forgotten."""
        self._failures.pop(client, None)
