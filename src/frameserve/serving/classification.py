"""Triton's classification extension: an output returned as its top-N classes.

A request may ask, per requested output, for ``classification: N`` (``class_count`` in
tritonclient). The output then comes back as BYTES of shape ``[batch, n]`` (``[n]`` when the
model does not batch), ``n = min(N, classes)``, each element ``"score:index"`` or
``"score:index:label"``, highest score first, written as Triton writes them (C++
``std::to_string``: six decimals for floating point, plain integers otherwise). Labels come
from the output's ``label_filename``, one a line; an index past the last line gets none.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from frameserve.processing.labels import read_lines

# Triton refuses classification for other types (FP16, BF16, BOOL, BYTES)
CLASSIFIABLE = frozenset(
    {"UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP32", "FP64"}
)


def read_labels(path: Path) -> tuple[str, ...]:
    """One label a line (Triton's label file); ConfigError names the file."""
    return tuple(read_lines(path, "label_filename"))


def _descending(row: np.ndarray) -> np.ndarray:
    """Indices by value, highest first, ties by lower index (also for unsigned types)."""
    n = row.shape[0]
    return (n - 1) - np.argsort(row[::-1], kind="stable")[::-1]


def _entry(value: np.generic, index: int, labels: tuple[str, ...]) -> bytes:
    score = f"{float(value):f}" if np.issubdtype(value.dtype, np.floating) else str(int(value))
    label = labels[index] if index < len(labels) else ""
    return f"{score}:{index}:{label}".encode() if label else f"{score}:{index}".encode()


def top_classes(
    array: np.ndarray, count: int, batched: bool, labels: tuple[str, ...]
) -> np.ndarray:
    """The top ``count`` classes of each batch row (all of ``array`` when not ``batched``)."""
    rows = array.reshape(array.shape[0] if batched and array.ndim else 1, -1)
    n = min(count, rows.shape[1])
    out = np.empty((rows.shape[0], n), dtype=object)
    for b, row in enumerate(rows):
        for k, index in enumerate(_descending(row)[:n]):
            out[b, k] = _entry(row[index], int(index), labels)
    return out if batched else out[0]
