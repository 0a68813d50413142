"""The decode-only ceiling of a clip: PyAV decoding every frame and nothing else.

No pipeline can run a clip faster than its frames can be decoded, so each contender's fps is
reported as a fraction of this. The decoder is set up as frameserve's ``VideoSource`` sets it
up (``thread_type = "AUTO"``, ``thread_count`` = the core budget); frames stay in YUV (no RGB
conversion). ``skip_loop_filter="all"`` (H.264's deblocking left out: a cheaper, blockier
picture) is measured beside it for reference. CPU is this process's, over every thread.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import av


def decode_ceiling(clip: Path, threads: int, skip_loop_filter: bool = False) -> dict[str, Any]:
    """fps, CPU ms per frame and frames of decoding ``clip`` alone."""
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = threads
        if skip_loop_filter:
            stream.codec_context.options = {"skip_loop_filter": "all"}
        wall, cpu = time.perf_counter(), time.process_time()
        frames = sum(1 for _ in container.decode(stream))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"fps": frames / wall, "cpu_ms_per_frame": cpu / frames * 1000, "frames": frames}


def clip_facts(clip: Path) -> dict[str, Any]:
    """Size, frame count and bitrate of a clip, for the table."""
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        seconds = float(stream.duration * stream.time_base) if stream.duration else 0.0
        size = clip.stat().st_size
        return {
            "file": clip.name,
            "width": stream.codec_context.width,
            "height": stream.codec_context.height,
            "frames": stream.frames,
            "fps": float(stream.average_rate or 0),
            "bytes": size,
            "mbps": size * 8 / seconds / 1e6 if seconds else None,
        }
