"""KServe v2 HTTP bodies <-> ``InferRequest`` / ``InferResponse``.

A request body is a JSON header optionally followed by raw tensor bytes (Triton's binary tensor
extension): ``Inference-Header-Content-Length`` says where the JSON ends, and every input whose
``parameters.binary_data_size`` is set takes that many bytes, in input order. Inputs may instead
carry JSON ``data`` or name a registered shared-memory region. Binary inputs become read-only
zero-copy numpy views of the body; shared-memory inputs are copies read with a size check
(``api/shm.py``). Responses are encoded by ``api/http/response.py``.
Every malformed request raises ``InvalidInput`` (``PayloadTooLarge`` for limits) naming the
field, the expected and the actual value.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import numpy as np
import orjson

from frameserve.api.http.body import HEADER_LENGTH, check_json_size
from frameserve.api.shm import SharedMemoryRegistry
from frameserve.datatypes import (
    BYTES,
    DATATYPES,
    MAX_DIMS,
    deserialize_bytes,
    element_count,
    to_numpy,
)
from frameserve.errors import InvalidInput, NotSupported, PayloadTooLarge
from frameserve.serving.types import InferRequest, InputTensor

JSON_CONTENT_TYPE: Final = "application/json"
BINARY_CONTENT_TYPE: Final = "application/octet-stream"

_SHM_REGION: Final = "shared_memory_region"
SHM_SIZE: Final = "shared_memory_byte_size"
_SHM_OFFSET: Final = "shared_memory_offset"
# Request parameters that describe the wire format or map to InferRequest fields.
_WIRE_PARAMETERS: Final = frozenset({"priority", "timeout", "binary_data_output"})
# numpy kinds a JSON array may parse to, per datatype family ("b" bool, "i"/"u" int, "f" float).
_FLOAT_KINDS: Final = frozenset("iuf")
_INT_KINDS: Final = frozenset("iu")


class Limits(Protocol):
    """The request limits the codec enforces (``frameserve.serving.server.RequestLimits``)."""

    @property
    def max_body_bytes(self) -> int: ...

    @property
    def max_elements(self) -> int: ...

    @property
    def max_json_bytes(self) -> int: ...


@dataclass(frozen=True, slots=True)
class ShmWindow:
    """Where a tensor lies in a registered shared-memory region (Triton's ``shared_memory_*``)."""

    region: str
    offset: int
    byte_size: int


@dataclass(frozen=True, slots=True)
class OutputOptions:
    """How one requested output travels back: binary, JSON or into a shared-memory region."""

    binary: bool | None = None  # None: follow the request's binary_data_output
    shm: ShmWindow | None = None
    classification: int = 0  # > 0: the top classes instead of the tensor (Triton's extension)


@dataclass(slots=True)
class DecodedRequest:
    """A decoded request plus what the encoder needs to answer it in the asked-for format."""

    request: InferRequest
    outputs: dict[str, OutputOptions] = field(default_factory=dict)
    binary_output: bool = False  # the request's parameters.binary_data_output


def _show(value: object, limit: int = 80) -> str:
    """A repr short enough for an error message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def decompress(body: bytes, content_encoding: str | None, limit: int) -> bytes:
    """Undo ``Content-Encoding: gzip|deflate``; PayloadTooLarge past ``limit`` decoded bytes."""
    encoding = (content_encoding or "").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding == "gzip":
        wbits = 16 + zlib.MAX_WBITS
    elif encoding == "deflate":
        # RFC 9110 "deflate" is the zlib format; some clients send a raw deflate stream.
        wbits = zlib.MAX_WBITS if body[:1] == b"\x78" else -zlib.MAX_WBITS
    else:
        raise InvalidInput(
            f"Content-Encoding: expected gzip, deflate or identity, got {content_encoding!r}"
        )
    inflater = zlib.decompressobj(wbits)
    try:
        # max_length bounds the memory a small "zip bomb" body can make us allocate.
        out = inflater.decompress(body, limit + 1)
    except zlib.error as err:
        raise InvalidInput(f"Content-Encoding: body is not valid {encoding} data: {err}") from None
    if len(out) > limit:
        raise PayloadTooLarge(
            f"request body: decompressed size exceeds the limit of {limit} bytes (max_body_bytes)"
        )
    if not inflater.eof or inflater.unused_data:
        raise InvalidInput(
            f"Content-Encoding: {encoding} body is truncated or has trailing bytes "
            f"({len(body)} bytes received)"
        )
    return out


def _split_body(body: bytes, header_length: str | None) -> tuple[memoryview, memoryview]:
    """The JSON header and the binary tensor section that follows it."""
    view = memoryview(body)
    if header_length is None:
        return view, view[len(view) :]
    text = header_length.strip()
    if not (text.isascii() and text.isdigit()):  # int() refuses '²', which isdigit() accepts
        raise InvalidInput(
            f"{HEADER_LENGTH}: expected a non-negative integer, got {header_length!r}"
        )
    n = int(text)
    if n > len(view):
        raise InvalidInput(
            f"{HEADER_LENGTH}: header length {n} is larger than the body ({len(view)} bytes)"
        )
    return view[:n], view[n:]


def parse_json_object(raw: bytes | memoryview) -> dict[str, Any]:
    """A JSON object from a request body, or InvalidInput saying what came instead."""
    try:
        header = orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        raise InvalidInput(
            f"request body: expected a JSON object, got malformed JSON ({err})"
        ) from None
    if not isinstance(header, dict):
        raise InvalidInput(f"request body: expected a JSON object, got {type(header).__name__}")
    return header


def _int_param(field_name: str, value: object, minimum: int = 0) -> int:
    if type(value) is not int or value < minimum:
        raise InvalidInput(f"{field_name}: expected an integer >= {minimum}, got {_show(value)}")
    return value


def _dict_field(field_name: str, value: object) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f"{field_name}: expected a JSON object, got {_show(value)}")
    return value


def _shape(field_name: str, value: object) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(type(d) is int and d >= 0 for d in value):
        raise InvalidInput(
            f"{field_name}: expected a list of non-negative integers, got {_show(value)}"
        )
    if len(value) > MAX_DIMS:
        raise InvalidInput(
            f"{field_name}: expected at most {MAX_DIMS} dimensions, got {len(value)}"
        )
    return tuple(value)


class _BinarySection:
    """The raw bytes after the JSON header, handed out to inputs in order."""

    def __init__(self, view: memoryview) -> None:
        self.view = view
        self.pos = 0

    def take(self, field_name: str, size: int) -> memoryview:
        remaining = len(self.view) - self.pos
        if size > remaining:
            raise InvalidInput(
                f"{field_name}: expected {size} bytes of binary tensor data at offset {self.pos} "
                f"after the JSON header, but only {remaining} remain (truncated body?)"
            )
        chunk = self.view[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def check_consumed(self) -> None:
        if self.pos != len(self.view):
            raise InvalidInput(
                f"{HEADER_LENGTH}: inputs use {self.pos} bytes of binary tensor data after the "
                f"JSON header, but the body has {len(self.view)}"
            )


def _from_buffer(
    field_name: str, buffer: memoryview, datatype: str, shape: tuple[int, ...], count: int
) -> np.ndarray:
    """A zero-copy array over ``buffer``, after checking its length against the shape."""
    if datatype == BYTES:
        try:
            return deserialize_bytes(buffer, count, field_name).reshape(shape)
        except ValueError as err:
            raise InvalidInput(str(err)) from None
    dtype = to_numpy(datatype)
    expected = count * dtype.itemsize
    if len(buffer) != expected:
        raise InvalidInput(
            f"{field_name}: shape {list(shape)} of {datatype} needs {expected} bytes, "
            f"got {len(buffer)}"
        )
    return np.frombuffer(buffer, dtype=dtype, count=count).reshape(shape)


def _strings(field_name: str, data: object) -> list[bytes]:
    """Flatten (nested) JSON lists of strings into UTF-8 bytes, without recursion."""
    out: list[bytes] = []
    stack = [iter(data if isinstance(data, list) else [data])]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            if not isinstance(item, str):
                raise InvalidInput(
                    f"{field_name}: expected strings for BYTES, got {type(item).__name__} "
                    f"{_show(item)}"
                )
            out.append(item.encode())
        else:
            stack.pop()
    return out


def _from_json(
    field_name: str, data: object, datatype: str, shape: tuple[int, ...], count: int
) -> np.ndarray:
    """An array of ``datatype`` from JSON ``data`` (flat or nested lists)."""
    if datatype == BYTES:
        items = _strings(field_name, data)
        _check_count(field_name, shape, count, len(items))
        array = np.empty(count, dtype=np.object_)
        array[:] = items
        return array.reshape(shape)
    dtype = to_numpy(datatype)
    try:
        raw = np.array(data)
        if datatype == "UINT64" and raw.dtype.kind == "f" and np.all(raw % 1 == 0):
            # numpy reads a mix of small ints and ints >= 2**63 as float64; read them exactly.
            raw = np.array(data, dtype=np.uint64)
    except (ValueError, TypeError, OverflowError) as err:
        raise InvalidInput(
            f"{field_name}: expected a flat or evenly nested list of {datatype} values ({err})"
        ) from None
    _check_count(field_name, shape, count, raw.size)
    if count:
        _check_json_values(field_name, raw, datatype, dtype)
    return raw.astype(dtype, copy=False).reshape(shape)


def _check_count(field_name: str, shape: tuple[int, ...], count: int, got: int) -> None:
    if got != count:
        raise InvalidInput(f"{field_name}: shape {list(shape)} needs {count} elements, got {got}")


def _check_json_values(field_name: str, raw: np.ndarray, datatype: str, dtype: np.dtype) -> None:
    """Refuse values the datatype cannot hold instead of letting numpy wrap or truncate them."""
    kind = dtype.kind
    if kind == "b":
        ok = raw.dtype.kind == "b"
    elif kind in _INT_KINDS:
        ok = raw.dtype.kind in _INT_KINDS
        if ok:
            info = np.iinfo(dtype)
            ok = int(raw.min()) >= info.min and int(raw.max()) <= info.max
    else:  # FP16, FP32, FP64, BF16
        ok = raw.dtype.kind in _FLOAT_KINDS
    if not ok:
        sample = raw.reshape(-1)[:4].tolist()
        raise InvalidInput(f"{field_name}: expected {datatype} values, got {_show(sample)}...")


def _decode_input(
    index: int,
    spec: object,
    binary: _BinarySection,
    limits: Limits,
    shm: SharedMemoryRegistry | None,
) -> InputTensor:
    where = f"inputs[{index}]"
    if not isinstance(spec, dict):
        raise InvalidInput(f"{where}: expected a JSON object, got {_show(spec)}")
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"{where}.name: expected a non-empty string, got {_show(name)}")
    datatype = spec.get("datatype")
    if not isinstance(datatype, str) or datatype not in DATATYPES:  # a list is unhashable
        raise InvalidInput(
            f"{where}.datatype: expected one of {sorted(DATATYPES)}, got {_show(datatype)}"
        )
    shape = _shape(f"{where}.shape", spec.get("shape"))
    count = element_count(shape)
    if count > limits.max_elements:
        raise PayloadTooLarge(
            f"{where}.shape: input {name!r} has {count} elements, more than the limit of "
            f"{limits.max_elements} (max_elements)"
        )
    params = _dict_field(f"{where}.parameters", spec.get("parameters"))
    if _SHM_REGION in params or SHM_SIZE in params:
        array = _shm_input(where, params, "data" in spec, datatype, shape, count, shm)
    elif "binary_data_size" in params:
        size_field = f"{where}.parameters.binary_data_size"
        size = _int_param(size_field, params["binary_data_size"])
        if "data" in spec:
            raise InvalidInput(f"{where}.data: expected no 'data' with binary_data_size, got both")
        array = _from_buffer(size_field, binary.take(size_field, size), datatype, shape, count)
    elif "data" in spec:
        array = _from_json(f"{where}.data", spec["data"], datatype, shape, count)
    else:
        raise InvalidInput(
            f"{where}: input {name!r} has no data: expected 'data', parameters.binary_data_size "
            f"or parameters.{_SHM_REGION}"
        )
    return InputTensor(name=name, datatype=datatype, shape=shape, data=array)


def _shm_input(
    where: str,
    params: dict[str, Any],
    has_data: bool,
    datatype: str,
    shape: tuple[int, ...],
    count: int,
    shm: SharedMemoryRegistry | None,
) -> np.ndarray:
    window = _shm_window(f"{where}.parameters", params)
    if has_data or "binary_data_size" in params:
        raise InvalidInput(
            f"{where}.data: expected no data with {_SHM_REGION} {window.region!r}, got some"
        )
    if shm is None:
        raise NotSupported(f"{where}.parameters.{_SHM_REGION}: shared memory is not enabled")
    field_name = f"{where}.parameters.{SHM_SIZE}"
    if datatype != BYTES:  # checked before reading: a read allocates what it is asked for
        expected = count * to_numpy(datatype).itemsize
        if window.byte_size != expected:
            raise InvalidInput(
                f"{field_name}: shape {list(shape)} of {datatype} needs {expected} bytes, "
                f"got {window.byte_size}"
            )
    view = shm.read(window.region, window.offset, window.byte_size)
    return _from_buffer(field_name, view, datatype, shape, count)


def _shm_window(where: str, params: dict[str, Any]) -> ShmWindow:
    """The ``shared_memory_*`` parameters; Triton requires the region and the size together."""
    region = params.get(_SHM_REGION)
    if not isinstance(region, str) or not region:
        raise InvalidInput(f"{where}.{_SHM_REGION}: expected a region name, got {_show(region)}")
    if SHM_SIZE not in params:
        raise InvalidInput(f"{where}.{SHM_SIZE}: expected a byte size with {_SHM_REGION}, got none")
    size = _int_param(f"{where}.{SHM_SIZE}", params[SHM_SIZE])
    offset = _int_param(f"{where}.{_SHM_OFFSET}", params.get(_SHM_OFFSET, 0))
    return ShmWindow(region, offset, size)


def _decode_outputs(raw: object) -> tuple[list[str] | None, dict[str, OutputOptions]]:
    if raw is None:
        return None, {}
    if not isinstance(raw, list):
        raise InvalidInput(f"outputs: expected a list of requested outputs, got {_show(raw)}")
    options: dict[str, OutputOptions] = {}
    for i, spec in enumerate(raw):
        where = f"outputs[{i}]"
        name = spec.get("name") if isinstance(spec, dict) else None
        if not isinstance(name, str) or not name:
            raise InvalidInput(f"{where}.name: expected a non-empty string, got {_show(spec)}")
        if name in options:
            raise InvalidInput(f"{where}.name: output {name!r} is requested twice")
        params = _dict_field(f"{where}.parameters", spec.get("parameters"))
        classes = _int_param(f"{where}.parameters.classification", params.get("classification", 0))
        binary = params.get("binary_data")
        if binary is not None and not isinstance(binary, bool):
            raise InvalidInput(
                f"{where}.parameters.binary_data: expected a boolean, got {_show(binary)}"
            )
        if _SHM_REGION in params or SHM_SIZE in params:
            if classes:
                raise InvalidInput(
                    f"{where}.parameters: expected classification or shared memory, got both"
                )
            options[name] = OutputOptions(shm=_shm_window(f"{where}.parameters", params))
        else:
            options[name] = OutputOptions(binary=binary, classification=classes)
    # An empty list asks for nothing in particular: every output, as when "outputs" is absent.
    return (list(options) or None), options


def _decode_inputs(
    raw: object, binary_part: memoryview, limits: Limits, shm: SharedMemoryRegistry | None
) -> list[InputTensor]:
    if not isinstance(raw, list):
        raise InvalidInput(f"inputs: expected a list of input tensors, got {_show(raw)}")
    binary = _BinarySection(binary_part)
    inputs: dict[str, InputTensor] = {}
    for i, spec in enumerate(raw):
        tensor = _decode_input(i, spec, binary, limits, shm)
        if tensor.name in inputs:
            raise InvalidInput(f"inputs[{i}].name: input {tensor.name!r} is given twice")
        inputs[tensor.name] = tensor
    binary.check_consumed()
    return list(inputs.values())


def decode_infer_request(
    body: bytes,
    model_name: str,
    model_version: str,
    *,
    header_length: str | None,
    content_encoding: str | None,
    limits: Limits,
    shm: SharedMemoryRegistry | None,
) -> DecodedRequest:
    """Decode a v2 ``POST .../infer`` body (JSON, or JSON + binary tensors) into a request."""
    if len(body) > limits.max_body_bytes:
        raise PayloadTooLarge(
            f"request body: {len(body)} bytes exceeds the limit of {limits.max_body_bytes} bytes "
            f"(max_body_bytes)"
        )
    body = decompress(body, content_encoding, limits.max_body_bytes)
    json_part, binary_part = _split_body(body, header_length)
    where = "request body" if header_length is None else f"{HEADER_LENGTH} header part"
    check_json_size(len(json_part), limits.max_json_bytes, where)
    header = parse_json_object(json_part)

    request_id = header.get("id", "")
    if not isinstance(request_id, str):
        raise InvalidInput(f"id: expected a string, got {_show(request_id)}")
    params = dict(_dict_field("parameters", header.get("parameters")))
    priority = _int_param("parameters.priority", params.get("priority", 0))
    timeout_us = _int_param("parameters.timeout", params.get("timeout", 0))
    binary_output = params.get("binary_data_output", False)
    if not isinstance(binary_output, bool):
        raise InvalidInput(
            f"parameters.binary_data_output: expected a boolean, got {_show(binary_output)}"
        )

    inputs = _decode_inputs(header.get("inputs"), binary_part, limits, shm)
    output_names, output_options = _decode_outputs(header.get("outputs"))

    request = InferRequest(
        model_name=model_name,
        inputs=inputs,
        model_version=model_version,
        id=request_id,
        outputs=output_names,
        priority=priority,
        timeout_us=timeout_us,
        parameters={k: v for k, v in params.items() if k not in _WIRE_PARAMETERS},
        classification={n: o.classification for n, o in output_options.items() if o.classification},
    )
    return DecodedRequest(request, output_options, binary_output)
