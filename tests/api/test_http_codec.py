"""The HTTP codec against the real tritonclient request builder and response parser.

Bodies are made by ``tritonclient.http`` itself (the same functions ``InferenceServerClient.infer``
calls) and responses are read back with its ``InferResult``, so these tests pin wire
compatibility without a running server.
"""

from __future__ import annotations

import gzip
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import ml_dtypes
import numpy as np
import orjson
import pytest
import tritonclient.http as triton_http
import tritonclient.utils.shared_memory as triton_shm
from tritonclient.http._utils import _get_inference_request

from frameserve.api.http import codec
from frameserve.api.http import response as encoding
from frameserve.api.http.body import check_header_length
from frameserve.api.shm import SharedMemoryRegistry
from frameserve.errors import InvalidInput, NotSupported, PayloadTooLarge
from frameserve.serving.types import InferResponse, OutputTensor


@dataclass(frozen=True)
class Limits:
    """Stands in for ``serving.server.RequestLimits`` (the fields the codec reads)."""

    max_body_bytes: int = 1 << 24
    max_elements: int = 1 << 20
    max_json_bytes: int = 1 << 20


SAMPLES: dict[str, np.ndarray] = {
    "BOOL": np.array([[True, False, True], [False, False, True]]),
    "UINT8": np.array([[0, 1, 255], [7, 8, 9]], dtype=np.uint8),
    "UINT16": np.array([[0, 1, 65535], [7, 8, 9]], dtype=np.uint16),
    "UINT32": np.array([[0, 1, 2**32 - 1], [7, 8, 9]], dtype=np.uint32),
    "UINT64": np.array([[0, 1, 2**64 - 1], [7, 8, 9]], dtype=np.uint64),
    "INT8": np.array([[-128, 0, 127], [7, 8, 9]], dtype=np.int8),
    "INT16": np.array([[-32768, 0, 32767], [7, 8, 9]], dtype=np.int16),
    "INT32": np.array([[-(2**31), 0, 2**31 - 1], [7, 8, 9]], dtype=np.int32),
    "INT64": np.array([[-(2**63), 0, 2**63 - 1], [7, 8, 9]], dtype=np.int64),
    "FP16": np.array([[0.5, -1.25, 65504.0], [7, 8, 9]], dtype=np.float16),
    "FP32": np.array([[0.5, -1.25, 3.4e38], [7, 8, 9]], dtype=np.float32),
    "FP64": np.array([[0.5, -1.25, 1e300], [7, 8, 9]], dtype=np.float64),
    "BF16": np.array([[0.5, -1.25, 3.0e38], [7, 8, 9]], dtype=ml_dtypes.bfloat16),
    "BYTES": np.array([[b"a", b"", "é".encode()], [b"xyz", b"7", b"8"]], dtype=np.object_),
}
# tritonclient refuses to send BF16 as JSON (there is no JSON form of it).
JSON_SAMPLES = [dt for dt in SAMPLES if dt != "BF16"]


def build_body(
    inputs: list[triton_http.InferInput],
    outputs: list[triton_http.InferRequestedOutput] | None = None,
    **kw: object,
) -> tuple[bytes, str | None]:
    """The body and Inference-Header-Content-Length tritonclient.http would send."""
    args = {"request_id": "", "sequence_id": 0, "sequence_start": False, "sequence_end": False}
    args |= {"priority": 0, "timeout": None, "custom_parameters": None} | kw
    body, json_size = _get_inference_request(inputs=inputs, outputs=outputs, **args)
    return body, (None if json_size is None else str(json_size))


def tensor(name: str, datatype: str, data: np.ndarray, binary: bool) -> triton_http.InferInput:
    t = triton_http.InferInput(name, list(data.shape), datatype)
    t.set_data_from_numpy(data, binary_data=binary)
    return t


def decode(
    body: bytes | str, header_length: str | None = None, **kw: object
) -> codec.DecodedRequest:
    raw = body.encode() if isinstance(body, str) else body
    args: dict[str, object] = {"content_encoding": None, "limits": Limits(), "shm": None} | kw
    return codec.decode_infer_request(raw, "m", "", header_length=header_length, **args)  # type: ignore[arg-type]


def read_back(encoded: encoding.EncodedResponse) -> triton_http.InferResult:
    return triton_http.InferResult.from_response_body(
        encoded.body, header_length=encoded.header_length
    )


def assert_same(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape
    if expected.dtype == np.object_:
        assert [bytes(x) for x in actual.reshape(-1)] == list(expected.reshape(-1))
    else:
        assert actual.dtype == expected.dtype
        np.testing.assert_array_equal(actual, expected)


# -- requests ----------------------------------------------------------------------------------


@pytest.mark.parametrize("datatype", list(SAMPLES))
def test_binary_input_round_trip(datatype: str) -> None:
    data = SAMPLES[datatype]
    body, header_length = build_body([tensor("x", datatype, data, binary=True)])
    assert header_length is not None
    decoded = decode(body, header_length)
    (inp,) = decoded.request.inputs
    assert (inp.name, inp.datatype, inp.shape) == ("x", datatype, data.shape)
    assert_same(inp.data, data)


@pytest.mark.parametrize("datatype", JSON_SAMPLES)
def test_json_input_round_trip(datatype: str) -> None:
    data = SAMPLES[datatype]
    body, header_length = build_body([tensor("x", datatype, data, binary=False)])
    assert header_length is None
    (inp,) = decode(body).request.inputs
    assert_same(inp.data, data)


def test_bf16_json_input_from_numbers() -> None:
    body = '{"inputs":[{"name":"x","datatype":"BF16","shape":[2],"data":[0.5,-2]}]}'
    (inp,) = decode(body).request.inputs
    assert inp.data.dtype == ml_dtypes.bfloat16
    assert inp.data.tolist() == [0.5, -2.0]


def test_nested_json_data_is_accepted() -> None:
    body = '{"inputs":[{"name":"x","datatype":"INT32","shape":[2,2],"data":[[1,2],[3,4]]},'
    body += '{"name":"s","datatype":"BYTES","shape":[2,1],"data":[["a"],["b"]]}]}'
    x, s = decode(body).request.inputs
    assert x.data.tolist() == [[1, 2], [3, 4]] and x.data.dtype == np.int32
    assert s.data.tolist() == [[b"a"], [b"b"]]


def test_binary_inputs_are_read_only_views_of_the_body() -> None:
    data = np.arange(12, dtype=np.float32)
    body, header_length = build_body([tensor("x", "FP32", data, binary=True)])
    (inp,) = decode(body, header_length).request.inputs
    assert not inp.data.flags.owndata and not inp.data.flags.writeable


def test_mixed_binary_and_json_inputs_take_bytes_in_input_order() -> None:
    a, b = np.arange(3, dtype=np.int64), np.arange(5, dtype=np.uint8)
    inputs = [
        tensor("a", "INT64", a, binary=True),
        tensor("j", "FP32", np.ones(2, np.float32), binary=False),
        tensor("b", "UINT8", b, binary=True),
    ]
    body, header_length = build_body(inputs)
    got = {t.name: t.data for t in decode(body, header_length).request.inputs}
    assert_same(got["a"], a)
    assert_same(got["b"], b)
    assert_same(got["j"], np.ones(2, np.float32))


def test_request_fields_and_parameters() -> None:
    outputs = [triton_http.InferRequestedOutput("y", binary_data=False)]
    body, header_length = build_body(
        [tensor("x", "FP32", np.ones(1, np.float32), binary=True)],
        outputs,
        request_id="req-7",
        priority=2,
        timeout=1500,
        custom_parameters={"tenant": "video", "level": 3},
    )
    decoded = decode(body, header_length)
    request = decoded.request
    assert (request.model_name, request.model_version, request.id) == ("m", "", "req-7")
    assert (request.priority, request.timeout_us, request.outputs) == (2, 1500, ["y"])
    assert request.parameters == {"tenant": "video", "level": 3}
    assert decoded.outputs["y"] == codec.OutputOptions(binary=False)
    assert decoded.binary_output is False


def test_no_requested_outputs_means_all_outputs_in_binary() -> None:
    body, header_length = build_body([tensor("x", "FP32", np.ones(1, np.float32), binary=True)])
    decoded = decode(body, header_length)
    assert decoded.request.outputs is None and decoded.binary_output is True


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_compressed_request_bodies(encoding: str) -> None:
    data = np.arange(100, dtype=np.int32)
    body, header_length = build_body([tensor("x", "INT32", data, binary=True)])
    packed = gzip.compress(body) if encoding == "gzip" else zlib.compress(body)
    (inp,) = decode(packed, header_length, content_encoding=encoding).request.inputs
    assert_same(inp.data, data)


# -- responses ---------------------------------------------------------------------------------


def response_of(*tensors: tuple[str, str, np.ndarray]) -> InferResponse:
    outputs = [OutputTensor(n, dt, tuple(a.shape), a) for n, dt, a in tensors]
    return InferResponse("m", "1", "req-1", outputs)


@pytest.mark.parametrize("datatype", list(SAMPLES))
@pytest.mark.parametrize("binary", [True, False])
def test_output_round_trip(datatype: str, binary: bool) -> None:
    data = SAMPLES[datatype]
    decoded = codec.DecodedRequest(None, {"y": codec.OutputOptions(binary=binary)})  # type: ignore[arg-type]
    encoded = encoding.encode_infer_response(response_of(("y", datatype, data)), decoded, None)
    assert (encoded.header_length is not None) == binary
    result = read_back(encoded)
    assert result.get_response()["id"] == "req-1"
    got = result.as_numpy("y")
    assert got is not None
    if binary or datatype not in ("BF16", "BYTES"):
        assert_same(got, data)
    elif datatype == "BF16":  # JSON numbers, read back as tritonclient's BF16 dtype
        np.testing.assert_array_equal(got.astype(np.float32), data.astype(np.float32))
    else:  # JSON strings come back as str
        assert got.tolist() == [[x.decode() for x in row] for row in data.tolist()]


def test_binary_data_output_is_the_default_and_outputs_can_override_it() -> None:
    decoded = codec.DecodedRequest(
        None,  # type: ignore[arg-type]
        {"j": codec.OutputOptions(binary=False), "b": codec.OutputOptions()},
        binary_output=True,
    )
    a = np.arange(4, dtype=np.float32)
    encoded = encoding.encode_infer_response(
        response_of(("j", "FP32", a), ("b", "FP32", a), ("other", "FP32", a)), decoded, None
    )
    header = orjson.loads(encoded.body[: encoded.header_length])
    by_name = {o["name"]: o for o in header["outputs"]}
    assert by_name["j"]["data"] == [0.0, 1.0, 2.0, 3.0]
    assert by_name["b"]["parameters"] == {"binary_data_size": 16}
    assert by_name["other"]["parameters"] == {"binary_data_size": 16}
    assert encoded.content_type == codec.BINARY_CONTENT_TYPE


def test_json_response_has_no_header_length() -> None:
    decoded = codec.DecodedRequest(None)  # type: ignore[arg-type]
    encoded = encoding.encode_infer_response(
        response_of(("y", "INT8", np.array([[1, 2]], np.int8))), decoded, None
    )
    assert encoded.header_length is None and encoded.content_type == codec.JSON_CONTENT_TYPE
    body = orjson.loads(encoded.body)
    assert body["outputs"] == [{"name": "y", "datatype": "INT8", "shape": [1, 2], "data": [1, 2]}]
    assert body["model_version"] == "1"


def test_non_utf8_bytes_output_falls_back_to_binary() -> None:
    data = np.array([b"\xff\xfe", b"ok"], dtype=np.object_)
    decoded = codec.DecodedRequest(None, {"y": codec.OutputOptions(binary=False)})  # type: ignore[arg-type]
    encoded = encoding.encode_infer_response(response_of(("y", "BYTES", data)), decoded, None)
    assert encoded.header_length is not None
    assert read_back(encoded).as_numpy("y").tolist() == [b"\xff\xfe", b"ok"]


# -- shared memory -----------------------------------------------------------------------------


@pytest.fixture
def region() -> Iterator[tuple[SharedMemoryRegistry, object]]:
    """A real POSIX region made by tritonclient, registered as 'io' (64 bytes)."""
    key = f"/frameserve_codec_{uuid.uuid4().hex[:12]}"
    handle = triton_shm.create_shared_memory_region("io", key, 64)
    registry = SharedMemoryRegistry()
    registry.register("io", key, 0, 64)
    try:
        yield registry, handle
    finally:
        registry.close()
        triton_shm.destroy_shared_memory_region(handle)


def test_shared_memory_input_and_output(region: tuple[SharedMemoryRegistry, object]) -> None:
    registry, handle = region
    data = np.arange(4, dtype=np.float32)
    triton_shm.set_shared_memory_region(handle, [data], offset=16)
    inp = triton_http.InferInput("x", [4], "FP32")
    inp.set_shared_memory("io", 16, offset=16)
    out = triton_http.InferRequestedOutput("y")
    out.set_shared_memory("io", 16, offset=32)
    body, header_length = build_body([inp], [out])
    decoded = decode(body, header_length, shm=registry)
    assert_same(decoded.request.inputs[0].data, data)

    encoded = encoding.encode_infer_response(
        response_of(("y", "FP32", data * 3)), decoded, registry
    )
    header = orjson.loads(encoded.body)
    assert "data" not in header["outputs"][0] and encoded.header_length is None
    got = triton_shm.get_contents_as_numpy(handle, np.float32, [4], offset=32)
    np.testing.assert_array_equal(got, data * 3)


def test_shared_memory_output_too_small(region: tuple[SharedMemoryRegistry, object]) -> None:
    registry, _ = region
    window = codec.ShmWindow("io", 0, 8)
    decoded = codec.DecodedRequest(None, {"y": codec.OutputOptions(shm=window)})  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match=r"shared_memory_byte_size.*needs 16 bytes, got 8"):
        encoding.encode_infer_response(
            response_of(("y", "FP32", np.ones(4, np.float32))), decoded, registry
        )


SHM_REGION, SHM_SIZE = "shared_memory_region", "shared_memory_byte_size"


def shm_input(params: dict[str, object], data: list[float] | None = None) -> str:
    spec: dict[str, object] = {"name": "x", "datatype": "FP32", "shape": [4], "parameters": params}
    if data is not None:
        spec["data"] = data
    return orjson.dumps({"inputs": [spec]}).decode()


@pytest.mark.parametrize(
    ("params", "data", "pattern"),
    [
        pytest.param(
            {SHM_REGION: "io"},
            None,
            r"inputs\[0\]\.parameters\.shared_memory_byte_size: expected a byte size",
            id="no size",
        ),
        pytest.param(
            {SHM_REGION: "io", SHM_SIZE: 8},
            None,
            r"shared_memory_byte_size: shape \[4\] of FP32 needs 16 bytes, got 8",
            id="size mismatch",
        ),
        pytest.param(
            {SHM_REGION: "nope", SHM_SIZE: 16},
            None,
            r"shared_memory_region: no shared memory region 'nope' is registered",
            id="unknown region",
        ),
        pytest.param(
            {SHM_REGION: "io", SHM_SIZE: 16},
            [1, 2, 3, 4],
            r"inputs\[0\]\.data: expected no data with shared_memory_region 'io'",
            id="data as well",
        ),
        pytest.param(
            {SHM_REGION: "io", SHM_SIZE: 16, "shared_memory_offset": 56},
            None,
            r"within region 'io' of 64 bytes, got offset 56 \+ byte size 16",
            id="past the end",
        ),
    ],
)
def test_shared_memory_input_errors(
    region: tuple[SharedMemoryRegistry, object],
    params: dict[str, object],
    data: list[float] | None,
    pattern: str,
) -> None:
    with pytest.raises(InvalidInput, match=pattern):
        decode(shm_input(params, data), shm=region[0])


def test_shared_memory_needs_a_registry() -> None:
    with pytest.raises(NotSupported, match=r"shared_memory_region: shared memory is not enabled"):
        decode(shm_input({SHM_REGION: "io", SHM_SIZE: 16}))


# -- malformed requests ------------------------------------------------------------------------


def one_input(**fields: object) -> str:
    spec = {"name": "x", "datatype": "FP32", "shape": [2], "data": [1.0, 2.0]} | fields
    return orjson.dumps({"inputs": [spec]}).decode()


def bad(case_id: str, body: str, pattern: str, header_length: str | None = None) -> object:
    return pytest.param(body, header_length, pattern, id=case_id)


DUPLICATE = orjson.dumps({"inputs": [orjson.loads(one_input())["inputs"][0]] * 2}).decode()
NO_DATATYPE = '{"inputs": [{"name": "x", "shape": [1], "data": [1]}]}'
NO_SHAPE = '{"inputs": [{"name": "x", "datatype": "FP32", "data": [1]}]}'
NO_DATA = '{"inputs": [{"name": "x", "datatype": "FP32", "shape": [2]}]}'
SHAPE_ERR = r"inputs\[0\]\.shape: expected a list of non-negative integers, got "
DATA = r"inputs\[0\]\.data: "
MALFORMED = [
    bad("bad json", '{"inputs": [', r"request body: expected a JSON object, got malformed JSON"),
    bad("not an object", "[1, 2]", r"request body: expected a JSON object, got list"),
    bad("no inputs", "{}", r"inputs: expected a list of input tensors, got None"),
    bad("input not object", '{"inputs": [3]}', r"inputs\[0\]: expected a JSON object, got 3"),
    bad("no name", one_input(name=None), r"inputs\[0\]\.name: expected a non-empty string"),
    bad(
        "bad datatype", one_input(datatype="FP8"), r"inputs\[0\]\.datatype: expected one of .*'FP8'"
    ),
    bad("no datatype", NO_DATATYPE, r"inputs\[0\]\.datatype: expected one of .*got None"),
    bad("no shape", NO_SHAPE, SHAPE_ERR + "None"),
    bad("shape not list", one_input(shape=2), SHAPE_ERR + "2"),
    bad("negative dim", one_input(shape=[-1, 2]), SHAPE_ERR + r"\[-1, 2\]"),
    bad("float dim", one_input(shape=[2.0]), SHAPE_ERR + r"\[2\.0\]"),
    bad("bool dim", one_input(shape=[True]), SHAPE_ERR + r"\[True\]"),
    bad("too few values", one_input(shape=[3]), DATA + r"shape \[3\] needs 3 elements, got 2"),
    bad(
        "too many values", one_input(data=[1, 2, 3]), DATA + r"shape \[2\] needs 2 elements, got 3"
    ),
    bad("ragged", one_input(shape=[3], data=[[1, 2], [3]]), DATA + "expected a flat or evenly"),
    bad(
        "str in FP32", one_input(data=["a", "b"]), DATA + r"expected FP32 values, got \['a', 'b'\]"
    ),
    bad("float in INT32", one_input(datatype="INT32", data=[1.5, 2]), DATA + "expected INT32"),
    bad("out of range", one_input(datatype="UINT8", data=[1, 256]), DATA + "expected UINT8"),
    bad("number in BOOL", one_input(datatype="BOOL", data=[1, 0]), DATA + "expected BOOL"),
    bad("int in BYTES", one_input(datatype="BYTES", data=["a", 1]), DATA + "expected strings"),
    bad("no data", NO_DATA, r"inputs\[0\]: input 'x' has no data"),
    bad("duplicate input", DUPLICATE, r"inputs\[1\]\.name: input 'x' is given twice"),
    bad("bad id", '{"id": 5, "inputs": []}', r"id: expected a string, got 5"),
    bad(
        "bad priority",
        '{"parameters": {"priority": -1}, "inputs": []}',
        r"parameters\.priority: expected an integer >= 0, got -1",
    ),
    bad(
        "bad timeout",
        '{"parameters": {"timeout": "1s"}, "inputs": []}',
        r"parameters\.timeout: expected an integer >= 0, got '1s'",
    ),
    bad(
        "bad binary_data_output",
        '{"parameters": {"binary_data_output": 1}, "inputs": []}',
        r"parameters\.binary_data_output: expected a boolean, got 1",
    ),
    bad("outputs not list", '{"inputs": [], "outputs": {}}', r"outputs: expected a list"),
    bad(
        "output no name",
        '{"inputs": [], "outputs": [{}]}',
        r"outputs\[0\]\.name: expected a non-empty string",
    ),
    bad(
        "output twice",
        '{"inputs": [], "outputs": [{"name": "y"}, {"name": "y"}]}',
        r"outputs\[1\]\.name: output 'y' is requested twice",
    ),
    bad(
        "output bad binary",
        '{"inputs": [], "outputs": [{"name": "y", "parameters": {"binary_data": "yes"}}]}',
        r"outputs\[0\]\.parameters\.binary_data: expected a boolean",
    ),
    bad(
        "header length not int",
        one_input(),
        r"Inference-Header-Content-Length: expected a non-negative integer, got 'abc'",
        header_length="abc",
    ),
    bad(
        "header length too big",
        one_input(),
        r"Inference-Header-Content-Length: header length 9999 is larger than the body \(\d+ bytes",
        header_length="9999",
    ),
]


@pytest.mark.parametrize(("body", "header_length", "pattern"), MALFORMED)
def test_malformed_requests_name_the_field(
    body: str, header_length: str | None, pattern: str
) -> None:
    with pytest.raises(InvalidInput, match=pattern):
        decode(body, header_length)


def test_classification_is_carried_per_requested_output() -> None:
    # tritonclient.http's InferRequestedOutput(class_count=3) writes "classification": 3
    body = (
        '{"inputs": [], "outputs": [{"name": "y", "parameters": {"classification": 3}},'
        ' {"name": "z"}]}'
    )
    assert decode(body).request.classification == {"y": 3}


@pytest.mark.parametrize(
    ("params", "pattern"),
    [
        ('{"classification": "3"}', r"outputs\[0\]\.parameters\.classification"),
        ('{"classification": -1}', r"outputs\[0\]\.parameters\.classification"),
        (
            '{"classification": 2, "shared_memory_region": "r", "shared_memory_byte_size": 8}',
            r"outputs\[0\]\.parameters: expected classification or shared memory, got both",
        ),
    ],
)
def test_bad_classification_requests_name_the_field(params: str, pattern: str) -> None:
    body = '{"inputs": [], "outputs": [{"name": "y", "parameters": ' + params + "}]}"
    with pytest.raises(InvalidInput, match=pattern):
        decode(body)


def binary_request(
    size: int, data: bytes, datatype: str = "FP32", shape: tuple[int, ...] = (4,)
) -> tuple[bytes, str]:
    """A body with one binary input that declares ``size`` bytes and carries ``data``."""
    params = {"binary_data_size": size}
    spec = {"name": "x", "datatype": datatype, "shape": list(shape), "parameters": params}
    header = orjson.dumps({"inputs": [spec]})
    return header + data, str(len(header))


def test_truncated_binary_body() -> None:
    body, header_length = binary_request(16, b"\0" * 10)
    with pytest.raises(
        InvalidInput, match=r"binary_data_size: expected 16 bytes .* only 10 remain"
    ):
        decode(body, header_length)


def test_binary_size_must_match_the_shape() -> None:
    body, header_length = binary_request(8, b"\0" * 8)
    with pytest.raises(
        InvalidInput, match=r"binary_data_size: shape \[4\] of FP32 needs 16 bytes, got 8"
    ):
        decode(body, header_length)


def test_unclaimed_binary_bytes() -> None:
    body, header_length = binary_request(16, b"\0" * 20)
    with pytest.raises(InvalidInput, match=r"Inference-Header-Content-Length: inputs use 16 bytes"):
        decode(body, header_length)


def test_malformed_binary_bytes_tensor() -> None:
    data = (3).to_bytes(4, "little") + b"abc" + b"\x01\x00"  # element 1 is cut short
    body, header_length = binary_request(len(data), data, datatype="BYTES", shape=(2,))
    with pytest.raises(InvalidInput, match=r"binary_data_size: BYTES element 1 needs a 4-byte"):
        decode(body, header_length)


def test_body_over_the_limit() -> None:
    with pytest.raises(
        PayloadTooLarge, match=r"request body: \d+ bytes exceeds the limit of 10 bytes"
    ):
        decode(one_input(), limits=Limits(max_body_bytes=10))


def test_elements_over_the_limit() -> None:
    body = one_input(shape=[1000, 1000], data=[])
    with pytest.raises(
        PayloadTooLarge, match=r"inputs\[0\]\.shape: input 'x' has 1000000 elements.*limit of 1000"
    ):
        decode(body, limits=Limits(max_elements=1000))


def test_json_over_the_limit_is_refused_before_parsing() -> None:
    body = one_input()
    with pytest.raises(
        PayloadTooLarge,
        match=rf"request body: JSON of {len(body)} bytes exceeds the limit of 20 bytes "
        r"\(max_json_bytes, --max-json-mb\)",
    ):
        decode(body, limits=Limits(max_json_bytes=20))


def test_binary_header_over_the_json_limit() -> None:
    header = b'{"inputs": []}' + b" " * 100
    with pytest.raises(
        PayloadTooLarge, match=r"Inference-Header-Content-Length header part: JSON of 114 bytes"
    ):
        decode(header + b"\0" * 8, header_length=str(len(header)), limits=Limits(max_json_bytes=50))
    with pytest.raises(PayloadTooLarge, match=r"Inference-Header-Content-Length: JSON of 114"):
        check_header_length("114", 50)
    check_header_length("not a number", 50)  # left to the decoder's own message


def test_decompressed_body_over_the_limit() -> None:
    bomb = gzip.compress(b" " * 100_000)
    with pytest.raises(
        PayloadTooLarge, match=r"decompressed size exceeds the limit of 50000 bytes"
    ):
        decode(bomb, content_encoding="gzip", limits=Limits(max_body_bytes=50_000))


@pytest.mark.parametrize(
    ("encoding", "body", "pattern"),
    [
        ("br", b"{}", r"Content-Encoding: expected gzip, deflate or identity, got 'br'"),
        ("gzip", b"not gzip", r"Content-Encoding: body is not valid gzip data"),
        (
            "gzip",
            gzip.compress(b'{"inputs": []}')[:-6],
            r"Content-Encoding: gzip body is truncated",
        ),
    ],
)
def test_bad_content_encoding(encoding: str, body: bytes, pattern: str) -> None:
    with pytest.raises(InvalidInput, match=pattern):
        decode(body, content_encoding=encoding)
