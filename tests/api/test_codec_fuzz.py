"""Property-based fuzzing of the HTTP and gRPC request decoders (hypothesis, fixed seed).

Every input either decodes or raises a FrameserveError that maps to a 4xx status; anything
else (a ValueError from numpy, a KeyError, an OverflowError, a crash) would reach a client as
a 500. The runs are derandomized (the same examples on every run) and bounded by
``max_examples``, so the file takes a few seconds.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pytest
import tritonclient.utils.shared_memory as triton_shm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from frameserve.api.grpc import codec as grpc_codec
from frameserve.api.grpc.generated import grpc_service_pb2 as pb
from frameserve.api.http import codec as http_codec
from frameserve.api.shm import SharedMemoryRegistry
from frameserve.api.status import http_status
from frameserve.datatypes import DATATYPES
from frameserve.errors import FrameserveError

FUZZ = settings(
    derandomize=True,
    max_examples=250,
    deadline=None,  # bounded by the example count; a shared 2-core machine makes timings noisy
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 1 << 20
    max_elements: int = 1 << 16
    max_json_bytes: int = 1 << 20


@pytest.fixture(scope="module")
def shm() -> Iterator[SharedMemoryRegistry]:
    """A registry with one real 64-byte region 'r', so shared-memory windows get exercised."""
    key = f"/frameserve_fuzz_{uuid.uuid4().hex[:12]}"
    handle = triton_shm.create_shared_memory_region("fuzz", key, 64)
    registry = SharedMemoryRegistry()
    registry.register("r", key, 0, 64)
    try:
        yield registry
    finally:
        registry.close()
        triton_shm.destroy_shared_memory_region(handle)


def only_client_errors(decode: Callable[[], object]) -> None:
    """Run ``decode``; a failure must be a FrameserveError with a 4xx status."""
    try:
        decode()
    except FrameserveError as err:
        assert 400 <= http_status(err) < 500, f"{type(err).__name__}: {err}"
        assert err.message, "an error must say what was wrong"


# -- values that broke decoders before: huge, negative, Unicode digits, wrong types -----------
NASTY_INTS = st.sampled_from([0, 1, -1, 2**31, 2**63, 2**64, 10**30, -(2**63) - 1])
NASTY_TEXT = st.sampled_from(["", "²", "٣", "1e3", "-0", " 1", "r", "x" * 300, "\0", "NaN"])
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    NASTY_INTS,
    st.integers(),
    st.floats(),
    NASTY_TEXT,
    st.text(max_size=8),
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
SHAPES = st.one_of(
    st.lists(st.integers(min_value=0, max_value=6), max_size=4),
    st.lists(NASTY_INTS, max_size=3),
    st.just([1] * 65),  # over numpy's 64 dimensions
    JSON_VALUES,
)
PARAM_KEYS = st.sampled_from(
    [
        "binary_data_size",
        "shared_memory_region",
        "shared_memory_offset",
        "shared_memory_byte_size",
        "classification",
        "binary_data",
        "priority",
        "timeout",
        "binary_data_output",
    ]
)
PARAM_VALUES = st.one_of(SCALARS, st.just("r"), st.integers(min_value=0, max_value=80))


@st.composite
def http_inputs(draw: st.DrawFn) -> dict[str, Any]:
    tensor: dict[str, Any] = {
        "name": draw(st.one_of(st.just("x"), JSON_VALUES)),
        "datatype": draw(st.one_of(st.sampled_from(sorted(DATATYPES)), JSON_VALUES)),
        "shape": draw(SHAPES),
    }
    if draw(st.booleans()):
        tensor["data"] = draw(JSON_VALUES)
    if draw(st.booleans()):
        tensor["parameters"] = draw(st.dictionaries(PARAM_KEYS, PARAM_VALUES, max_size=3))
    return tensor


@st.composite
def http_bodies(draw: st.DrawFn) -> tuple[bytes, str | None, str | None]:
    """A body, its Inference-Header-Content-Length and its Content-Encoding."""
    header: dict[str, Any] = {}
    if draw(st.booleans()):
        header["id"] = draw(st.one_of(st.text(max_size=8), JSON_VALUES))
    header["inputs"] = draw(st.one_of(st.lists(http_inputs(), max_size=3), JSON_VALUES))
    if draw(st.booleans()):
        header["outputs"] = draw(
            st.one_of(
                st.lists(
                    st.fixed_dictionaries(
                        {"name": st.one_of(st.just("y"), JSON_VALUES)},
                        optional={
                            "parameters": st.dictionaries(PARAM_KEYS, PARAM_VALUES, max_size=3)
                        },
                    ),
                    max_size=2,
                ),
                JSON_VALUES,
            )
        )
    if draw(st.booleans()):
        header["parameters"] = draw(st.dictionaries(PARAM_KEYS, PARAM_VALUES, max_size=3))
    text = orjson.dumps(header, option=orjson.OPT_NON_STR_KEYS) if _jsonable(header) else b"{}"
    binary = draw(st.binary(max_size=64))
    length = draw(st.one_of(st.none(), st.just(str(len(text))), NASTY_TEXT, st.integers().map(str)))
    body = text + binary if length is not None else text
    if draw(st.integers(0, 9)) == 0:  # now and then, cut or corrupt the body
        body = body[: draw(st.integers(0, len(body)))] + draw(st.binary(max_size=4))
    encoding = draw(st.sampled_from([None, None, None, "gzip", "deflate", "br", "²"]))
    return body, length, encoding


def _jsonable(value: object) -> bool:
    try:
        orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:  # integers beyond 64 bits: sent as text below instead
        return False
    return True


@FUZZ
@given(case=http_bodies())
def test_http_decoder_answers_client_errors_only(
    case: tuple[bytes, str | None, str | None], shm: SharedMemoryRegistry
) -> None:
    body, length, encoding = case
    only_client_errors(
        lambda: http_codec.decode_infer_request(
            body, "m", "", header_length=length, content_encoding=encoding, limits=Limits(), shm=shm
        )
    )


@FUZZ
@given(body=st.binary(max_size=200), length=st.one_of(st.none(), st.integers(0, 200).map(str)))
def test_http_decoder_on_arbitrary_bytes(
    body: bytes, length: str | None, shm: SharedMemoryRegistry
) -> None:
    only_client_errors(
        lambda: http_codec.decode_infer_request(
            body, "m", "", header_length=length, content_encoding=None, limits=Limits(), shm=shm
        )
    )


@FUZZ
@given(text=st.text(max_size=40).map(str.encode) | st.binary(max_size=40))
def test_http_json_objects(text: bytes) -> None:
    only_client_errors(lambda: http_codec.parse_json_object(text))


# -- gRPC ----------------------------------------------------------------------------------------
def _set_params(params: Any, values: dict[str, Any]) -> None:
    for key, value in values.items():
        if isinstance(value, bool):
            params[key].bool_param = value
        elif isinstance(value, int) and -(2**63) <= value < 2**63:
            params[key].int64_param = value
        elif isinstance(value, int) and 0 <= value < 2**64:
            params[key].uint64_param = value
        elif isinstance(value, float):
            params[key].double_param = value
        elif isinstance(value, str):
            params[key].string_param = value


GRPC_PARAMS = st.dictionaries(PARAM_KEYS, PARAM_VALUES, max_size=3)


@st.composite
def grpc_requests(draw: st.DrawFn) -> bytes:
    message = pb.ModelInferRequest(model_name="m", id=draw(st.text(max_size=6)))
    _set_params(message.parameters, draw(GRPC_PARAMS))
    for _ in range(draw(st.integers(0, 2))):
        tensor = message.inputs.add()
        tensor.name = draw(st.sampled_from(["x", "", "y"]))
        tensor.datatype = draw(st.one_of(st.sampled_from(sorted(DATATYPES)), st.text(max_size=5)))
        dims = draw(
            st.one_of(
                st.lists(st.integers(-2, 6), max_size=4),
                st.lists(st.integers(-(2**63), 2**63 - 1), max_size=3),
                st.just([1] * 65),
            )
        )
        tensor.shape.extend(dims)
        _set_params(tensor.parameters, draw(GRPC_PARAMS))
        contents = draw(st.sampled_from(["none", "fp32", "int", "bytes", "bool"]))
        if contents == "fp32":
            tensor.contents.fp32_contents.extend(draw(st.lists(st.floats(width=32), max_size=8)))
        elif contents == "int":
            tensor.contents.int_contents.extend(
                draw(st.lists(st.integers(-(2**31), 2**31 - 1), max_size=8))
            )
        elif contents == "bytes":
            tensor.contents.bytes_contents.extend(draw(st.lists(st.binary(max_size=6), max_size=4)))
        elif contents == "bool":
            tensor.contents.bool_contents.extend(draw(st.lists(st.booleans(), max_size=8)))
    for _ in range(draw(st.integers(0, 3))):
        message.raw_input_contents.append(draw(st.binary(max_size=40)))
    for _ in range(draw(st.integers(0, 1))):
        output = message.outputs.add()
        output.name = draw(st.sampled_from(["y", "", "x"]))
        _set_params(output.parameters, draw(GRPC_PARAMS))
    data = message.SerializeToString()
    if draw(st.integers(0, 4)) == 0:  # mutate the wire bytes: cut, or overwrite a byte
        cut = draw(st.integers(0, len(data)))
        data = data[:cut] + draw(st.binary(max_size=3)) + data[cut + 1 :]
    return data


@FUZZ
@given(data=grpc_requests())
def test_grpc_decoder_answers_client_errors_only(data: bytes, shm: SharedMemoryRegistry) -> None:
    only_client_errors(lambda: grpc_codec.parse_infer_request(data, Limits.max_elements, shm))


@FUZZ
@given(data=st.binary(max_size=200))
def test_grpc_decoder_on_arbitrary_bytes(data: bytes, shm: SharedMemoryRegistry) -> None:
    only_client_errors(lambda: grpc_codec.parse_infer_request(data, Limits.max_elements, shm))


def test_known_crashers_are_client_errors(shm: SharedMemoryRegistry) -> None:
    """Inputs that once answered 500, kept as fixed regressions beside the fuzzing."""
    deep = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1] * 65, "data": [1.0]}]}
    listed = {"inputs": [{"name": "x", "datatype": [], "shape": []}]}  # found by fuzzing
    bodies = [(orjson.dumps(deep), None), (orjson.dumps(listed), None), (b"{}", "²"), (b"{}", "٣")]
    for body, length in bodies:
        only_client_errors(
            lambda b=body, n=length: http_codec.decode_infer_request(
                b, "m", "", header_length=n, content_encoding=None, limits=Limits(), shm=shm
            )
        )
    message = pb.ModelInferRequest(model_name="m")
    tensor = message.inputs.add(name="x", datatype="FP32")
    tensor.shape.extend([1] * 65)
    message.raw_input_contents.append(np.zeros(1, np.float32).tobytes())
    data = message.SerializeToString()
    only_client_errors(lambda: grpc_codec.parse_infer_request(data, Limits.max_elements, shm))
