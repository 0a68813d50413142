"""Where a live stream may connect: the destination policy of network sources.

A client names a source URL; FFmpeg would resolve its host and connect wherever the name points,
so a client could make the server read its own ports (``127.0.0.1:8000``), the cloud metadata
service (``169.254.169.254``) or another service on the host. ``SourcePolicy.check`` resolves the
host with the same resolver FFmpeg uses (``getaddrinfo``, so ``2130706433``, ``0x7f.1`` and
``localhost`` mean what they mean to FFmpeg), checks every address, and returns the URL rewritten
to the checked address, so FFmpeg connects there and resolves nothing itself.

The rules, first match wins (``refusal``):

1. an address inside a ``--deny-network`` CIDR is refused (deny wins over allow);
2. an address inside an ``--allow-network`` CIDR is allowed (this re-opens loopback, link-local
   or the server's own addresses, e.g. ``--allow-network 127.0.0.0/8`` for local testing);
3. unspecified (``0.0.0.0/8``, ``::``), loopback (``127.0.0.0/8``, ``::1``), link-local
   (``169.254.0.0/16`` with the metadata service, ``fe80::/10``), multicast and broadcast
   addresses, and the addresses of the server's own interfaces are refused;
4. anything else is allowed: private ranges (``10/8``, ``172.16/12``, ``192.168/16``,
   ``fc00::/7``: cameras live there) and public addresses.

TLS schemes (https, rtsps) keep the host name in the URL, since FFmpeg's TLS takes the name for
SNI from the URL; the check still runs on every address the name has now (a name that changes
between the check and FFmpeg's own lookup is the remaining gap, see docs/security-sources.md).
HTTP redirects are never followed (``max_redirects=0``), FFmpeg's ``http_proxy`` environment
variable is ignored, and RTSP runs over TCP unless UDP sources are allowed.

A source never makes the server listen: listen options anywhere in the URL (query, fragment,
``-listen``, ``rtsp_flags=listen``, srt ``mode=listener``) are refused, and sources that must bind
a local UDP port to receive (``udp://``, RTSP over UDP) need ``--allow-udp-sources``.
"""

from __future__ import annotations

import array
import fcntl
import ipaddress
import re
import socket
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

from frameserve.errors import ConfigError, InvalidInput

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int | None], list[str]]

TLS_SCHEMES = frozenset({"https", "rtsps", "rtmps", "tls"})
UDP_SCHEMES = frozenset({"udp", "rtp", "srtp"})
# FFmpeg URL and protocol options that make it wait for a connection on this machine: tcp and
# http ``listen``, rtsp ``rtsp_flags=listen``, srt ``mode=listener|rendezvous``.
_LISTEN_KEYS = frozenset({"listen", "listen_timeout", "listen_port"})
_LISTEN_MODES = frozenset({"listener", "server", "rendezvous"})
_TOKEN_SPLIT = re.compile(r"[?&#;]")
_SIOCGIFCONF = 0x8912
_IFREQ_BYTES = 40  # struct ifreq on 64-bit Linux: 16 bytes of name, 24 of union


@dataclass(frozen=True)
class Destination:
    """A checked network source: what FFmpeg opens and the options that keep it there."""

    url: str  # the source URL with its host replaced by the checked address (not for TLS)
    address: str  # the checked address FFmpeg connects to
    options: dict[str, str] = field(default_factory=dict)  # FFmpeg protocol options


@dataclass(frozen=True)
class SourcePolicy:
    """The destination policy (see the module docstring); built from the CLI flags."""

    allow: tuple[Network, ...] = ()
    deny: tuple[Network, ...] = ()
    allow_udp: bool = False

    @classmethod
    def from_flags(
        cls, allow: Iterable[str] = (), deny: Iterable[str] = (), allow_udp: bool = False
    ) -> SourcePolicy:
        """The policy of ``--allow-network``, ``--deny-network`` and ``--allow-udp-sources``;
        ``ConfigError`` names a CIDR that is not one."""
        return cls(_networks(allow, "--allow-network"), _networks(deny, "--deny-network"),
                   bool(allow_udp))  # fmt: skip

    def refusal(self, address: Address, own: frozenset[Address]) -> str | None:
        """The rule that refuses ``address``, or None when it is allowed."""
        address = _unmapped(address)
        for net in self.deny:
            if address.version == net.version and address in net:
                return f"--deny-network {net}"
        for net in self.allow:
            if address.version == net.version and address in net:
                return None
        return _builtin_refusal(address, own)

    def check(
        self, url: str, resolve: Resolver | None = None, own: frozenset[Address] | None = None
    ) -> Destination:
        """Resolve and check a network source URL; ``InvalidInput`` names the rule and the
        address (never the URL's password). ``resolve`` and ``own``: for tests."""
        refuse_listening(url, self.allow_udp)
        parts = urlsplit(url)
        scheme, shown = parts.scheme.lower(), redact(url)
        try:
            host, port = parts.hostname, parts.port
        except ValueError as err:
            raise InvalidInput(f"source: expected host[:port] in {shown!r}: {err}") from None
        if not host or parts.netloc.count("@") > 1 or "\\" in parts.netloc:
            raise InvalidInput(f"source: expected {scheme}://host[:port]/..., got {shown!r}")
        addresses = (resolve or resolve_host)(host, port)
        own = own_addresses() if own is None else own
        for text in addresses:
            address = ipaddress.ip_address(text.split("%", 1)[0])
            rule = self.refusal(address, own)
            if rule is not None:
                raise InvalidInput(
                    f"source: the host {host!r} of {shown!r} resolves to {address}, which the "
                    f"source policy refuses ({rule}); see --allow-network"
                )
        chosen = addresses[0]
        options = self._options(scheme, host, port)
        if scheme in TLS_SCHEMES:  # SNI and the certificate need the name (see module doc)
            return Destination(url, chosen, options)
        return Destination(_with_host(parts, chosen), chosen, options)

    def _options(self, scheme: str, host: str, port: int | None) -> dict[str, str]:
        options: dict[str, str] = {}
        if scheme in ("http", "https"):
            options["max_redirects"] = "0"  # a redirect would leave the checked address
            options["http_proxy"] = ""  # not the http_proxy environment variable's proxy
            if scheme == "http":
                name = f"[{host}]" if ":" in host else host
                options["headers"] = f"Host: {name}{f':{port}' if port else ''}\r\n"
        if scheme in ("rtsp", "rtsps") and not self.allow_udp:
            options["rtsp_transport"] = "tcp"  # RTP over UDP binds local ports to receive
        return options


def refuse_listening(url: str, allow_udp: bool) -> None:
    """``InvalidInput`` when ``url`` would make FFmpeg listen or bind to receive: a listen option
    anywhere after the scheme (FFmpeg reads ``?`` options itself, also after a ``#``), or a UDP
    scheme without ``--allow-udp-sources``."""
    scheme, _, rest = url.partition(":")
    shown = redact(url)
    if scheme.lower() in UDP_SCHEMES and not allow_udp:
        raise InvalidInput(
            f"source: {scheme} sources bind a local UDP port to receive; the server allows "
            f"them only with --allow-udp-sources, got {shown!r}"
        )
    for token in _TOKEN_SPLIT.split(unquote(rest))[1:]:
        key, _, value = token.partition("=")
        key, value = key.strip().lstrip("-").lower(), value.strip().lower()
        listening = (
            key in _LISTEN_KEYS
            or (key == "mode" and value in _LISTEN_MODES)
            or (key == "rtsp_flags" and "listen" in value)
        )
        if listening:
            raise InvalidInput(
                f"source: the server connects to sources, it does not listen for them; "
                f"remove the URL option {token!r} from {shown!r}"
            )


def resolve_host(host: str, port: int | None) -> list[str]:
    """Every address ``host`` resolves to (the C library's resolver, as FFmpeg's);
    ``InvalidInput`` when it resolves to none."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as err:
        raise InvalidInput(f"source: cannot resolve the host {host!r}: {err}") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise InvalidInput(f"source: the host {host!r} resolves to no address")
    return addresses


def own_addresses() -> frozenset[Address]:
    """The addresses of this machine's interfaces: IPv4 from the kernel's interface list
    (``SIOCGIFCONF``), IPv6 from ``/proc/net/if_inet6``; empty where neither can be read (the
    loopback and link-local rules still apply)."""
    found: set[Address] = set()
    try:
        found.update(_ipv4_interfaces())
    except OSError:
        pass
    try:
        for line in Path("/proc/net/if_inet6").read_text().splitlines():
            raw = line.split()[0]
            found.add(ipaddress.IPv6Address(int(raw, 16)))
    except (OSError, ValueError, IndexError):
        pass
    return frozenset(found)


def _ipv4_interfaces() -> list[ipaddress.IPv4Address]:
    """IPv4 addresses of the interfaces that are up (``SIOCGIFCONF`` on an unbound socket)."""
    buffer = array.array("B", bytes(_IFREQ_BYTES * 128))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack("iL", len(buffer), buffer.buffer_info()[0])
        length = struct.unpack("iL", fcntl.ioctl(s.fileno(), _SIOCGIFCONF, request))[0]
    data = buffer.tobytes()[:length]
    return [ipaddress.IPv4Address(data[i + 20 : i + 24]) for i in range(0, length, _IFREQ_BYTES)]


def _builtin_refusal(address: Address, own: frozenset[Address]) -> str | None:
    if address.is_unspecified or address in ipaddress.ip_network("0.0.0.0/8"):
        return "unspecified address"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local (cloud metadata)"
    if address.is_multicast:
        return "multicast"
    if address == ipaddress.IPv4Address("255.255.255.255"):
        return "broadcast"
    if address in own:
        return "the server's own address"
    return None


def _unmapped(address: Address) -> Address:
    """``::ffff:127.0.0.1`` is 127.0.0.1 to the kernel: check it as such."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _networks(values: Iterable[str], flag: str) -> tuple[Network, ...]:
    nets = []
    for value in values:
        try:
            nets.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError as err:
            raise ConfigError(f"{flag}: expected a CIDR such as 10.0.0.0/8, got {value!r} "
                              f"({err})") from None  # fmt: skip
    return tuple(nets)


def _with_host(parts: SplitResult, address: str) -> str:
    """The URL with its host replaced by ``address`` (user info and port kept)."""
    userinfo = parts.netloc.rpartition("@")[0]
    host = f"[{address}]" if ":" in address else address
    port = f":{parts.port}" if parts.port is not None else ""
    netloc = f"{userinfo}@{host}{port}" if userinfo else f"{host}{port}"
    return urlunsplit(parts._replace(netloc=netloc))


def redact(url: str) -> str:
    """``url`` with the password of its user info replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
