"""``serve`` flags for live previews: MJPEG/JPEG pictures and HLS (docs/preview.md)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from frameserve.cli.args import positive_float, positive_int

if TYPE_CHECKING:
    from frameserve.video.live.preview import PreviewSettings


def add_preview(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("live previews")
    g.add_argument("--preview-fps", type=positive_float, default=5.0, metavar="FPS",
                   help="annotated preview pictures per second at most (preview.mjpeg, "
                        "preview.jpg); a client may ask for fewer")  # fmt: skip
    g.add_argument("--preview-width", type=positive_int, default=640, metavar="PIXELS",
                   help="width of preview pictures and HLS at most (the frame's aspect is "
                        "kept); a client may ask for less")  # fmt: skip
    g.add_argument("--preview-max-connections", type=positive_int, default=4, metavar="N",
                   help="open preview.mjpeg connections per stream (429 above)")  # fmt: skip
    g.add_argument("--preview-wait", type=positive_float, default=5.0, metavar="SECONDS",
                   help="how long preview.jpg (and the first HLS playlist request, plus two "
                        "segments) waits for the first picture before 503")  # fmt: skip
    g.add_argument("--hls-fps", type=positive_float, default=10.0, metavar="FPS",
                   help="pictures per second at most in a stream's HLS output")  # fmt: skip
    g.add_argument("--hls-segment", type=positive_float, default=1.0, metavar="SECONDS",
                   help="length of an HLS segment")  # fmt: skip
    g.add_argument("--hls-list-size", type=positive_int, default=6, metavar="N",
                   help="segments in the HLS playlist (at least 2)")  # fmt: skip
    g.add_argument("--hls-idle-timeout", type=positive_float, default=20.0, metavar="SECONDS",
                   help="a stream's HLS encoder stops (and its files go) this long after the "
                        "last request for its playlist or segments")  # fmt: skip


def preview_settings(args: argparse.Namespace) -> PreviewSettings:
    """The flags as settings (ConfigError for values the settings refuse)."""
    from frameserve.video.live.hls import HlsSettings
    from frameserve.video.live.preview import PreviewSettings

    hls = HlsSettings(args.hls_fps, args.hls_segment, args.hls_list_size, args.hls_idle_timeout)
    return PreviewSettings(
        fps=args.preview_fps,
        width=args.preview_width,
        max_connections=args.preview_max_connections,
        wait_s=args.preview_wait,
        hls=hls,
    )
