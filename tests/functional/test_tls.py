"""TLS and mutual TLS on the HTTP, gRPC and metrics ports, with real clients.

Certificates come from the ``openssl`` command line (a CA, a server certificate for
127.0.0.1, a client certificate, and a client certificate from a CA the server does not
trust); the clients are tritonclient (HTTP and gRPC), curl and Python's ``ssl``.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import gevent.ssl
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from geventhttpclient.response import HTTPConnectionClosed
from tritonclient.utils import InferenceServerException

from repos import ECHO, python_model
from servers import RunningServer, ServerLauncher, free_port

OPENSSL = shutil.which("openssl")
CURL = shutil.which("curl")
pytestmark = pytest.mark.skipif(OPENSSL is None, reason="needs the openssl command line")
_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass(frozen=True)
class Pki:
    folder: Path

    def __truediv__(self, name: str) -> Path:
        return self.folder / name

    def read(self, name: str) -> bytes:
        return (self.folder / name).read_bytes()


def _openssl(folder: Path, *args: str) -> None:
    subprocess.run([str(OPENSSL), *args], cwd=folder, check=True, capture_output=True)


def _ca(folder: Path, name: str) -> None:
    _openssl(folder, "req", "-x509", *_EC, "-keyout", f"{name}.key", "-out", f"{name}.pem",
             "-days", "2", "-subj", f"/CN={name}")  # fmt: skip


def _signed(folder: Path, name: str, ca: str, extensions: str) -> None:
    _openssl(folder, "req", *_EC, "-keyout", f"{name}.key", "-out", f"{name}.csr",
             "-subj", f"/CN={name}")  # fmt: skip
    (folder / f"{name}.ext").write_text(extensions)
    _openssl(folder, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem",
             "-CAkey", f"{ca}.key", "-CAcreateserial", "-out", f"{name}.pem", "-days", "2",
             "-extfile", f"{name}.ext")  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    _ca(folder, "ca")
    _ca(folder, "other-ca")
    _signed(folder, "server", "ca", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    _signed(folder, "client", "ca", "extendedKeyUsage=clientAuth\n")
    _signed(folder, "stranger", "other-ca", "extendedKeyUsage=clientAuth\n")
    return Pki(folder)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("tls") / "models"
    fp32 = {"datatype": "FP32", "dims": [-1]}
    config = {"max_batch_size": 8, "inputs": [{"name": "IN", **fp32}],
              "outputs": [{"name": "OUT", **fp32}], "warmup": 0}  # fmt: skip
    python_model(repo, "echo", ECHO, config)
    return repo


def _client_context(pki: Pki, cert: str | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    if cert is not None:
        context.load_cert_chain(pki / f"{cert}.pem", pki / f"{cert}.key")
    return context


def _https_status(url: str, context: ssl.SSLContext) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5, context=context) as r:
            return int(r.status)
    except urllib.error.HTTPError as err:
        return err.code


def _start(
    launcher: ServerLauncher, repo: Path, pki: Pki, *args: str, client: str | None = None
) -> tuple[RunningServer, int]:
    """A TLS server and its metrics port, once ready over HTTPS."""
    metrics_port = free_port()
    server = launcher.start(
        repo, "--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key"),
        "--metrics-port", str(metrics_port), *args, wait=False,
    )  # fmt: skip
    context = _client_context(pki, client)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"server exited with {server.proc.returncode}:\n{server.log()}")
        try:
            if _https_status(f"https://{server.http_url}/v2/health/ready", context) == 200:
                return server, metrics_port
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(server.log())


@pytest.fixture(scope="module")
def tls_server(
    repo: Path, pki: Pki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RunningServer, int]]:
    launcher = ServerLauncher(tmp_path_factory.mktemp("tls-server"))
    try:
        yield _start(launcher, repo, pki)
    finally:
        launcher.stop_all()


@pytest.fixture(scope="module")
def mtls_server(
    repo: Path, pki: Pki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RunningServer, int]]:
    launcher = ServerLauncher(tmp_path_factory.mktemp("mtls-server"))
    ca = ("--tls-client-ca", str(pki / "ca.pem"))
    try:
        yield _start(launcher, repo, pki, *ca, client="client")
    finally:
        launcher.stop_all()


def _http_infer(client: httpclient.InferenceServerClient) -> np.ndarray:
    data = np.arange(4, dtype=np.float32).reshape(1, 4)
    inp = httpclient.InferInput("IN", [1, 4], "FP32")
    inp.set_data_from_numpy(data, binary_data=True)
    out = client.infer("echo", [inp]).as_numpy("OUT")
    np.testing.assert_array_equal(out, data)
    return out


def _grpc_infer(client: grpcclient.InferenceServerClient) -> None:
    data = np.arange(4, dtype=np.float32).reshape(1, 4)
    inp = grpcclient.InferInput("IN", [1, 4], "FP32")
    inp.set_data_from_numpy(data)
    np.testing.assert_array_equal(client.infer("echo", [inp]).as_numpy("OUT"), data)


def _http_client(server: RunningServer, pki: Pki, cert: str | None = None):  # type: ignore[no-untyped-def]
    options = {"ca_certs": str(pki / "ca.pem")}
    if cert is not None:
        options |= {"certfile": str(pki / f"{cert}.pem"), "keyfile": str(pki / f"{cert}.key")}
    return httpclient.InferenceServerClient(
        server.http_url,
        ssl=True,
        ssl_options=options,
        ssl_context_factory=gevent.ssl.create_default_context,
    )


def _grpc_client(server: RunningServer, pki: Pki, cert: str | None = None):  # type: ignore[no-untyped-def]
    return grpcclient.InferenceServerClient(
        server.grpc_url,
        ssl=True,
        root_certificates=str(pki / "ca.pem"),
        private_key=None if cert is None else str(pki / f"{cert}.key"),
        certificate_chain=None if cert is None else str(pki / f"{cert}.pem"),
    )


def _curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CURL), "-sS", "--max-time", "10", *args], capture_output=True, text=True, check=False
    )


def test_tritonclient_infers_over_tls(tls_server, pki):
    server, _ = tls_server
    http = _http_client(server, pki)
    assert http.is_server_ready()
    _http_infer(http)
    http.close()
    with _grpc_client(server, pki) as grpc_client:
        assert grpc_client.is_server_ready()
        _grpc_infer(grpc_client)


@pytest.mark.skipif(CURL is None, reason="needs curl")
def test_curl_with_the_ca_and_metrics_port_over_tls(tls_server, pki):
    server, metrics_port = tls_server
    ca = ("--cacert", str(pki / "ca.pem"))
    ready = _curl(*ca, "-o", "/dev/null", "-w", "%{http_code}",
                  f"https://{server.http_url}/v2/health/ready")  # fmt: skip
    assert ready.stdout == "200", ready.stderr
    metrics = _curl(*ca, f"https://127.0.0.1:{metrics_port}/metrics")
    assert metrics.returncode == 0 and "# TYPE" in metrics.stdout, metrics.stderr
    untrusted = _curl(f"https://{server.http_url}/v2/health/ready")  # the system CAs only
    assert untrusted.returncode != 0


def test_plain_text_to_a_tls_port_fails(tls_server, pki):
    server, metrics_port = tls_server
    for port in (server.http_port, metrics_port):
        with pytest.raises((urllib.error.URLError, OSError)):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/live", timeout=5)
    plain = grpcclient.InferenceServerClient(server.grpc_url)
    with plain, pytest.raises(InferenceServerException):
        plain.is_server_live(client_timeout=5)


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
def test_tls_below_1_2_is_refused(tls_server, pki):
    server, _ = tls_server
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(pki / "ca.pem")
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let the client offer TLS 1.1 at all
    context.minimum_version = ssl.TLSVersion.TLSv1
    context.maximum_version = ssl.TLSVersion.TLSv1_1
    for port in (server.http_port, server.grpc_port):
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        with raw, pytest.raises((ssl.SSLError, OSError)):
            context.wrap_socket(raw, server_hostname="127.0.0.1").close()


def test_mtls_accepts_the_client_certificate(mtls_server, pki):
    server, _ = mtls_server
    http = _http_client(server, pki, "client")
    _http_infer(http)
    http.close()
    with _grpc_client(server, pki, "client") as grpc_client:
        _grpc_infer(grpc_client)


@pytest.mark.skipif(CURL is None, reason="needs curl")
def test_mtls_with_curl_on_the_http_and_metrics_ports(mtls_server, pki):
    server, metrics_port = mtls_server
    ca = ("--cacert", str(pki / "ca.pem"))
    mine = ("--cert", str(pki / "client.pem"), "--key", str(pki / "client.key"))
    stranger = ("--cert", str(pki / "stranger.pem"), "--key", str(pki / "stranger.key"))
    for url in (f"https://{server.http_url}/v2/health/ready",
                f"https://127.0.0.1:{metrics_port}/metrics"):  # fmt: skip
        ok = _curl(*ca, *mine, "-o", "/dev/null", "-w", "%{http_code}", url)
        assert ok.stdout == "200", ok.stderr
        assert _curl(*ca, url).returncode != 0  # no client certificate
        assert _curl(*ca, *stranger, url).returncode != 0  # signed by a CA the server ignores


def test_mtls_refuses_clients_without_a_certificate(mtls_server, pki):
    server, _ = mtls_server
    http = _http_client(server, pki)
    # the handshake fails (ssl.SSLError, an OSError) or the server closes the connection
    with pytest.raises((OSError, HTTPConnectionClosed, InferenceServerException)):
        http.is_server_live()
    http.close()
    for cert in (None, "stranger"):
        grpc_client = _grpc_client(server, pki, cert)
        with grpc_client, pytest.raises(InferenceServerException):
            grpc_client.is_server_live(client_timeout=5)


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (("missing.pem", "server.key", None), "--tls-cert {d}/missing.pem: cannot read"),
        (("server.key", "server.key", None), "--tls-cert {d}/server.key: not a usable PEM cert"),
        (("server.pem", "client.key", None), "--tls-key {d}/client.key: the key does not match"),
        (("server.pem", "server.ext", None), "--tls-key {d}/server.ext: expected a PEM file"),
        (("server.pem", "server.key", "server.csr"), "--tls-client-ca {d}/server.csr: not a"),
        (("server.pem", None, None), "--tls-cert and --tls-key go together"),
    ],
)
def test_bad_tls_files_stop_start_up_with_the_flag_and_file(pki, repo, tmp_path, files, expected):
    cert, key, ca = files
    args = ["--tls-cert", str(pki / cert)]
    args += [] if key is None else ["--tls-key", str(pki / key)]
    args += [] if ca is None else ["--tls-client-ca", str(pki / ca)]
    proc = subprocess.run(
        [sys.executable, "-m", "frameserve.cli.main", "serve", "--repository", str(repo),
         "--http-port", str(free_port()), "--grpc-port", str(free_port()), *args],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert expected.format(d=pki.folder) in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
