"""KServe v2 gRPC messages <-> serving types, without copying tensor bytes in Python.

The servicer takes ``ModelInfer``/``ModelStreamInfer`` requests as the bytes gRPC received and
answers with bytes. ``split_infer_request`` walks the top-level fields of a ``ModelInferRequest``
itself: each ``raw_input_contents`` entry stays a ``memoryview`` into the received buffer and
only the small rest goes through protobuf. ``encode_infer_response`` lets protobuf serialise the
response without its tensors and appends each tensor as a ``raw_output_contents`` field straight
from the array's memory, so the one ``join`` gRPC needs is the only copy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import numpy as np
from google.protobuf.message import DecodeError

from frameserve.api.grpc.generated import grpc_service_pb2 as pb
from frameserve.datatypes import (
    BYTES,
    DATATYPES,
    MAX_DIMS,
    deserialize_bytes,
    element_count,
    element_size,
    serialize_bytes,
    to_numpy,
)
from frameserve.errors import InvalidInput, ModelExecutionError, PayloadTooLarge
from frameserve.serving.types import InferRequest, InferResponse, InputTensor


class SharedMemoryAccess(Protocol):
    """What the codec needs of ``frameserve.api.shm.SharedMemoryRegistry``."""

    def read(self, name: str, offset: int, byte_size: int) -> memoryview: ...

    def write(self, name: str, offset: int, data: bytes | bytearray | memoryview) -> None: ...


@dataclass(frozen=True, slots=True)
class SharedMemoryPlacement:
    """Where a requested output goes instead of ``raw_output_contents``."""

    region: str
    offset: int
    byte_size: int


@dataclass(slots=True)
class DecodedInferRequest:
    """A request for the serving layer plus the outputs the client wants in shared memory."""

    request: InferRequest
    shm_outputs: dict[str, SharedMemoryPlacement] = field(default_factory=dict)


def _wire_key(message: Any, name: str) -> int:
    return int(message.DESCRIPTOR.fields_by_name[name].number) << 3 | 2  # length-delimited


_RAW_INPUT_KEY: Final = _wire_key(pb.ModelInferRequest, "raw_input_contents")
_RAW_OUTPUT_TAG: Final = bytes([_wire_key(pb.ModelInferResponse, "raw_output_contents")])
_STREAM_RESPONSE_TAG: Final = bytes([_wire_key(pb.ModelStreamInferResponse, "infer_response")])

# Typed ``contents`` field for each datatype (Triton's table; FP16/BF16 have none).
_CONTENTS_FIELD: Final = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
_ALL_CONTENTS_FIELDS: Final = tuple(pb.InferTensorContents.DESCRIPTOR.fields_by_name)
_SHM_PARAMS: Final = ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset")


# -- wire level ---------------------------------------------------------------------------------
def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while shift < 64:
        if pos >= len(data):
            raise InvalidInput("ModelInferRequest: expected a complete message, got truncated data")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
    raise InvalidInput("ModelInferRequest: expected a varint of at most 10 bytes, got more")


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def split_infer_request(data: bytes) -> tuple[pb.ModelInferRequest, list[memoryview]]:
    """Parse a serialised ``ModelInferRequest``, keeping ``raw_input_contents`` as views.

    Returns the message without its raw contents and one zero-copy view per raw entry.
    """
    view = memoryview(data)
    raw: list[memoryview] = []
    rest: list[memoryview] = []
    pos = kept_from = 0
    end = len(data)
    while pos < end:
        start = pos
        key = data[pos]  # field keys below 16 take one byte; longer ones go the slow way
        key, pos = (key, pos + 1) if key < 0x80 else _read_varint(data, pos)
        wire_type = key & 7
        if wire_type == 2:
            size = data[pos] if pos < end else 0x80
            size, pos = (size, pos + 1) if size < 0x80 else _read_varint(data, pos)
            if pos + size > end:
                raise InvalidInput(
                    f"ModelInferRequest: field {key >> 3} declares {size} bytes at offset {pos}, "
                    f"but only {end - pos} remain"
                )
            if key == _RAW_INPUT_KEY:
                rest.append(view[kept_from:start])
                raw.append(view[pos : pos + size])
                kept_from = pos + size
            pos += size
        elif wire_type == 0:
            _, pos = _read_varint(data, pos)
        elif wire_type in (1, 5):
            pos += 8 if wire_type == 1 else 4
        else:
            raise InvalidInput(
                f"ModelInferRequest: expected wire types 0, 1, 2 or 5, got {wire_type} "
                f"for field {key >> 3}"
            )
    if pos > end:
        raise InvalidInput("ModelInferRequest: expected a complete message, got truncated data")
    try:
        if not raw:
            return pb.ModelInferRequest.FromString(data), raw
        rest.append(view[kept_from:])
        return pb.ModelInferRequest.FromString(b"".join(rest)), raw
    except DecodeError as err:
        raise InvalidInput(f"ModelInferRequest: not a valid protobuf message: {err}") from None


# -- parameters ---------------------------------------------------------------------------------
def parameter_value(param: pb.InferParameter, where: str) -> bool | int | float | str:
    """The Python value of an ``InferParameter``; InvalidInput when none is set."""
    choice = param.WhichOneof("parameter_choice")
    if choice is None:
        raise InvalidInput(f"{where}: expected one of bool/int64/uint64/double/string, got none")
    return getattr(param, choice)  # type: ignore[no-any-return]


def set_parameter(param: pb.InferParameter, value: object, where: str) -> None:
    """Store a Python value in an ``InferParameter`` (bool, int, float or str)."""
    if isinstance(value, bool):
        param.bool_param = value
    elif isinstance(value, int):
        if value >= 2**63:
            param.uint64_param = value
        else:
            param.int64_param = value
    elif isinstance(value, float):
        param.double_param = value
    elif isinstance(value, str):
        param.string_param = value
    else:
        raise ModelExecutionError(
            f"{where}: expected a bool, int, float or str parameter, got {type(value).__name__}"
        )


def _non_negative_int(params: Mapping[str, pb.InferParameter], key: str, where: str) -> int:
    param = params[key]
    choice = param.WhichOneof("parameter_choice")
    if choice not in ("int64_param", "uint64_param"):
        raise InvalidInput(f"{where}['{key}']: expected int64_param, got {choice or 'none'}")
    value: int = getattr(param, choice)
    if value < 0:
        raise InvalidInput(f"{where}['{key}']: expected a value >= 0, got {value}")
    return value


def _request_parameters(message: pb.ModelInferRequest, request: InferRequest) -> None:
    params = message.parameters
    for key in params:
        if key == "priority":
            request.priority = _non_negative_int(params, key, "parameters")
        elif key == "timeout":
            request.timeout_us = _non_negative_int(params, key, "parameters")
        else:
            request.parameters[key] = parameter_value(params[key], f"parameters['{key}']")


def _shared_memory(
    params: Mapping[str, pb.InferParameter], where: str
) -> SharedMemoryPlacement | None:
    """The placement named by ``shared_memory_*`` parameters, or None when there is none."""
    if "shared_memory_region" not in params:
        for key in _SHM_PARAMS[1:]:
            if key in params:
                raise InvalidInput(
                    f"{where}.parameters['{key}']: expected 'shared_memory_region' with it, "
                    "got no region"
                )
        return None
    region = params["shared_memory_region"]
    if region.WhichOneof("parameter_choice") != "string_param" or not region.string_param:
        raise InvalidInput(
            f"{where}.parameters['shared_memory_region']: expected a non-empty string_param, "
            f"got {region.WhichOneof('parameter_choice') or 'none'}"
        )
    if "shared_memory_byte_size" not in params:
        raise InvalidInput(
            f"{where}.parameters['shared_memory_byte_size']: expected the byte size of the "
            "shared memory window, got none"
        )
    byte_size = _non_negative_int(params, "shared_memory_byte_size", f"{where}.parameters")
    offset = 0
    if "shared_memory_offset" in params:
        offset = _non_negative_int(params, "shared_memory_offset", f"{where}.parameters")
    return SharedMemoryPlacement(region.string_param, offset, byte_size)


# -- inputs -------------------------------------------------------------------------------------
def _check_header(
    i: int, tensor: pb.ModelInferRequest.InferInputTensor, max_elements: int
) -> tuple[tuple[int, ...], int]:
    """Validate datatype and shape; the shape and its element count."""
    if tensor.datatype not in DATATYPES:
        raise InvalidInput(
            f"inputs[{i}].datatype: input {tensor.name!r} expects one of {sorted(DATATYPES)}, "
            f"got {tensor.datatype!r}"
        )
    shape = tuple(tensor.shape[:])  # slicing first is twice as fast on upb containers
    if len(shape) > MAX_DIMS:
        raise InvalidInput(
            f"inputs[{i}].shape: expected at most {MAX_DIMS} dimensions, got {len(shape)}"
        )
    if shape and min(shape) < 0:
        raise InvalidInput(
            f"inputs[{i}].shape: input {tensor.name!r} expects dims >= 0, got {list(shape)}"
        )
    count = element_count(shape)
    if count > max_elements:
        raise PayloadTooLarge(
            f"inputs[{i}].shape: input {tensor.name!r} may have at most {max_elements} "
            f"elements, got {count} (shape {list(shape)})"
        )
    return shape, count


def _from_buffer(
    buffer: memoryview, datatype: str, shape: tuple[int, ...], count: int, where: str
) -> np.ndarray:
    """A zero-copy array over ``buffer`` (BYTES: parsed elements), checked against the shape."""
    if datatype == BYTES:
        try:
            return deserialize_bytes(buffer, count, where).reshape(shape)
        except ValueError as err:
            raise InvalidInput(str(err)) from None
    expected = count * element_size(datatype)
    if buffer.nbytes != expected:
        raise InvalidInput(
            f"{where}: expected {expected} bytes for {datatype} shape {list(shape)}, "
            f"got {buffer.nbytes}"
        )
    return np.frombuffer(buffer, dtype=to_numpy(datatype)).reshape(shape)


def _from_contents(
    tensor: pb.ModelInferRequest.InferInputTensor, shape: tuple[int, ...], count: int, where: str
) -> np.ndarray:
    """An array from typed ``contents`` (copies, as the typed path always has to)."""
    contents = tensor.contents
    expected = _CONTENTS_FIELD.get(tensor.datatype)
    given = [f for f in _ALL_CONTENTS_FIELDS if len(getattr(contents, f))]
    if expected is None or given != [expected]:
        wanted = expected or f"raw_input_contents ({tensor.datatype} has no typed contents)"
        raise InvalidInput(f"{where}.contents: expected {wanted}, got {' and '.join(given)}")
    values = getattr(contents, expected)
    if len(values) != count:
        raise InvalidInput(
            f"{where}.contents.{expected}: expected {count} values for shape {list(shape)}, "
            f"got {len(values)}"
        )
    if tensor.datatype == BYTES:
        array = np.empty(count, dtype=np.object_)
        array[:] = list(values)
        return array.reshape(shape)
    try:
        return np.array(values, dtype=to_numpy(tensor.datatype)).reshape(shape)
    except (OverflowError, ValueError) as err:
        raise InvalidInput(
            f"{where}.contents.{expected}: expected values that fit {tensor.datatype}, got {err}"
        ) from None


def _decode_input(
    i: int,
    tensor: pb.ModelInferRequest.InferInputTensor,
    raw: Sequence[memoryview],
    next_raw: int,
    max_elements: int,
    shm: SharedMemoryAccess | None,
) -> tuple[InputTensor, int]:
    """One input and the index of the next unused raw entry."""
    shape, count = _check_header(i, tensor, max_elements)
    params = tensor.parameters
    placement = _shared_memory(params, f"inputs[{i}]") if params else None
    has_contents = tensor.HasField("contents") and tensor.contents.ByteSize() > 0
    if placement is not None:
        if has_contents:
            raise InvalidInput(
                f"inputs[{i}].contents: input {tensor.name!r} uses shared memory, "
                "expected no contents"
            )
        data = _from_shm(shm, placement, tensor.datatype, shape, count, f"inputs[{i}]")
    elif has_contents:
        if raw:
            raise InvalidInput(
                f"inputs[{i}].contents: expected no typed contents when raw_input_contents "
                f"is used, got contents for input {tensor.name!r}"
            )
        data = _from_contents(tensor, shape, count, f"inputs[{i}]")
    elif next_raw < len(raw):
        where = f"raw_input_contents[{next_raw}] (input {tensor.name!r})"
        data = _from_buffer(raw[next_raw], tensor.datatype, shape, count, where)
        next_raw += 1
    elif count == 0:
        data = np.empty(shape, dtype=to_numpy(tensor.datatype))
    else:
        raise InvalidInput(
            f"inputs[{i}]: input {tensor.name!r} expects its data in raw_input_contents, "
            "contents or shared memory, got none"
        )
    return InputTensor(tensor.name, tensor.datatype, shape, data), next_raw


def decode_infer_request(
    message: pb.ModelInferRequest,
    raw: Sequence[memoryview],
    max_elements: int,
    shm: SharedMemoryAccess | None,
) -> DecodedInferRequest:
    """Turn a parsed request and its raw contents into an ``InferRequest``.

    Inputs take their data from shared memory, typed ``contents`` or, in order, the next
    ``raw_input_contents`` entry (as Triton does). Every problem raises ``InvalidInput`` (or
    ``PayloadTooLarge``) naming the field, the expected and the actual value.
    """
    inputs: list[InputTensor] = []
    next_raw = 0
    for i, tensor in enumerate(message.inputs):
        decoded, next_raw = _decode_input(i, tensor, raw, next_raw, max_elements, shm)
        inputs.append(decoded)
    if next_raw != len(raw):
        raise InvalidInput(
            f"raw_input_contents: expected {next_raw} entries (one per input without contents "
            f"or shared memory), got {len(raw)}"
        )
    names, shm_outputs, classification = _requested_outputs(message.outputs, shm)
    request = InferRequest(
        model_name=message.model_name,
        inputs=inputs,
        model_version=message.model_version,
        id=message.id,
        outputs=names or None,
        classification=classification,
    )
    if message.parameters:
        _request_parameters(message, request)
    return DecodedInferRequest(request, shm_outputs)


def _from_shm(
    shm: SharedMemoryAccess | None,
    placement: SharedMemoryPlacement,
    datatype: str,
    shape: tuple[int, ...],
    count: int,
    where: str,
) -> np.ndarray:
    if shm is None:
        raise InvalidInput(f"{where}.parameters: expected no shared memory here, got a region")
    field_name = f"{where}.parameters['shared_memory_*']"
    expected = count * element_size(datatype) if datatype != BYTES else placement.byte_size
    if placement.byte_size != expected:  # checked before reading: a read allocates its size
        raise InvalidInput(
            f"{field_name}: expected {expected} bytes for {datatype} shape {list(shape)}, "
            f"got {placement.byte_size}"
        )
    view = shm.read(placement.region, placement.offset, placement.byte_size)
    return _from_buffer(view, datatype, shape, count, field_name)


def _requested_outputs(
    outputs: Sequence[pb.ModelInferRequest.InferRequestedOutputTensor],
    shm: SharedMemoryAccess | None,
) -> tuple[list[str], dict[str, SharedMemoryPlacement], dict[str, int]]:
    """The requested output names, those of them that go to shared memory and those asked
    for as their top classes (``classification``: the class count)."""
    names: list[str] = []
    placements: dict[str, SharedMemoryPlacement] = {}
    classification: dict[str, int] = {}
    for j, output in enumerate(outputs):
        names.append(output.name)
        if not output.parameters:
            continue
        where = f"outputs[{j}]"
        if "classification" in output.parameters:
            count = _non_negative_int(output.parameters, "classification", f"{where}.parameters")
            if count:
                classification[output.name] = count
        placement = _shared_memory(output.parameters, where)
        if placement is not None:
            if shm is None:
                raise InvalidInput(f"{where}.parameters: expected no shared memory, got a region")
            if output.name in classification:
                raise InvalidInput(
                    f"{where}.parameters: expected classification or shared memory, got both"
                )
            placements[output.name] = placement
    return names, placements, classification


def parse_infer_request(
    data: bytes, max_elements: int, shm: SharedMemoryAccess | None
) -> DecodedInferRequest:
    """``split_infer_request`` + ``decode_infer_request`` for the received request bytes."""
    message, raw = split_infer_request(data)
    return decode_infer_request(message, raw, max_elements, shm)


# -- outputs ------------------------------------------------------------------------------------
def _output_buffer(
    name: str, datatype: str, shape: tuple[int, ...], array: np.ndarray
) -> memoryview:
    """The wire bytes of one output: a view of the array, or the BYTES serialisation."""
    if datatype == BYTES:
        return memoryview(serialize_bytes(array))
    expected = element_count(shape) * element_size(datatype)
    if array.nbytes != expected:
        raise ModelExecutionError(
            f"outputs '{name}': expected {expected} bytes for {datatype} shape {list(shape)}, "
            f"got {array.nbytes} ({array.dtype} {list(array.shape)})"
        )
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8).data


def _write_shm(
    shm: SharedMemoryAccess | None, name: str, placement: SharedMemoryPlacement, view: memoryview
) -> None:
    if view.nbytes > placement.byte_size:
        raise InvalidInput(
            f"outputs '{name}'.parameters['shared_memory_byte_size']: expected at least "
            f"{view.nbytes} bytes to hold the result, got {placement.byte_size}"
        )
    assert shm is not None, "a shared-memory output was decoded without a registry"
    shm.write(placement.region, placement.offset, view)


def encode_infer_response(
    response: InferResponse,
    shm_outputs: Mapping[str, SharedMemoryPlacement],
    shm: SharedMemoryAccess | None,
    *,
    stream: bool = False,
) -> bytes:
    """Serialise a ``ModelInferResponse`` (or, with ``stream``, a ``ModelStreamInferResponse``).

    Every output gets a ``raw_output_contents`` entry, empty when it went to shared memory, so
    clients can index raw contents by output position (as Triton does).
    """
    message = pb.ModelInferResponse(
        model_name=response.model_name, model_version=response.model_version, id=response.id
    )
    parts: list[bytes | memoryview] = [b""]
    body = 0
    for out in response.outputs:
        message.outputs.add(name=out.name, datatype=out.datatype, shape=out.shape)
        data = _output_buffer(out.name, out.datatype, out.shape, out.data)
        placement = shm_outputs.get(out.name)
        if placement is not None:
            _write_shm(shm, out.name, placement, data)
            data = memoryview(b"")
        size = data.nbytes
        length = _varint(size)
        parts += (_RAW_OUTPUT_TAG, length, data)
        body += 1 + len(length) + size
    for key, value in response.parameters.items():
        set_parameter(message.parameters[key], value, f"parameters['{key}']")
    head = message.SerializeToString()
    parts[0] = head
    if stream:
        parts[0:0] = (_STREAM_RESPONSE_TAG, _varint(len(head) + body))
    return b"".join(parts)


def encode_stream_error(message: str, request_id: str) -> bytes:
    """A ``ModelStreamInferResponse`` carrying an error and the id of the failed request."""
    response = pb.ModelStreamInferResponse(error_message=message)
    response.infer_response.id = request_id
    return response.SerializeToString()
