"""KServe v2 tensor datatypes and their numpy equivalents.

BF16 has no numpy dtype of its own; it is carried as ``ml_dtypes.bfloat16`` (2 bytes per
element), which OpenVINO and the binary wire format both understand bit for bit.
BYTES tensors are numpy object arrays of ``bytes``.
"""

from __future__ import annotations

from typing import Final

import ml_dtypes
import numpy as np

BYTES: Final = "BYTES"

_TO_NUMPY: Final[dict[str, np.dtype]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "BYTES": np.dtype(np.object_),
}
_FROM_NUMPY: Final[dict[np.dtype, str]] = {v: k for k, v in _TO_NUMPY.items()}
_FROM_NUMPY[np.dtype(np.bytes_)] = BYTES

DATATYPES: Final = frozenset(_TO_NUMPY)


def is_datatype(name: str) -> bool:
    """True when ``name`` is a KServe v2 datatype name (``FP32``, ``BYTES``, ...)."""
    return name in _TO_NUMPY


def to_numpy(datatype: str) -> np.dtype:
    """The numpy dtype for a v2 datatype; ``KeyError`` for an unknown name."""
    return _TO_NUMPY[datatype]


def from_numpy(dtype: np.dtype) -> str:
    """The v2 datatype for a numpy dtype; ``KeyError`` when there is none."""
    if dtype.kind in ("S", "U", "O"):
        return BYTES
    return _FROM_NUMPY[np.dtype(dtype)]


def element_size(datatype: str) -> int:
    """Bytes per element on the wire; 0 for BYTES (variable length)."""
    return 0 if datatype == BYTES else _TO_NUMPY[datatype].itemsize


MAX_DIMS = 64  # numpy's limit on an array's dimensions (NPY_MAXDIMS in numpy 2)


def element_count(shape: tuple[int, ...] | list[int]) -> int:
    """Number of elements of a shape (1 for a scalar)."""
    n = 1
    for d in shape:
        n *= d
    return n


def serialize_bytes(array: np.ndarray) -> bytes:
    """BYTES tensor -> the v2 binary layout: each element as a 4-byte LE length + its bytes."""
    parts: list[bytes] = []
    for item in array.reshape(-1):
        b = item.encode() if isinstance(item, str) else bytes(item)
        parts.append(len(b).to_bytes(4, "little"))
        parts.append(b)
    return b"".join(parts)


def deserialize_bytes(buffer: bytes | memoryview, count: int, field: str) -> np.ndarray:
    """Parse ``count`` length-prefixed elements; ``ValueError`` naming ``field`` when malformed."""
    view = memoryview(buffer)
    out = np.empty(count, dtype=np.object_)
    pos = 0
    for i in range(count):
        if pos + 4 > len(view):
            raise ValueError(
                f"{field}: BYTES element {i} needs a 4-byte length at offset {pos}, "
                f"but the data has {len(view)} bytes"
            )
        n = int.from_bytes(view[pos : pos + 4], "little")
        pos += 4
        if pos + n > len(view):
            raise ValueError(
                f"{field}: BYTES element {i} declares {n} bytes at offset {pos}, "
                f"but only {len(view) - pos} remain"
            )
        out[i] = bytes(view[pos : pos + n])
        pos += n
    if pos != len(view):
        raise ValueError(
            f"{field}: {count} BYTES elements use {pos} bytes, but the data has {len(view)} bytes"
        )
    return out
