"""Webhook outputs: JSON bodies POSTed with aiohttp, signed when the output has a secret.

Every body carries ``X-Frameserve-Event`` (``job.finished``, ``stream.records``, ...),
``X-Frameserve-Delivery`` (one id per message, the same on every retry, so a receiver can
drop a duplicate) and ``X-Frameserve-Timestamp`` (Unix seconds of this try). With a secret,
``X-Frameserve-Signature: sha256=<hex>`` is the HMAC-SHA256 of ``<timestamp>.<body>`` under
the secret: a receiver recomputes it, compares in constant time and refuses an old timestamp
(a replay); see docs/push.md for a verify snippet.

Where a POST may go is the destination policy of stream sources: ``PolicyResolver`` resolves
a host name for the connector and refuses it when any of its addresses is refused, so the
check runs before every new connection, on the addresses the connection then uses; an address
written in the URL is checked before each POST (aiohttp does not resolve it). Redirects are
not followed and proxy environment variables are ignored.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import ipaddress
import socket
import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from frameserve.video.live.policy import SourcePolicy, own_addresses
from frameserve.video.push.delivery import Message, PushError
from frameserve.video.push.spec import WebhookPush

SIGNATURE_HEADER = "X-Frameserve-Signature"
TIMESTAMP_HEADER = "X-Frameserve-Timestamp"
_RETRY_STATUSES = frozenset({408, 425, 429})  # client errors worth another try


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Frameserve-Signature`` value of ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def scrub(text: str, url: str) -> str:
    """``text`` (a library's error) without the password of ``url``."""
    password = urlsplit(url).password
    return text.replace(password, "***") if password else text


class PolicyResolver(AbstractResolver):
    """The connector's resolver: the system resolver, then the destination policy on every
    address (``OSError`` naming the rule when one is refused; aiohttp reports it as a
    connection error)."""

    def __init__(self, policy: SourcePolicy) -> None:
        self._policy = policy
        self._resolver = ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._resolver.resolve(host, port, family)
        own = own_addresses()
        for result in results:
            address = ipaddress.ip_address(result["host"].split("%", 1)[0])
            rule = self._policy.refusal(address, own)
            if rule is not None:
                why = f"{host} resolves to {address}, which the destination policy refuses"
                raise OSError(errno.EACCES, f"{why} ({rule}); see --allow-network")
        return results

    async def close(self) -> None:
        await self._resolver.close()


def new_session(policy: SourcePolicy) -> aiohttp.ClientSession:
    """The one HTTP client of the server's push outputs (on the running loop)."""
    connector = aiohttp.TCPConnector(resolver=PolicyResolver(policy), limit=64, ttl_dns_cache=10)
    return aiohttp.ClientSession(connector=connector, trust_env=False)


class WebhookTransport:
    """POSTs one output's messages through the shared session (loop-owned)."""

    def __init__(
        self, spec: WebhookPush, session: aiohttp.ClientSession, policy: SourcePolicy
    ) -> None:
        self._spec = spec
        self._session = session
        self._policy = policy
        host = urlsplit(spec.url).hostname or ""
        try:
            self._literal: Any = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            self._literal = None  # a name: ``PolicyResolver`` checks it

    async def send(self, message: Message) -> None:
        """One POST; ``PushError`` for an answer other than 2xx (``permanent`` for a client
        error that another try would not change)."""
        if self._literal is not None:
            rule = self._policy.refusal(self._literal, own_addresses())
            if rule is not None:
                raise PushError(f"{self._literal} is refused by the destination policy "
                                f"({rule}); see --allow-network")  # fmt: skip
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "frameserve-push",
            "X-Frameserve-Event": message.event,
            "X-Frameserve-Delivery": message.id,
            TIMESTAMP_HEADER: timestamp,
        }
        if self._spec.secret is not None:
            headers[SIGNATURE_HEADER] = sign(self._spec.secret, timestamp, message.body)
        timeout = aiohttp.ClientTimeout(total=self._spec.timeout_s)
        try:
            async with self._session.post(
                self._spec.url, data=message.body, headers=headers, allow_redirects=False,
                timeout=timeout,
            ) as response:  # fmt: skip
                await response.read()
                status = response.status
        except aiohttp.ClientError as err:
            detail = scrub(f"{type(err).__name__}: {err}", self._spec.url)
            raise PushError(f"POST {self._spec.public_url}: {detail}") from None
        if not 200 <= status < 300:
            permanent = 400 <= status < 500 and status not in _RETRY_STATUSES
            raise PushError(f"POST {self._spec.public_url}: HTTP {status}", permanent=permanent)

    async def close(self) -> None:
        """Nothing of its own: the session is the hub's."""
