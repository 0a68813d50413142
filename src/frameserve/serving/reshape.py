"""Triton's ``reshape``: a tensor's shape for clients (``dims``) differs from the model's.

A client sends and receives ``dims`` (plus the batch dimension when the model batches); the
model file takes and gives ``reshape.shape`` (plus the batch dimension). Both describe the same
elements in the same order, so the change is a numpy view, made once per batch where the batch
goes into and comes out of the backend (``ModelVersion``), never per request.

Variable-size dimensions (``-1``) follow Triton: the two shapes must split into the same
number of runs between their ``-1`` entries, each run with the same element count (``[2, 4,
-1, 6]`` reshapes to ``[8, -1, 1, 6]``), and the k-th ``-1`` of one shape takes the size of
the k-th ``-1`` of the other at run time. An empty ``reshape.shape`` is a scalar, allowed for
dims with one element.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from frameserve.errors import ModelExecutionError


def _count(shape: Sequence[int]) -> int:
    """Triton's element count: -1 when any dim is variable, 0 for an empty shape."""
    if any(d == -1 for d in shape):
        return -1
    return int(np.prod(shape)) if shape else 0


def _elements(count: int) -> str:
    return {-1: "a variable number", 0: "1 (a scalar)"}.get(count, str(count))


def _runs(shape: Sequence[int]) -> list[int]:
    """Element counts of the runs between variable-size dims."""
    runs, current = [], 1
    for d in shape:
        if d == -1:
            runs.append(current)
            current = 1
        else:
            current *= d
    return [*runs, current]


def reshape_problem(dims: Sequence[int], shape: Sequence[int]) -> str | None:
    """Why ``shape`` cannot be ``dims`` reshaped (Triton's rules), or None when it can."""
    if any(d < 1 and d != -1 for d in shape):
        return f"reshape.shape: expected dims >= 1 or -1, got {list(shape)}"
    a, b = _count(dims), _count(shape)
    if a != b and not (b == 0 and a == 1):
        return (
            f"reshape.shape {list(shape)} must hold as many elements as dims {list(dims)}; "
            f"dims hold {_elements(a)}, reshape.shape holds {_elements(b)}"
        )
    if a == -1 and _runs(dims) != _runs(shape):
        return (
            f"reshape.shape {list(shape)} must split at its -1 dims into runs of the same "
            f"element counts as dims {list(dims)} (runs {_runs(shape)}, expected {_runs(dims)})"
        )
    return None


def _fill(target: Sequence[int], source: Sequence[int], actual: Sequence[int]) -> list[int]:
    """``target`` with its k-th -1 set to the size ``actual`` has at ``source``'s k-th -1."""
    sizes = iter(a for s, a in zip(source, actual, strict=True) if s == -1)
    return [next(sizes) if d == -1 else d for d in target]


@dataclass(frozen=True, slots=True)
class Reshape:
    """One tensor's two shapes, batch dimension excluded."""

    name: str
    dims: tuple[int, ...]  # what clients send or receive
    shape: tuple[int, ...]  # what the model file takes or gives

    def to_model(self, array: np.ndarray, lead: int) -> np.ndarray:
        """A client-shaped array (``lead`` batch dims first) as the model takes it."""
        rest = array.shape[lead:]
        return array.reshape(array.shape[:lead] + tuple(_fill(self.shape, self.dims, rest)))

    def to_client(self, array: np.ndarray, lead: int) -> np.ndarray:
        """A model-shaped output as clients receive it; ModelExecutionError when the model
        gave another shape than ``reshape.shape`` says."""
        rest = array.shape[lead:]
        fits = len(rest) == len(self.shape) and all(
            d == -1 or d == r for d, r in zip(self.shape, rest, strict=True)
        )
        if not fits:
            raise ModelExecutionError(
                f"output {self.name!r}: the model gave shape {list(array.shape)}, expected "
                f"reshape.shape {list(self.shape)} after {lead} batch dim(s)"
            )
        return array.reshape(array.shape[:lead] + tuple(_fill(self.dims, self.shape, rest)))


@dataclass(frozen=True, slots=True)
class BatchReshape:
    """Every reshaped input and output of a version; applied once per batch."""

    inputs: tuple[Reshape, ...]
    outputs: tuple[Reshape, ...]
    lead: int  # 1 when the model batches, else 0

    def __bool__(self) -> bool:
        return bool(self.inputs or self.outputs)

    def to_model(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = dict(batch)
        for r in self.inputs:
            out[r.name] = r.to_model(out[r.name], self.lead)
        return out

    def to_client(self, outputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = dict(outputs)
        for r in self.outputs:
            out[r.name] = r.to_client(out[r.name], self.lead)
        return out
