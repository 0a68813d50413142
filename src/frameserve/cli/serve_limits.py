"""``frameserve serve``'s "limits" group: every bound on what one client can make the server
hold, compute or keep (docs/security-limits.md lists them with what each protects)."""

from __future__ import annotations

import argparse
import re
from typing import TYPE_CHECKING

from frameserve.cli.args import non_negative_float, non_negative_int, positive_float, positive_int

if TYPE_CHECKING:
    from frameserve.serving.server import RequestLimits
    from frameserve.video.limits import VideoLimits

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")


def duration(text: str) -> float:
    """``90``, ``90s``, ``30m``, ``12h``, ``7d`` -> seconds; ``0`` or ``off``: never."""
    value = text.strip().lower()
    if value == "off":
        return 0.0
    match = _DURATION.fullmatch(value)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"expected a duration such as 90s, 30m, 12h, 7d or off, got {text!r}"
        )
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def add_limits(p: argparse.ArgumentParser) -> None:
    """The limits group (the request-size flags that predate it live here too)."""
    g = p.add_argument_group("limits")
    g.add_argument("--max-request-mb", type=positive_float, default=256.0, metavar="MB",
                   help="largest request body / gRPC message (413 above)")  # fmt: skip
    g.add_argument("--max-elements", type=positive_int, default=64 * 2**20, metavar="N",
                   help="largest element count of one tensor: a wire input, and the tensor an "
                        "image becomes through declared pre-processing, computed before it "
                        "is made (413 above)")  # fmt: skip
    g.add_argument("--max-image-pixels", type=positive_int, default=50_000_000, metavar="N",
                   help="largest decoded image an image request may carry (413 above)")  # fmt: skip
    g.add_argument("--max-images", type=positive_int, default=64, metavar="N",
                   help="encoded images in one request (a BYTES batch; 413 above)")  # fmt: skip
    g.add_argument("--max-json-mb", type=positive_float, default=64.0, metavar="MB",
                   help="largest JSON document (a body, or the JSON part of a binary-tensor "
                        "request), refused before it is parsed (413 above)")  # fmt: skip
    g.add_argument("--request-timeout", type=non_negative_float, default=60.0, metavar="SECONDS",
                   help="a request's body must arrive within this (408 after; 0: no "
                        "limit); idle keep-alive connections close after 75 s")  # fmt: skip
    g.add_argument("--model-timeout", type=non_negative_float, default=0.0, metavar="SECONDS",
                   help="a model call running longer answers its callers 504; the instance "
                        "stays busy until the runtime returns (0: wait)")  # fmt: skip
    g.add_argument("--max-connections", type=non_negative_int, default=1024, metavar="N",
                   help="HTTP connections and in-flight requests at once; above it uvicorn "
                        "answers 503 (0: no limit)")  # fmt: skip
    g.add_argument("--max-grpc-streams", type=positive_int, default=100, metavar="N",
                   help="concurrent gRPC calls on one HTTP/2 connection")  # fmt: skip
    _add_video_limits(g)


def _add_video_limits(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--max-frame-pixels", type=positive_int, default=3840 * 2160, metavar="N",
                   help="largest video frame (width x height) a job or stream may carry: a "
                        "job whose header says more fails at its start, a video that grows "
                        "past it while decoding stops")  # fmt: skip
    g.add_argument("--max-video-frames", type=non_negative_int, default=1_000_000, metavar="N",
                   help="most frames one job decodes (refused or stopped above; 0: no "
                        "limit)")  # fmt: skip
    g.add_argument("--max-video-duration", type=duration, default=6 * 3600.0,
                   metavar="DURATION",
                   help="longest video a job reads (refused or stopped above; 0: no "
                        "limit)")  # fmt: skip
    g.add_argument("--max-concurrent-uploads", type=positive_int, default=4, metavar="N",
                   help="video uploads received at once (429 above)")  # fmt: skip
    g.add_argument("--job-retention", type=duration, default=7 * 86400.0, metavar="DURATION",
                   help="finished jobs and their files are deleted this long after they "
                        "end (90s, 30m, 12h, 7d; off: keep)")  # fmt: skip
    g.add_argument("--state-quota-mb", type=non_negative_float, default=20480.0, metavar="MB",
                   help="new jobs and uploads are refused (507) while the state folder holds "
                        "more than this (0: no quota)")  # fmt: skip
    g.add_argument("--max-subscribers", type=positive_int, default=16, metavar="N",
                   help="event subscribers (SSE and gRPC Subscribe) of one live stream (429 "
                        "above)")  # fmt: skip


def request_limits(args: argparse.Namespace) -> RequestLimits:
    """The request and connection limits from the parsed flags."""
    from frameserve.serving.server import RequestLimits

    return RequestLimits(
        max_body_bytes=int(args.max_request_mb * 2**20),
        max_elements=args.max_elements,
        max_image_pixels=args.max_image_pixels,
        max_images=args.max_images,
        max_json_bytes=int(args.max_json_mb * 2**20),
        request_timeout_s=args.request_timeout or None,
        model_timeout_s=args.model_timeout or None,
        max_connections=args.max_connections or None,
        max_grpc_streams=args.max_grpc_streams,
    )


def video_limits(args: argparse.Namespace) -> VideoLimits:
    """The job, upload, stream and state-folder limits from the parsed flags."""
    from frameserve.video.limits import VideoLimits

    return VideoLimits(
        max_frame_pixels=args.max_frame_pixels,
        max_frames=args.max_video_frames or None,
        max_duration_s=args.max_video_duration or None,
        max_concurrent_uploads=args.max_concurrent_uploads,
        job_retention_s=args.job_retention or None,
        state_quota_bytes=int(args.state_quota_mb * 2**20) or None,
        max_subscribers=args.max_subscribers,
    )
