"""The narrow protocol every backend implements.

A backend knows nothing of batching or HTTP: it receives a dict of numpy arrays (the batch
dimension already concatenated when the model batches) and returns a dict of numpy arrays.
``infer`` is a coroutine on the event loop that owns the model's scheduler; backends do their
blocking work off that loop (OpenVINO's async infer requests, or a sized thread pool).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

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
