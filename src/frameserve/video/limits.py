"""Bounds on what video jobs, uploads and live streams may make the server hold.

One frozen value, set from ``frameserve serve``'s limits group and read by the job queue (frame
size, count and duration, retention, the state-folder quota), the upload route (concurrent
uploads) and live streams (frame size, subscribers). ``None`` turns a bound off.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from frameserve.errors import InsufficientStorage, PayloadTooLarge


@dataclass(frozen=True)
class VideoLimits:
    max_frame_pixels: int | None = 3840 * 2160  # width x height of one decoded frame
    max_frames: int | None = 1_000_000  # frames one job decodes
    max_duration_s: float | None = 6 * 3600.0  # seconds of video one job reads
    max_concurrent_uploads: int = 4
    job_retention_s: float | None = 7 * 86400.0  # finished jobs are deleted after this
    state_quota_bytes: int | None = 20 * 2**30  # new jobs and uploads refused above it
    max_subscribers: int = 16  # event subscribers of one live stream

    def check_frame(self, width: int, height: int, where: str) -> None:
        """Refuse a frame larger than ``max_frame_pixels`` (from a header or while decoding)."""
        limit = self.max_frame_pixels
        if limit is not None and width * height > limit:
            raise PayloadTooLarge(
                f"{where}: frame of {width}x{height} ({width * height} pixels) exceeds the limit "
                f"of {limit} pixels (max_frame_pixels, --max-frame-pixels)"
            )

    def check_length(self, frames: int | None, duration_s: float | None, where: str) -> None:
        """Refuse a video whose frame count or duration (declared, or decoded so far) is over
        the limits; ``None``: not known."""
        if self.max_frames is not None and frames is not None and frames > self.max_frames:
            raise PayloadTooLarge(
                f"{where}: {frames} frames exceed the limit of {self.max_frames} frames "
                "(max_frames, --max-video-frames)"
            )
        limit = self.max_duration_s
        if limit is not None and duration_s is not None and duration_s > limit:
            raise PayloadTooLarge(
                f"{where}: {duration_s:.1f} s of video exceeds the limit of {limit:g} s "
                "(max_duration_s, --max-video-duration)"
            )

    def check_quota(self, state_dir: Path) -> None:
        """Refuse new work while the state folder holds more than ``state_quota_bytes``."""
        if self.state_quota_bytes is None:
            return
        used = folder_bytes(state_dir)
        if used > self.state_quota_bytes:
            raise InsufficientStorage(
                f"state folder: {used} bytes used exceeds the quota of {self.state_quota_bytes} "
                "bytes (state_quota_bytes, --state-quota-mb); finished jobs are deleted after "
                "--job-retention, or delete some with DELETE /v1/jobs/{id}"
            )


def folder_bytes(root: Path) -> int:
    """Bytes of the regular files under ``root`` (files that vanish meanwhile count 0)."""
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                continue
    return total
