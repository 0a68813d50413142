"""``InferResponse`` -> a KServe v2 HTTP body, as the request asked.

Responses are JSON unless an output asks for ``binary_data`` (or the request sets
``binary_data_output``), in which case the JSON header is followed by the raw outputs (Triton's
binary tensor extension); an output bound to a shared-memory region is written there and carries
no data in the body.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from frameserve.api.http.codec import (
    BINARY_CONTENT_TYPE,
    JSON_CONTENT_TYPE,
    SHM_SIZE,
    DecodedRequest,
    ShmWindow,
)
from frameserve.api.shm import SharedMemoryRegistry
from frameserve.datatypes import BYTES, serialize_bytes
from frameserve.errors import InvalidInput, NotSupported
from frameserve.serving.types import InferResponse, OutputTensor


@dataclass(frozen=True, slots=True)
class EncodedResponse:
    """A response body; ``header_length`` is set (and the body binary) when tensors follow."""

    body: bytes
    header_length: int | None = None

    @property
    def content_type(self) -> str:
        return JSON_CONTENT_TYPE if self.header_length is None else BINARY_CONTENT_TYPE


def _tensor_bytes(tensor: OutputTensor) -> bytes | memoryview:
    """The tensor in the v2 binary layout; a view of the array where possible (no copy)."""
    if tensor.datatype == BYTES:
        return serialize_bytes(tensor.data)
    array = np.ascontiguousarray(tensor.data)
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    return array.reshape(-1).view(np.uint8).data


def _json_data(tensor: OutputTensor) -> list[Any] | np.ndarray | None:
    """Flat JSON-ready data; None for BYTES that are not UTF-8 (those go binary instead)."""
    flat = np.ascontiguousarray(tensor.data).reshape(-1)
    if tensor.datatype == BYTES:
        try:
            return [x.decode() if isinstance(x, bytes) else str(x) for x in flat.tolist()]
        except UnicodeDecodeError:
            return None
    if tensor.datatype == "BF16":
        return flat.astype(np.float32)  # orjson knows no bfloat16
    return flat if flat.dtype.isnative else flat.astype(flat.dtype.newbyteorder("="))


def _write_shm_output(
    tensor: OutputTensor, window: ShmWindow, shm: SharedMemoryRegistry | None
) -> None:
    if shm is None:
        raise NotSupported(f"output {tensor.name!r}: shared memory is not enabled")
    raw = _tensor_bytes(tensor)
    if len(raw) > window.byte_size:
        raise InvalidInput(
            f"outputs.{tensor.name}.parameters.{SHM_SIZE}: output {tensor.name!r} needs "
            f"{len(raw)} bytes, got {window.byte_size}"
        )
    shm.write(window.region, window.offset, raw)


def encode_infer_response(
    response: InferResponse, decoded: DecodedRequest, shm: SharedMemoryRegistry | None
) -> EncodedResponse:
    """Encode a response as the request asked: JSON, JSON + binary tensors, or shared memory."""
    outputs: list[dict[str, Any]] = []
    chunks: list[bytes | memoryview] = []
    for tensor in response.outputs:
        entry: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": list(tensor.shape),
        }
        opts = decoded.outputs.get(tensor.name)
        if opts is not None and opts.shm is not None:
            _write_shm_output(tensor, opts.shm, shm)  # the response carries no data for it
        else:
            binary = decoded.binary_output if opts is None or opts.binary is None else opts.binary
            data = None if binary else _json_data(tensor)
            if data is None:
                raw = _tensor_bytes(tensor)
                entry["parameters"] = {"binary_data_size": len(raw)}
                chunks.append(raw)
            else:
                entry["data"] = data
        outputs.append(entry)
    header: dict[str, Any] = {
        "model_name": response.model_name,
        "model_version": response.model_version,
    }
    if response.id:
        header["id"] = response.id
    if response.parameters:
        header["parameters"] = response.parameters
    header["outputs"] = outputs
    json_bytes = orjson.dumps(header, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return EncodedResponse(json_bytes)
    return EncodedResponse(b"".join([json_bytes, *chunks]), header_length=len(json_bytes))
