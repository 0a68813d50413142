"""``frameserve serve``: the server's flags; the work is in ``frameserve.api.app``."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from frameserve.cli.args import (
    ServeHelpFormatter,
    add_model_cache,
    apply_environment,
    fraction,
    model_cache_dir,
    non_negative_float,
    non_negative_int,
    port,
    positive_float,
    positive_int,
)
from frameserve.cli.serve_limits import add_limits, request_limits, video_limits
from frameserve.cli.serve_preview import add_preview, preview_settings

if TYPE_CHECKING:
    from frameserve.api.auth import AuthSettings
    from frameserve.api.tls import TlsSettings


def add_serve(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "serve",
        help="serve a model repository over HTTP and gRPC (KServe v2)",
        description="Serve a model repository over HTTP and gRPC (KServe v2 with Triton's "
        "extensions), with video jobs and live streams. Every flag can also be set with the "
        "environment variable named in its help (lists comma-separated; switches 1/0, "
        "true/false); the command line wins.",
        formatter_class=ServeHelpFormatter,
    )
    p.add_argument("--repository", type=Path, default=Path("models"), metavar="DIR",
                   help="the model repository folder (model.yaml or Triton config.pbtxt per "
                        "model)")  # fmt: skip
    p.add_argument("--host", default="127.0.0.1", metavar="ADDRESS",
                   help="address the HTTP, gRPC and metrics listeners bind (0.0.0.0: every "
                        "interface; put TLS and keys in front before exposing it)")  # fmt: skip
    p.add_argument(
        "--http-port", type=port, default=8000, metavar="PORT", help="KServe v2 HTTP port"
    )
    p.add_argument(
        "--grpc-port", type=port, default=8001, metavar="PORT", help="KServe v2 gRPC port"
    )
    p.add_argument("--metrics-port", type=port, default=None, metavar="PORT",
                   help="also serve /metrics on this port, as Triton's 8002 (default: /metrics "
                        "on the HTTP port only)")  # fmt: skip
    p.add_argument("--model-control-mode", choices=["none", "poll", "explicit"], default="none",
                   help="none: load every model at start; poll: also reload changed folders; "
                        "explicit: load and unload only through the repository API")  # fmt: skip
    p.add_argument("--poll-interval", type=positive_float, default=15.0, metavar="SECONDS",
                   help="poll mode: how often the repository is checked for changes")  # fmt: skip
    p.add_argument("--load-model", action="append", default=[], metavar="NAME",
                   help="explicit mode: load this model at start ('*' for all); "
                        "repeatable")  # fmt: skip
    p.add_argument("--strict-readiness", action="store_true",
                   help="stay unready while any model failed to load")  # fmt: skip
    p.add_argument("--drain-delay", type=non_negative_float, default=0.0, metavar="SECONDS",
                   help="on SIGTERM, turn readiness false and keep serving this long before "
                        "draining, so a load balancer takes the replica out first")  # fmt: skip
    p.add_argument("--exit-timeout", type=positive_float, default=30.0, metavar="SECONDS",
                   help="how long the drain waits for in-flight requests")  # fmt: skip
    _add_video(p)
    _add_access(p)
    _add_sources(p)
    add_preview(p)
    add_limits(p)
    add_model_cache(p)
    p.add_argument("--log-format", choices=["auto", "json", "text"], default="auto",
                   help="auto: text on a terminal, JSON lines otherwise")  # fmt: skip
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info",
                   help="the least severe log level written")  # fmt: skip
    _add_telemetry(p)
    _add_tls_and_browsers(p)
    _add_errors_and_shm(p)
    _add_ray(p)
    apply_environment(p, dict(os.environ))


def _add_video(p: argparse.ArgumentParser) -> None:
    v = p.add_argument_group("video jobs and live streams")
    v.add_argument("--media-root", type=Path, default=Path("media"), metavar="DIR",
                   help="the only folder jobs and file streams read")  # fmt: skip
    v.add_argument("--state-dir", type=Path, default=Path("state"), metavar="DIR",
                   help="job records (SQLite), checkpoints, results, uploads")  # fmt: skip
    v.add_argument("--max-upload-mb", type=positive_float, default=2048.0, metavar="MB",
                   help="largest uploaded video (413 above)")  # fmt: skip
    v.add_argument("--max-running-jobs", type=positive_int, default=1, metavar="N",
                   help="jobs that run at once; the others wait in the queue")  # fmt: skip
    v.add_argument("--max-queued-jobs", type=positive_int, default=32, metavar="N",
                   help="jobs waiting beyond this are refused with 429")  # fmt: skip
    v.add_argument("--checkpoint-interval", type=non_negative_float, default=5.0,
                   metavar="SECONDS",
                   help="checkpoint a job at a keyframe this often (0: each)")  # fmt: skip
    v.add_argument("--max-job-retries", type=non_negative_int, default=2, metavar="N",
                   help="a job whose decode worker process died (a crash in FFmpeg) runs again "
                        "from its checkpoint at most N times, then fails")  # fmt: skip
    v.add_argument("--max-streams", type=positive_int, default=16, metavar="N",
                   help="live streams attached at once (429 above)")  # fmt: skip


def _add_access(p: argparse.ArgumentParser) -> None:
    """API keys with owners and Triton's restricted API groups (docs/security-keys.md)."""
    a = p.add_argument_group("access")
    a.add_argument("--api-key-file", type=Path, default=None, metavar="PATH",
                   help="require 'Authorization: Bearer SECRET' (gRPC metadata authorization) "
                        "on every route but the health probes; one key a line, NAME:SECRET or "
                        "NAME:SECRET:admin; SIGHUP reloads it (default: no keys, anyone who "
                        "reaches the port may call everything)")  # fmt: skip
    a.add_argument("--metrics-open", action="store_true",
                   help="serve /metrics without a key (on the HTTP and metrics "
                        "ports)")  # fmt: skip
    a.add_argument("--http-restricted-api", action="append", default=[],
                   metavar="CATEGORIES:HEADER=VALUE",
                   help="as Triton: these comma-separated categories (health, metadata, "
                        "inference, shared-memory, model-config, model-repository, statistics, "
                        "trace, logging, jobs, streams, metrics) also need HEADER: VALUE; "
                        "repeatable")  # fmt: skip
    a.add_argument("--grpc-restricted-protocol", action="append", default=[],
                   metavar="CATEGORIES:KEY=VALUE",
                   help="as Triton: these categories also need the gRPC metadata "
                        "triton-grpc-protocol-KEY: VALUE; repeatable")  # fmt: skip


def _auth_settings(args: argparse.Namespace) -> AuthSettings:
    """The access flags as settings; ConfigError names the flag that is wrong."""
    from frameserve.api.auth import AuthSettings, parse_restricted

    return AuthSettings(
        api_key_file=args.api_key_file,
        metrics_open=args.metrics_open,
        http_restricted=tuple(
            parse_restricted(v, "--http-restricted-api") for v in args.http_restricted_api
        ),
        grpc_restricted=tuple(
            parse_restricted(v, "--grpc-restricted-protocol") for v in args.grpc_restricted_protocol
        ),
    )


def _add_sources(p: argparse.ArgumentParser) -> None:
    """Where live-stream sources may connect (``video.live.policy``, docs/security-sources.md)."""
    s = p.add_argument_group("stream sources")
    s.add_argument("--allow-network", action="append", default=[], metavar="CIDR", type=_cidr,
                   help="let network stream sources connect to addresses in this range, even "
                        "loopback, link-local or the server's own (e.g. 127.0.0.0/8 for local "
                        "testing); repeatable; --deny-network wins over it (default: none: "
                        "loopback, link-local and own addresses refused, the rest "
                        "allowed)")  # fmt: skip
    s.add_argument("--deny-network", action="append", default=[], metavar="CIDR", type=_cidr,
                   help="never let network stream sources connect to addresses in this range "
                        "(wins over --allow-network); repeatable")  # fmt: skip
    s.add_argument("--allow-udp-sources", action="store_true",
                   help="allow sources that bind a local UDP port to receive (udp://, RTSP "
                        "over UDP); without it RTSP runs over TCP")  # fmt: skip


def _cidr(text: str) -> str:
    """An address range (``10.0.0.0/8``, ``fd00::/8``; a bare address is one host)."""
    import ipaddress

    try:
        ipaddress.ip_network(text.strip(), strict=False)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected a CIDR such as 10.0.0.0/8 ({err})") from None
    return text.strip()


def _add_telemetry(p: argparse.ArgumentParser) -> None:
    """OpenTelemetry tracing (the ``tracing`` extra): off unless an endpoint is given."""
    t = p.add_argument_group("telemetry")
    t.add_argument("--trace-otlp-endpoint", default=None, metavar="URL",
                   help="trace requests to this OTLP/HTTP collector (e.g. http://collector:4318; "
                        "/v1/traces is added to a URL without a path); needs the tracing extra; "
                        "OTEL_EXPORTER_OTLP_* and OTEL_SERVICE_NAME apply (default: tracing "
                        "off)")  # fmt: skip
    t.add_argument("--trace-sample-rate", type=fraction, default=1.0, metavar="FRACTION",
                   help="share of requests arriving without a traceparent that are traced; "
                        "a caller's traceparent decides for its own (default: 1.0)")  # fmt: skip


def _add_tls_and_browsers(p: argparse.ArgumentParser) -> None:
    """TLS on every listener, and what a web page in a browser may make the server do."""
    from frameserve.api.http.origins import parse_host, parse_origin

    t = p.add_argument_group("TLS and browsers")
    t.add_argument("--tls-cert", type=Path, default=None, metavar="FILE",
                   help="PEM certificate (chain) served on the HTTP, gRPC and metrics ports; "
                        "with --tls-key, every listener speaks TLS 1.2+ only (default: plain "
                        "text)")  # fmt: skip
    t.add_argument("--tls-key", type=Path, default=None, metavar="FILE",
                   help="the unencrypted PEM private key of --tls-cert")  # fmt: skip
    t.add_argument("--tls-client-ca", type=Path, default=None, metavar="FILE",
                   help="mutual TLS: clients must present a certificate this PEM CA signed, on "
                        "every port")  # fmt: skip
    t.add_argument("--allowed-origin", type=_argtype(parse_origin), action="append", default=[],
                   metavar="ORIGIN",
                   help="a browser origin (https://app.example:8443) whose pages may send "
                        "state-changing requests; others get 403; repeatable (default: only "
                        "the server's own origin)")  # fmt: skip
    t.add_argument("--allowed-host", type=_argtype(parse_host), action="append", default=[],
                   metavar="HOST",
                   help="answer only requests whose Host header names this host (with or "
                        "without :port), others get 421: stops DNS rebinding; recommended "
                        "whenever a browser can reach the server; repeatable (default: any "
                        "host)")  # fmt: skip


def _argtype(parse: Callable[[str], str]) -> Callable[[str], str]:
    """An argparse type from a parser raising ValueError with its own message."""

    def convert(text: str) -> str:
        try:
            return parse(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    convert.__name__ = parse.__name__
    return convert


def _tls_settings(args: argparse.Namespace) -> TlsSettings | None:
    """The TLS flags as settings; ConfigError when only part of them is given."""
    from frameserve.api.tls import TlsSettings
    from frameserve.errors import ConfigError

    if args.tls_cert is None and args.tls_key is None:
        if args.tls_client_ca is not None:
            raise ConfigError("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    if args.tls_cert is None or args.tls_key is None:
        raise ConfigError("--tls-cert and --tls-key go together: give both or neither")
    return TlsSettings(args.tls_cert, args.tls_key, args.tls_client_ca)


def _add_errors_and_shm(p: argparse.ArgumentParser) -> None:
    """Shared-memory registration limits and the access log."""
    e = p.add_argument_group("errors and shared memory")
    e.add_argument("--shm-key-prefix", default="", metavar="PREFIX",
                   help="only shared-memory objects whose key (without its leading '/') starts "
                        "with PREFIX may be registered (default: any key)")  # fmt: skip
    e.add_argument("--max-shm-regions", type=positive_int, default=1024, metavar="N",
                   help="shared-memory regions registered at once (400 above)")  # fmt: skip
    e.add_argument("--access-log", action="store_true",
                   help="log one line per HTTP request and gRPC call: method, path or RPC, "
                        "status, duration, request id, peer")  # fmt: skip


def _add_ray(p: argparse.ArgumentParser) -> None:
    """Issue 17: jobs across a Ray cluster (docs/scale-out.md)."""
    r = p.add_argument_group("Ray scale-out")
    r.add_argument("--ray", default=None, metavar="auto|HOST:PORT",
                   help="run video jobs and live streams across this Ray cluster, this "
                        "server coordinating "
                        "(needs frameserve[ray]; every node needs the repository at the same "
                        "path); an unreachable address fails start-up")  # fmt: skip
    r.add_argument("--ray-auth-token-file", type=Path, default=None, metavar="FILE",
                   help="the cluster's auth token (Ray 2.60 turns token auth on; default: "
                        "Ray's own, ~/.ray/auth_token or RAY_AUTH_TOKEN)")  # fmt: skip
    r.add_argument("--ray-chunk-seconds", type=positive_float, default=10.0, metavar="SECONDS",
                   help="the least video per chunk of a job (cut at keyframes)")  # fmt: skip


def _ray_settings(args: argparse.Namespace) -> Any:
    """``--ray``: the settings, with the cluster joined now (a wrong address fails start-up)."""
    if args.ray is None:
        return None
    from frameserve.scale.cluster import RaySettings, connect

    settings = RaySettings(args.ray, args.ray_auth_token_file, chunk_seconds=args.ray_chunk_seconds)
    connect(settings)
    return settings


def run_serve(args: argparse.Namespace) -> int:
    from frameserve.api.app import FrontEndSettings, ListenSettings, VideoServiceSettings, run
    from frameserve.api.http.origins import BrowserPolicy
    from frameserve.api.shm import ShmSettings
    from frameserve.cli import logs
    from frameserve.errors import ConfigError, NotSupported, Unavailable
    from frameserve.serving.server import ServerSettings
    from frameserve.serving.tracing import TracingSettings
    from frameserve.video.live.policy import SourcePolicy

    logs.configure(args.log_level, args.log_format)
    if not args.repository.is_dir():
        print(f"frameserve serve: --repository {args.repository} is not a folder", file=sys.stderr)  # noqa: T201
        return 2
    settings = ServerSettings(
        repository=args.repository,
        model_control_mode=args.model_control_mode,
        poll_interval_s=args.poll_interval,
        load_models=tuple(args.load_model),
        strict_readiness=args.strict_readiness,
        exit_timeout_s=args.exit_timeout,
        drain_delay_s=args.drain_delay,
        model_cache_dir=model_cache_dir(args),
        limits=request_limits(args),
        tracing=TracingSettings(args.trace_otlp_endpoint, args.trace_sample_rate)
        if args.trace_otlp_endpoint
        else None,
    )
    video = VideoServiceSettings(
        media_root=args.media_root,
        state_dir=args.state_dir,
        max_upload_bytes=int(args.max_upload_mb * 2**20),
        max_running_jobs=args.max_running_jobs,
        max_queued_jobs=args.max_queued_jobs,
        checkpoint_interval_s=args.checkpoint_interval,
        max_job_retries=args.max_job_retries,
        max_streams=args.max_streams,
        # the CIDRs were checked while parsing (``_cidr``)
        source_policy=SourcePolicy.from_flags(
            args.allow_network, args.deny_network, args.allow_udp_sources
        ),
        limits=video_limits(args),
        preview=preview_settings(args),
    )
    try:
        video = dataclasses.replace(video, ray=_ray_settings(args))
        listen = ListenSettings(
            args.host, args.http_port, args.grpc_port, args.metrics_port, _tls_settings(args),
            BrowserPolicy.from_flags(args.allowed_origin, args.allowed_host),
        )  # fmt: skip
        front = FrontEndSettings(
            ShmSettings(
                args.shm_key_prefix, args.max_shm_regions, int(args.max_request_mb * 2**20)
            ),
            args.access_log,
        )
        return run(settings, listen, video, _auth_settings(args), front)
    except (ConfigError, Unavailable, NotSupported) as err:  # no tracing extra; a bad endpoint
        # URL, key file or TLS file; --ray: an unreachable cluster, no ray extra
        print(f"frameserve serve: {err.message}", file=sys.stderr)  # noqa: T201
        return 2
