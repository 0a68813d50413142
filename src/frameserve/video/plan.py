"""What a video run plans before its models load: the options, which frames it keeps, each
input's source as it decodes it, frames in flight and group sizes.

No serving module is imported here: ``video run`` plans its inputs from the pipeline's files
(``video.ahead``) and forks their decode workers before it imports the server (``video.warm``),
so the workers start decoding ~0.1 s sooner. ``VideoRun`` plans with the same functions once the
models are loaded.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from frameserve.video.config import VideoPipelineConfig
from frameserve.video.decode import VideoInfo, VideoSource
from frameserve.video.frames import Sampling

if TYPE_CHECKING:
    from frameserve.video.streams import StreamStart


@dataclass(frozen=True)
class RunOptions:
    """What the CLI (or a job) asks for on top of the pipeline file."""

    out: Path = Path("out")
    sample: Sampling | None = None  # None: the pipeline's own ``sample``
    video_out: bool = False
    mask_track: bool = False
    inflight: int = 0  # frames in flight per input; 0: from the models' batch sizes
    decode_threads: int = 0  # FFmpeg threads per input; 0: the core budget
    summary: bool = True  # OUT/<stem>.summary.json when the pipeline has one (tune trials: off)
    params: Mapping[str, Any] | None = None  # each input's params for script models
    profiling: bool = False  # script models report their own stages (``--profile``)
    # ``video run``: the cores each input's warm decode worker binds itself to
    # (``cpu.decoder_cores``, the server's budget already less them); jobs and streams share the
    # server's cores and never bind
    decoder_cores: tuple[tuple[int, ...], ...] = ()
    # ``video run``, one input: the cores a second decode worker takes the input's last pieces
    # on, at idle priority (``video.split``); () none
    second_cores: tuple[int, ...] = ()


def decodes_in_workers(config: VideoPipelineConfig, options: RunOptions) -> bool:
    """Whether ``video run``'s warm workers can decode for this pipeline: one analysis model
    (their groups are its pictures at model size), and no whole frames for a video out."""
    single = config.steps is not None and len(config.steps) == 1
    return single and not config.interpolates and not options.video_out


def splits(config: VideoPipelineConfig, options: RunOptions, sampling: Sampling) -> bool:
    """Whether a second decoder (``video.split``) gives this run the results of one: asked
    for (``second_cores``), one model's pictures decoded in workers, a sampling decided from
    the frame index alone, and no filters or defect checks (their state runs across frames)."""
    return (
        bool(options.second_cores)
        and decodes_in_workers(config, options)
        and sampling.mode in ("all", "every")
        and config.filters is None
        and config.defects is None
    )


def run_sampling(name: str, config: VideoPipelineConfig, options: RunOptions) -> Sampling:
    """Which frames a run keeps: ``--sample``, else the pipeline's own ``sample``."""
    return options.sample or Sampling.parse(config.sample, f"{name}: sample")


def input_source(
    path: Path,
    stream_id: int,
    config: VideoPipelineConfig,
    sampling: Sampling,
    threads: int,
    info: VideoInfo | None,
    start: StreamStart | None = None,
) -> VideoSource:
    """One input as a run decodes it (``VideoRun`` and ``video.ahead``, whose worker specs
    must come out equal): the pipeline's decode options and filters, from ``start`` on."""
    seek, first = (start.seek, start.next_frame) if start is not None else (None, 0)
    return VideoSource(
        path, stream_id, sampling, threads, seek, first, config.decode.codec_options(), info,
        config.filters,
    )  # fmt: skip


def frames_in_flight(models: Iterable[tuple[int, int]], streams: int) -> int:
    """Enough frames in flight per stream to fill the batches of ``models`` (each its max
    batch size and instances), shared by ``streams``."""
    want = 4
    for max_batch_size, instances in models:
        want = max(want, 2 * max(1, max_batch_size) * max(1, instances))
    return max(2, -(-want // streams))


def group_size(max_batch_size: int, inflight: int) -> int:
    """Frames per request to a model: its batch, or half of the frames in flight, so that one
    group is decoded while the one before it runs."""
    if max_batch_size <= 1:
        return 1
    return max(1, min(max_batch_size, inflight // 2))
