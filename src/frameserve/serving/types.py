"""Requests and responses as the serving layer sees them, independent of the wire.

Front ends decode HTTP/gRPC bodies into these (tensor bytes already viewed as numpy arrays of
the declared datatype and shape) and encode the response back. Validation against the model
happens in ``ModelVersion.prepare``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from frameserve.serving.tracing import RequestTrace


@dataclass(slots=True)
class InputTensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray


@dataclass(slots=True)
class OutputTensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray


@dataclass(frozen=True, slots=True)
class Admission:
    """How one source's requests enter a model's scheduler (video runs, jobs, live streams).

    Carried as it is by ``InferRequest`` and the scheduler's ``WorkItem``, never copied field
    by field."""

    stream_id: str | None = None
    droppable: bool = False  # live: a newer frame replaces the stalest queued one
    max_inflight: int = 0  # live: queued frames allowed for this stream (0 = any)
    background: bool = False  # jobs: below every priority level, never dropped, only slowed


ONLINE = Admission()  # an online request: the model's priority levels, never dropped


@dataclass(slots=True)
class InferRequest:
    """One inference request. ``model_version`` "" means the newest ready version."""

    model_name: str
    inputs: list[InputTensor]
    model_version: str = ""
    id: str = ""
    outputs: list[str] | None = None  # None: every output
    priority: int = 0  # 0: the model's default level; 1 is the highest
    timeout_us: int = 0  # 0: the model's default (``dynamic_batching.timeout_ms``) or none
    admission: Admission = ONLINE  # video sources: their stream, dropping, background level
    parameters: dict[str, Any] = field(default_factory=dict)
    trace: RequestTrace | None = None  # tracing on and this request sampled
    # requested output -> class count: that output comes back as its top classes (Triton's
    # classification extension; ``serving/classification.py``)
    classification: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class InferResponse:
    model_name: str
    model_version: str
    id: str
    outputs: list[OutputTensor]
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TensorMetadata:
    name: str
    datatype: str
    shape: tuple[int, ...]  # with -1 for the batch dimension when the model batches


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    name: str
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorMetadata, ...]
    outputs: tuple[TensorMetadata, ...]


@dataclass(frozen=True, slots=True)
class RepositoryEntry:
    """A row of the repository index (Triton's ``RepositoryIndex``)."""

    name: str
    version: str
    state: str  # READY | LOADING | UNLOADING | UNAVAILABLE | "" (never loaded)
    reason: str
