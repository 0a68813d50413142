"""What ``--allowed-origin`` and ``--allowed-host`` accept, and the policy they make.

Kept apart from the ``BrowserGuard`` middleware (``browser.py``) so that parsing the command
line imports no web framework: every ``frameserve`` command builds the whole parser.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

_DEFAULT_PORTS = {"http": ":80", "https": ":443"}


def parse_origin(text: str) -> str:
    """An ``--allowed-origin`` value as a browser sends it (``scheme://host[:port]``,
    lower case, no path); ValueError saying what is expected otherwise."""
    origin = text.strip().lower().rstrip("/")
    scheme, sep, rest = origin.partition("://")
    if not sep or scheme not in _DEFAULT_PORTS or not rest or "/" in rest or "@" in rest:
        raise ValueError(f"expected an origin such as https://app.example:8443, got {text!r}")
    return without_default_port(scheme, origin)


def parse_host(text: str) -> str:
    """An ``--allowed-host`` value: a host name or address, optionally with ``:port``."""
    host = text.strip().lower()
    if not host or "/" in host or "@" in host or " " in host:
        raise ValueError(f"expected a host name such as models.example or 10.0.0.5, got {text!r}")
    if not host.isascii():
        raise ValueError(f"expected an ASCII host name (xn-- form for others), got {text!r}")
    return host


@dataclass(frozen=True)
class BrowserPolicy:
    """Which browser origins may change state, and which ``Host`` names are answered."""

    allowed_origins: frozenset[str] = frozenset()
    allowed_hosts: frozenset[str] | None = None  # None: any Host

    @classmethod
    def from_flags(cls, origins: Iterable[str], hosts: Iterable[str]) -> BrowserPolicy:
        host_set = frozenset(parse_host(h) for h in hosts)
        return cls(frozenset(parse_origin(o) for o in origins), host_set or None)


def without_default_port(scheme: str, origin: str) -> str:
    """``origin`` without the scheme's default port (a browser never sends it)."""
    suffix = _DEFAULT_PORTS.get(scheme)
    return origin[: -len(suffix)] if suffix and origin.endswith(suffix) else origin
