"""TLS (and mutual TLS) for the HTTP, metrics and gRPC listeners.

``load_tls`` reads and checks the certificate, key and client CA once, at start-up, so a wrong
file ends start-up with a message naming the flag and the file instead of a traceback from the
first handshake. The HTTP listeners get one ``ssl.SSLContext`` (TLS 1.2 at least); gRPC gets
the same PEM bytes as ``grpc.ssl_server_credentials`` (gRPC's own TLS stack, which offers TLS
1.2 and 1.3 only). With a client CA both require and verify a client certificate.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc

from frameserve.errors import ConfigError


@dataclass(frozen=True)
class TlsSettings:
    """Where the listeners' certificate, key and (for mTLS) client CA are, as given."""

    cert: Path
    key: Path
    client_ca: Path | None = None


@dataclass(frozen=True)
class ServerTls:
    """Checked TLS material: the HTTP context and the PEM bytes gRPC needs."""

    settings: TlsSettings
    context: ssl.SSLContext
    cert_pem: bytes
    key_pem: bytes
    client_ca_pem: bytes | None

    @property
    def mutual(self) -> bool:
        return self.client_ca_pem is not None

    def grpc_credentials(self) -> grpc.ServerCredentials:
        """Server credentials; with a client CA, a client certificate it signed is required."""
        return grpc.ssl_server_credentials(
            [(self.key_pem, self.cert_pem)],
            root_certificates=self.client_ca_pem,
            require_client_auth=self.mutual,
        )


def _read(flag: str, path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"{flag} {path}: cannot read the file ({err.strerror})") from None
    if b"-----BEGIN " not in data:
        raise ConfigError(f"{flag} {path}: expected a PEM file (-----BEGIN ...), got none")
    return data


def load_tls(settings: TlsSettings) -> ServerTls:
    """Read and check every file; ConfigError naming the flag and file when one is wrong (a
    missing or unreadable file, not PEM, a key that does not match the certificate)."""
    cert_pem = _read("--tls-cert", settings.cert)
    key_pem = _read("--tls-key", settings.key)
    ca_pem = None if settings.client_ca is None else _read("--tls-client-ca", settings.client_ca)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])  # what uvicorn's httptools protocol speaks
    try:  # parses the certificate alone, so its own errors are not blamed on the key
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(settings.cert)
    except ssl.SSLError as err:
        raise ConfigError(
            f"--tls-cert {settings.cert}: not a usable PEM certificate ({_reason(err)})"
        ) from None
    try:
        # an empty password: an encrypted key fails here instead of prompting on the terminal
        context.load_cert_chain(settings.cert, settings.key, password=b"")
    except ssl.SSLError as err:
        problem = (
            "the key does not match the certificate"
            if err.reason == "KEY_VALUES_MISMATCH"
            else f"not a usable unencrypted PEM private key ({_reason(err)})"
        )
        raise ConfigError(
            f"--tls-key {settings.key}: {problem} (--tls-cert {settings.cert})"
        ) from None
    if settings.client_ca is not None:
        try:
            context.load_verify_locations(settings.client_ca)
        except ssl.SSLError as err:
            raise ConfigError(
                f"--tls-client-ca {settings.client_ca}: not a usable PEM CA certificate "
                f"({_reason(err)})"
            ) from None
        context.verify_mode = ssl.CERT_REQUIRED
    return ServerTls(settings, context, cert_pem, key_pem, ca_pem)


def _reason(err: ssl.SSLError) -> str:
    return str(err.reason or err.strerror or err)
