"""API keys with owners: who a request comes from, and what the server's settings for access are.

``--api-key-file PATH`` holds one key per line, ``NAME:SECRET`` or ``NAME:SECRET:admin``
(blank lines and ``#`` comments allowed). The file is read at start (a bad line ends start-up
with its file and line number, never its secret) and again on SIGHUP (a bad file then keeps the
keys in force and logs why). A secret is compared, in constant time, against every key;
secrets never reach a log line or an error message.

The key that authenticated a request lives in the ``caller`` context variable for that
request's task: handlers ask ``new_owner()`` for the owner of what they create and
``owner_scope()`` for whose jobs and streams the caller may see (None: all of them).
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from frameserve.errors import ConfigError, Unauthenticated

log = logging.getLogger(__name__)

MIN_SECRET_CHARS = 16
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_HEADER = re.compile(r"[A-Za-z0-9-]{1,64}")
CATEGORIES = (
    "health",
    "metadata",
    "inference",
    "shared-memory",
    "model-config",
    "model-repository",
    "statistics",
    "trace",
    "logging",
    "jobs",
    "streams",
    "metrics",
)

caller: contextvars.ContextVar[ApiKey | None] = contextvars.ContextVar("caller", default=None)


@dataclass(frozen=True)
class ApiKey:
    """One key of the key file; ``secret`` is left out of ``repr`` so it is never logged."""

    name: str
    secret: str = field(repr=False)
    admin: bool = False

    @property
    def digest(self) -> bytes:
        return hashlib.sha256(self.secret.encode()).digest()


def _parse_line(text: str, where: str) -> ApiKey | None:
    """A key from one line of the key file, None for a blank or comment line."""
    line = text.strip()
    if not line or line.startswith("#"):
        return None
    parts = line.split(":")
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != "admin"):
        raise ConfigError(
            f"{where}: expected NAME:SECRET or NAME:SECRET:admin, got {len(parts)} "
            "':'-separated fields (a secret may not contain ':'; the line is not shown)"
        )
    name, secret = parts[0], parts[1]
    if not _NAME.fullmatch(name):
        raise ConfigError(
            f"{where}: key name: expected 1-64 letters, digits, '.', '_' or '-', got {name!r}"
        )
    if len(secret) < MIN_SECRET_CHARS or any(c.isspace() for c in secret):
        raise ConfigError(
            f"{where}: key {name!r}: expected a secret of at least {MIN_SECRET_CHARS} "
            f"characters without spaces, got {len(secret)} characters (not shown)"
        )
    return ApiKey(name, secret, admin=len(parts) == 3)


@dataclass(frozen=True)
class KeyRing:
    """The keys of one reading of the key file."""

    keys: tuple[ApiKey, ...]
    path: Path | None = None

    @classmethod
    def read(cls, path: Path) -> KeyRing:
        """Parse ``path``; ConfigError naming the file and line for anything wrong."""
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            reason = err.strerror if isinstance(err, OSError) else "not UTF-8 text"
            raise ConfigError(f"--api-key-file {path}: cannot read it: {reason}") from None
        keys: list[ApiKey] = []
        names: dict[str, int] = {}
        digests: dict[bytes, int] = {}
        for number, line in enumerate(text.splitlines(), 1):
            where = f"--api-key-file {path}, line {number}"
            key = _parse_line(line, where)
            if key is None:
                continue
            if key.name in names:
                raise ConfigError(
                    f"{where}: key name {key.name!r} already used on line {names[key.name]}; "
                    "expected each name once"
                )
            if key.digest in digests:
                raise ConfigError(
                    f"{where}: key {key.name!r} has the same secret as line "
                    f"{digests[key.digest]}; expected a different secret for each key"
                )
            names[key.name], digests[key.digest] = number, number
            keys.append(key)
        if not keys:
            raise ConfigError(f"--api-key-file {path}: expected at least one key, found none")
        return cls(tuple(keys), path)

    def match(self, secret: str) -> ApiKey | None:
        """The key with this secret, or None; every key is compared, each in constant time."""
        given = hashlib.sha256(secret.encode("utf-8", "surrogateescape")).digest()
        found = None
        for key in self.keys:
            if hmac.compare_digest(key.digest, given):
                found = key
        return found


class Keys:
    """The key ring in force; ``reload`` swaps it for a fresh reading of the file.

    Owned by the server's loop (the SIGHUP handler runs there); readers only take the
    reference, so a reload never shows them a half-read file.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.ring = KeyRing.read(path)

    def reload(self) -> bool:
        """Read the file again; on any error keep the old keys, log why and return False."""
        try:
            ring = KeyRing.read(self.path)
        except ConfigError as err:
            log.error("API keys not reloaded, the previous keys stay in force: %s", err.message)
            return False
        self.ring = ring
        log.info("API keys reloaded from %s: %d keys", self.path, len(ring.keys))
        return True

    def authenticate(self, authorization: str | None) -> ApiKey:
        """The key an ``Authorization: Bearer SECRET`` value names, or Unauthenticated."""
        if not authorization:
            raise Unauthenticated(
                "authorization: expected 'Bearer <api key>', got no authorization header"
            )
        scheme, _, secret = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise Unauthenticated(
                f"authorization: expected 'Bearer <api key>', got a {scheme[:16]!r} credential"
            )
        key = self.ring.match(secret.strip())
        if key is None:
            raise Unauthenticated("authorization: the API key is not valid")
        return key


@dataclass(frozen=True)
class RestrictedGroup:
    """Triton's ``--http-restricted-api`` / ``--grpc-restricted-protocol`` group: the
    categories that need ``header`` (gRPC: metadata key) with ``value``."""

    categories: frozenset[str]
    header: str
    value: str = field(repr=False)


def parse_restricted(text: str, flag: str) -> RestrictedGroup:
    """``CATEGORIES:HEADER=VALUE`` as Triton writes it; ConfigError naming the flag."""
    head, sep, tail = text.partition(":")
    header, eq, value = tail.partition("=")
    if not sep or not eq or not head or not header or not value:
        raise ConfigError(
            f"{flag}: expected CATEGORY[,CATEGORY...]:HEADER=VALUE, got a value without "
            "':' or '=' or with an empty part"
        )
    categories = [c.strip() for c in head.split(",")]
    unknown = [c for c in categories if c not in CATEGORIES]
    if unknown:
        raise ConfigError(f"{flag}: expected categories from {list(CATEGORIES)}, got {unknown}")
    if not _HEADER.fullmatch(header):
        raise ConfigError(f"{flag}: header: expected letters, digits or '-', got {header!r}")
    return RestrictedGroup(frozenset(categories), header.lower(), value)


def restriction_table(groups: tuple[RestrictedGroup, ...], flag: str) -> dict[str, RestrictedGroup]:
    """Category -> group; a category in two groups is refused, as Triton does."""
    table: dict[str, RestrictedGroup] = {}
    for group in groups:
        for category in sorted(group.categories):
            if category in table:
                raise ConfigError(
                    f"{flag}: category {category!r} is in two groups; expected each once"
                )
            table[category] = group
    return table


@dataclass(frozen=True)
class AuthSettings:
    """Who may call the server: keys (None: off), ``/metrics`` without a key, restricted
    categories per protocol. Changing the key file's content needs only SIGHUP."""

    api_key_file: Path | None = None
    metrics_open: bool = False
    http_restricted: tuple[RestrictedGroup, ...] = ()
    grpc_restricted: tuple[RestrictedGroup, ...] = ()

    def __post_init__(self) -> None:
        restriction_table(self.http_restricted, "--http-restricted-api")
        restriction_table(self.grpc_restricted, "--grpc-restricted-protocol")


def new_owner() -> str:
    """The owner of a job or stream the current request creates ("" with keys off)."""
    key = caller.get()
    return key.name if key is not None else ""


def owner_scope() -> str | None:
    """Whose jobs and streams the current request may see: None for all (keys off, or an
    admin key), else the caller's key name."""
    key = caller.get()
    return None if key is None or key.admin else key.name
