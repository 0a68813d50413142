"""``frameserve serve``: the server's flags; the work is in ``frameserve.api.app``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

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
    p.add_argument("--max-request-mb", type=positive_float, default=256.0, metavar="MB",
                   help="largest request body / gRPC message (413 above)")  # fmt: skip
    p.add_argument("--max-elements", type=positive_int, default=64 * 2**20, metavar="N",
                   help="largest element count of one input tensor")  # fmt: skip
    p.add_argument("--max-image-pixels", type=positive_int, default=50_000_000, metavar="N",
                   help="largest decoded image an image request may carry (413 above)")  # fmt: skip
    _add_video(p)
    add_model_cache(p)
    p.add_argument("--log-format", choices=["auto", "json", "text"], default="auto",
                   help="auto: text on a terminal, JSON lines otherwise")  # fmt: skip
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info",
                   help="the least severe log level written")  # fmt: skip
    _add_telemetry(p)
    _add_errors_and_shm(p)
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


def run_serve(args: argparse.Namespace) -> int:
    from frameserve.api.app import FrontEndSettings, ListenSettings, VideoServiceSettings, run
    from frameserve.api.shm import ShmSettings
    from frameserve.cli import logs
    from frameserve.errors import ConfigError
    from frameserve.serving.server import RequestLimits, ServerSettings
    from frameserve.serving.tracing import TracingSettings

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
        limits=RequestLimits(
            int(args.max_request_mb * 2**20), args.max_elements, args.max_image_pixels
        ),
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
    )
    listen = ListenSettings(args.host, args.http_port, args.grpc_port, args.metrics_port)
    try:
        front = FrontEndSettings(
            ShmSettings(
                args.shm_key_prefix, args.max_shm_regions, int(args.max_request_mb * 2**20)
            ),
            args.access_log,
        )
        return run(settings, listen, video, front)
    except ConfigError as err:  # tracing asked for without the extra, or a bad endpoint URL
        print(f"frameserve serve: {err.message}", file=sys.stderr)  # noqa: T201
        return 2
