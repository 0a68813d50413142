"""``frameserve serve``: the server's flags; the work is in ``frameserve.api.app``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from frameserve.cli.args import (
    add_model_cache,
    model_cache_dir,
    non_negative_float,
    non_negative_int,
    port,
    positive_float,
    positive_int,
)


def add_serve(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("serve", help="serve a model repository over HTTP and gRPC (KServe v2)")
    p.add_argument("--repository", type=Path, default=Path("models"), help="default: ./models")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--http-port", type=port, default=8000)
    p.add_argument("--grpc-port", type=port, default=8001)
    p.add_argument("--model-control-mode", choices=["none", "poll", "explicit"], default="none")
    p.add_argument("--poll-interval", type=positive_float, default=15.0, metavar="SECONDS")
    p.add_argument(
        "--load-model", action="append", default=[], metavar="NAME",
        help="explicit mode: load this model at start ('*' for all); repeatable",
    )  # fmt: skip
    p.add_argument("--strict-readiness", action="store_true",
                   help="stay unready while any model failed to load")  # fmt: skip
    p.add_argument("--exit-timeout", type=positive_float, default=30.0, metavar="SECONDS",
                   help="how long SIGTERM waits for in-flight requests")  # fmt: skip
    p.add_argument("--max-request-mb", type=positive_float, default=256.0,
                   help="largest request body / gRPC message (413 above)")  # fmt: skip
    p.add_argument("--max-elements", type=int, default=64 * 2**20,
                   help="largest element count of one input tensor")  # fmt: skip
    p.add_argument("--max-image-pixels", type=int, default=50_000_000,
                   help="largest decoded image an image request may carry (413 above)")  # fmt: skip
    v = p.add_argument_group("video jobs and live streams")
    v.add_argument("--media-root", type=Path, default=Path("media"),
                   help="the only folder jobs and file streams read (./media)")  # fmt: skip
    v.add_argument("--state-dir", type=Path, default=Path("state"),
                   help="job records (SQLite), checkpoints, results, uploads")  # fmt: skip
    v.add_argument("--max-upload-mb", type=positive_float, default=2048.0,
                   help="largest uploaded video (413 above)")  # fmt: skip
    v.add_argument("--max-running-jobs", type=positive_int, default=1)
    v.add_argument("--max-queued-jobs", type=positive_int, default=32,
                   help="jobs waiting beyond this are refused with 429")  # fmt: skip
    v.add_argument("--checkpoint-interval", type=non_negative_float, default=5.0,
                   metavar="SECONDS",
                   help="checkpoint a job at a keyframe this often (0: each)")  # fmt: skip
    v.add_argument("--max-job-retries", type=non_negative_int, default=2, metavar="N",
                   help="a job whose decode worker process died (a crash in FFmpeg) runs again "
                        "from its checkpoint at most N times, then fails (default 2)")  # fmt: skip
    v.add_argument("--max-streams", type=positive_int, default=16,
                   help="live streams attached at once (429 above)")  # fmt: skip
    add_model_cache(p)
    p.add_argument("--log-format", choices=["auto", "json", "text"], default="auto",
                   help="auto: text on a terminal, JSON lines otherwise")  # fmt: skip
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info")
    _add_telemetry(p)


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in 0..1, got {text}")
    return value


def _add_telemetry(p: argparse.ArgumentParser) -> None:
    """OpenTelemetry tracing (the ``tracing`` extra): off unless an endpoint is given."""
    t = p.add_argument_group("telemetry")
    t.add_argument("--trace-otlp-endpoint", default=None, metavar="URL",
                   help="trace requests to this OTLP/HTTP collector (e.g. http://collector:4318; "
                        "/v1/traces is added to a URL without a path); needs the tracing extra; "
                        "OTEL_EXPORTER_OTLP_* and OTEL_SERVICE_NAME apply (default: tracing "
                        "off)")  # fmt: skip
    t.add_argument("--trace-sample-rate", type=_fraction, default=1.0, metavar="FRACTION",
                   help="share of requests arriving without a traceparent that are traced; "
                        "a caller's traceparent decides for its own (default: 1.0)")  # fmt: skip


def run_serve(args: argparse.Namespace) -> int:
    from frameserve.api.app import ListenSettings, VideoServiceSettings, run
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
    try:
        return run(settings, ListenSettings(args.host, args.http_port, args.grpc_port), video)
    except ConfigError as err:  # tracing asked for without the extra, or a bad endpoint URL
        print(f"frameserve serve: {err.message}", file=sys.stderr)  # noqa: T201
        return 2
