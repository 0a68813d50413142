"""The narrow protocol every backend implements.

A backend knows nothing of batching or HTTP: it receives a dict of numpy arrays (the batch
dimension already concatenated when the model batches) and returns a dict of numpy arrays.
``infer`` is a coroutine on the event loop that owns the model's scheduler; backends do their
blocking work off that loop (OpenVINO's async infer requests, or a sized thread pool).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from frameserve.cpu import CpuBudget


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """A tensor as the model file declares it: the full shape, ``-1`` for dynamic dims."""

    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class BackendSettings:
    """What a backend needs to load one version: resolved from ``ModelConfig`` + core budget."""

    model_name: str
    version: int
    path: Path  # the version folder
    config: Any  # frameserve.serving.config.ModelConfig (kept untyped: backends sit below serving)
    budget: CpuBudget
    # True: the first dim of every tensor is the batch (max_batch_size > 0); False: no batch
    # dim; None: max_batch_size is unset, so the model file decides (a dynamic first dim batches)
    batch_dim: bool | None
    extra: dict[str, Any] = field(default_factory=dict)
    # Where compiled models are cached when the config names no ``cache_dir`` (None: nowhere)
    cache_dir: Path | None = None


class Backend(Protocol):
    """A loaded model version. ``max_concurrency`` batches may run at once."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_concurrency: int
    platform: str

    async def infer(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def describe(self) -> str:
        """One line for the start-up log: runtime, device, streams, threads, precision."""
        ...

    def close(self) -> None: ...


# A video source's stream as the schedulers know it (``Admission.stream_id``: "video-0",
# "job-<id>-0", "live-<id>-0"); rows of online requests have none.
StreamKey = str


@runtime_checkable
class StreamBackend(Protocol):
    """What a backend with per-stream state adds to ``Backend`` (the Python script backend).

    The video layer calls ``configure_stream`` once per stream before the stream's first
    frame and ``release_stream`` when the stream ends; the scheduler then calls ``infer_rows``
    with the stream of every row of the batch (a batch mixes rows of several streams and
    online requests)."""

    # False: this loaded model wants none of it (a script with no configure, no release and a
    # process(batch) of one argument), so callers skip the calls and the per-row ids
    keeps_streams: bool

    def configure_stream(
        self, stream: StreamKey, params: Mapping[str, Any], profiling: bool = False
    ) -> None:
        """Per-stream settings; raises ``InvalidInput`` with the script's message when it
        refuses them. ``profiling``: the stream's run collects a stage profile."""
        ...

    def release_stream(self, stream: StreamKey) -> None: ...

    async def infer_rows(
        self, batch: Mapping[str, np.ndarray], streams: Sequence[StreamKey | None]
    ) -> dict[str, np.ndarray]: ...

    def stage_seconds(self) -> dict[str, float]:
        """Seconds the model itself reported per stage of its own, summed since load."""
        ...
