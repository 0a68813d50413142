"""The cost of the security options: frameserve plain, with TLS and with mutual TLS, side by side.

    .venv/bin/python benchmarks/serving/security.py [--repeats 5] [--max-minutes 15]

The serving benchmark's ``matmul_relu`` (per-request overhead-bound, so a per-request cost
shows the most) is served once per variant per repeat, fresh each time and in alternating
order; perf_analyzer loads each at one concurrency over gRPC and HTTP. perf_analyzer keeps its
connections open, so the TLS rows measure encrypting and decrypting every request and answer
(plus one handshake per connection), which is what a long-lived client pays. Certificates are
made with the ``openssl`` command line in a temporary folder. Writes ``results/security.md``
(medians over repeats) and ``results/security.json``. Nothing is asserted: the machine is
shared, so the table says how noisy it was.

A variant is a row of ``VARIANTS``: the ``serve`` flags it adds, the perf_analyzer flags it
needs per protocol, and whether the HTTP port speaks TLS. ``{pki}`` in any argument is the
certificates' folder, ``{keys}`` a file ``prepare`` may write beside them (for API keys).
perf_analyzer's ``-H NAME:VALUE`` adds an HTTP header; it has no gRPC metadata flag, so a
header-based variant can only be measured over HTTP (give it no ``grpc`` entry: that protocol
is then skipped for it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import ssl
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/common.py

from loadgen import SideBySide, measure_side_by_side, median
from run import DEFAULT_PERF_ANALYZER, frameserve_server_command

from models import MODELS, ServingSetup, build_repository
from servers import Ports, ServerProcess

HERE = Path(__file__).resolve().parent
MODEL = next(m for m in MODELS if m.name == "matmul_relu")


@dataclass(frozen=True)
class Variant:
    """One way of serving: extra ``serve`` flags and the perf_analyzer flags per protocol
    (a protocol without an entry is not measured for this variant)."""

    serve: tuple[str, ...]
    perf: dict[str, tuple[str, ...]]
    https: bool = False  # the HTTP port speaks TLS
    client_cert: bool = False  # readiness probes present the client certificate


_TLS = ("--tls-cert", "{pki}/server.pem", "--tls-key", "{pki}/server.key")
_GRPC_TLS = ("--ssl-grpc-use-ssl", "true", "--ssl-grpc-root-certifications-file", "{pki}/ca.pem")
_GRPC_CLIENT = ("--ssl-grpc-private-key-file", "{pki}/client.key",
                "--ssl-grpc-certificate-chain-file", "{pki}/client.pem")  # fmt: skip
_HTTP_TLS = ("--ssl-https-ca-certificates-file", "{pki}/ca.pem")
_HTTP_CLIENT = ("--ssl-https-client-certificate-file", "{pki}/client.pem",
                "--ssl-https-private-key-file", "{pki}/client.key")  # fmt: skip
BENCH_KEY = "bench-0123456789abcdef"  # written to {keys} by make_pki
VARIANTS: dict[str, Variant] = {
    "plain": Variant((), {"grpc": (), "http": ()}),
    # perf_analyzer sends -H headers over HTTP only (no gRPC metadata flag): HTTP is measured
    "keys": Variant(
        ("--api-key-file", "{keys}"), {"http": ("-H", f"Authorization:Bearer {BENCH_KEY}")}
    ),
    "tls": Variant(_TLS, {"grpc": _GRPC_TLS, "http": _HTTP_TLS}, https=True),
    "mtls": Variant(
        (*_TLS, "--tls-client-ca", "{pki}/ca.pem"),
        {"grpc": _GRPC_TLS + _GRPC_CLIENT, "http": _HTTP_TLS + _HTTP_CLIENT},
        https=True,
        client_cert=True,
    ),
}
BASELINE = "plain"


def make_pki(folder: Path) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, made by openssl."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise SystemExit("the openssl command line is needed to make the test certificates")
    folder.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"]

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=folder, check=True, capture_output=True)

    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=bench CA")
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1"), ("client", "")):
        subject = f"/CN={name}"
        run("req", *ec[:-2], "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject)
        (folder / f"{name}.ext").write_text((ext or "extendedKeyUsage=clientAuth") + "\n")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2",
            "-extfile", f"{name}.ext")  # fmt: skip
    (folder / "keys.txt").write_text(f"bench:{BENCH_KEY}\n")
    return folder


def _fill(args: tuple[str, ...], pki: Path) -> list[str]:
    return [a.format(pki=pki, keys=pki / "keys.txt") for a in args]


def _server(repo: Path, name: str, pki: Path, logs: Path) -> ServerProcess:
    variant = VARIANTS[name]
    ports = Ports.pick()
    cmd = frameserve_server_command(repo, ports) + _fill(variant.serve, pki)
    context = None
    if variant.https:
        context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
        if variant.client_cert:
            context.load_cert_chain(pki / "client.pem", pki / "client.key")
    keyed = "--api-key-file" in variant.serve
    headers = {"Authorization": f"Bearer {BENCH_KEY}"} if keyed else None
    return ServerProcess(
        f"frameserve-{name}", cmd, ports, MODEL.name, logs / f"{name}.log",
        tls_context=context, headers=headers,
    )  # fmt: skip


def _measure(args: argparse.Namespace, repo: Path, pki: Path, logs: Path) -> list[dict]:
    def perf_args(name: str, protocol: str) -> list[str] | None:
        flags = VARIANTS[name].perf.get(protocol)
        return None if flags is None else _fill(flags, pki)

    settings = SideBySide(
        args.perf_analyzer, logs, args.repeats, args.concurrency, args.max_minutes
    )
    return measure_side_by_side(
        args.variants, lambda name: _server(repo, name, pki, logs), perf_args, args.protocols,
        settings,
    )  # fmt: skip


def _report(records: list[dict], args: argparse.Namespace) -> str:
    lines = [
        "# Security cost: frameserve plain, with TLS and with mutual TLS",
        "",
        f"Run {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC by `benchmarks/serving/security.py`: "
        f"`{MODEL.name}` ({MODEL.description}), perf_analyzer at concurrency "
        f"{args.concurrency} (synchronous clients on kept-alive connections), medians over "
        f"{args.repeats} repeats (each a fresh server, order alternating). *tls*: `--tls-cert` "
        "and `--tls-key` (an ECDSA P-256 certificate made by openssl); *mtls*: also "
        "`--tls-client-ca`, perf_analyzer presenting a client certificate. The machine has 2 "
        "cores shared with other work: `other cores` is what other processes used just before "
        "each point.",
        "",
        "| protocol | variant | infer/s | p50 ms | p99 ms | server CPU s | client CPU s "
        "| other cores | n |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    ratios = []
    for protocol in args.protocols:
        med: dict[str, tuple[float | None, float | None]] = {}
        for name in args.variants:
            rows = [
                r for r in records
                if r["protocol"] == protocol and r["variant"] == name and r["ok"]
            ]  # fmt: skip
            tp, p50, p99, cpu, client, other = (
                median([r[k] for r in rows])
                for k in ("throughput", "p50_ms", "p99_ms", "server_cpu_s", "client_cpu_s",
                          "other_cores")
            )  # fmt: skip
            med[name] = (tp, p99)
            cells = [_f(tp), _f(p50, 2), _f(p99, 2), _f(cpu, 2), _f(client, 2), _f(other, 2)]
            lines.append(f"| {protocol} | {name} | " + " | ".join(cells) + f" | {len(rows)} |")
        tp_base, p99_base = med.get(BASELINE, (None, None))
        for name in args.variants:
            tp, p99 = med[name]
            if name != BASELINE and tp and tp_base and p99 and p99_base:
                ratios.append(
                    f"- {protocol}: throughput with {name} = {tp / tp_base:.2f} x {BASELINE}; "
                    f"p99 = {p99 / p99_base:.2f} x {BASELINE}"
                )
    return "\n".join([*lines, "", *ratios]) + "\n"


def _f(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--protocols", nargs="+", default=["grpc", "http"])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--max-minutes", type=float, default=15.0, help="skip what is left after")
    p.add_argument("--perf-analyzer", type=Path, default=DEFAULT_PERF_ANALYZER)
    p.add_argument("--out", type=Path, default=HERE / "results")
    args = p.parse_args()
    if not args.perf_analyzer.is_file():
        print(f"perf_analyzer not found at {args.perf_analyzer}: run `make perf-analyzer`")  # noqa: T201
        return 2
    with tempfile.TemporaryDirectory(prefix="fs-security-") as tmp:
        repo = Path(tmp) / "repo"
        build_repository(repo, MODEL, ServingSetup())
        pki = make_pki(Path(tmp) / "pki")
        records = _measure(args, repo, pki, Path(tmp) / "logs")
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "security.json").write_text(json.dumps(records, indent=1) + "\n")
        (args.out / "security.md").write_text(_report(records, args))
    print((args.out / "security.md").read_text())  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
