"""The gRPC codec: ModelInferRequest bytes -> InferRequest, InferResponse -> response bytes.

Requests are built with tritonclient's own request builder and message classes (the real
client), serialised, and decoded by frameserve's codec; responses are read back with
tritonclient's ``InferResult``. No server runs here.
"""

from __future__ import annotations

from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2 as client_pb
from tritonclient.grpc._utils import _get_inference_request

from frameserve.api.grpc import codec
from frameserve.api.grpc.generated import grpc_service_pb2 as pb
from frameserve.api.shm import SharedMemoryRegistry
from frameserve.datatypes import serialize_bytes
from frameserve.errors import InvalidInput, ModelExecutionError, PayloadTooLarge
from frameserve.serving.types import InferResponse, OutputTensor

MAX = 1_000_000


def client_request(
    inputs: list[grpcclient.InferInput],
    outputs: list[grpcclient.InferRequestedOutput] | None = None,
    *,
    request_id: str = "",
    priority: int = 0,
    timeout: int | None = None,
    parameters: dict | None = None,
) -> bytes:
    """The bytes tritonclient.grpc sends for ``infer(...)``."""
    message = _get_inference_request(
        model_name="m",
        inputs=inputs,
        model_version="",
        request_id=request_id,
        outputs=outputs,
        sequence_id=0,
        sequence_start=False,
        sequence_end=False,
        priority=priority,
        timeout=timeout,
        parameters=parameters,
    )
    return message.SerializeToString()


def infer_input(name: str, array: np.ndarray, datatype: str) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def decode(data: bytes, shm: SharedMemoryRegistry | None = None, max_elements: int = MAX):
    return codec.parse_infer_request(data, max_elements, shm)


# -- requests: raw_input_contents ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("datatype", "array"),
    [
        ("FP32", np.arange(12, dtype=np.float32).reshape(3, 4)),
        ("FP16", np.arange(6, dtype=np.float16).reshape(2, 3)),
        ("FP64", np.array([[1.5, -2.0]])),
        ("INT8", np.array([-128, 0, 127], dtype=np.int8)),
        ("UINT16", np.array([[1, 65535]], dtype=np.uint16)),
        ("INT64", np.array([-(2**62), 2**62], dtype=np.int64)),
        ("UINT64", np.array([2**64 - 1], dtype=np.uint64)),
        ("BOOL", np.array([[True, False, True]])),
        ("BYTES", np.array([b"frame", b"", b"\x00\xff"], dtype=np.object_)),
    ],
)
def test_raw_inputs_decode_to_arrays_of_the_declared_type(datatype: str, array: np.ndarray):
    data = client_request([infer_input("x", array, datatype)])

    decoded = decode(data).request

    (tensor,) = decoded.inputs
    assert (tensor.name, tensor.datatype, tensor.shape) == ("x", datatype, array.shape)
    assert tensor.data.dtype == array.dtype
    np.testing.assert_array_equal(tensor.data, array)


def test_raw_inputs_are_views_of_the_received_bytes():
    array = np.random.default_rng(0).random((2, 3, 8, 8), dtype=np.float32)
    data = client_request([infer_input("a", array, "FP32"), infer_input("b", array[0], "FP32")])

    a, b = decode(data).request.inputs

    received = np.frombuffer(data, dtype=np.uint8)
    assert np.shares_memory(a.data, received) and np.shares_memory(b.data, received)
    np.testing.assert_array_equal(b.data, array[0])


def test_bf16_raw_input_is_an_ml_dtypes_array():
    array = np.array([1.5, -2.0, 3.0], dtype=ml_dtypes.bfloat16)
    message = client_pb.ModelInferRequest(model_name="m")
    message.inputs.add(name="x", datatype="BF16", shape=[3])
    message.raw_input_contents.append(array.tobytes())

    (tensor,) = decode(message.SerializeToString()).request.inputs

    assert tensor.data.dtype == np.dtype(ml_dtypes.bfloat16)
    np.testing.assert_array_equal(tensor.data, array)


def test_request_fields_parameters_and_outputs():
    outputs = [grpcclient.InferRequestedOutput("y"), grpcclient.InferRequestedOutput("z")]
    data = client_request(
        [infer_input("x", np.zeros(2, np.float32), "FP32")],
        outputs,
        request_id="req-7",
        priority=2,
        timeout=1500,
        parameters={"max_inflight": 3, "mode": "fast", "scale": 0.5, "flag": True},
    )

    request = decode(data).request

    assert (request.model_name, request.model_version, request.id) == ("m", "", "req-7")
    assert (request.priority, request.timeout_us) == (2, 1500)
    assert request.outputs == ["y", "z"]
    assert request.parameters == {"max_inflight": 3, "mode": "fast", "scale": 0.5, "flag": True}


def test_no_requested_outputs_means_every_output():
    request = decode(client_request([infer_input("x", np.zeros(1, np.int32), "INT32")])).request
    assert request.outputs is None
    assert (request.priority, request.timeout_us, request.parameters) == (0, 0, {})


def test_split_keeps_every_field_but_the_raw_contents():
    data = client_request(
        [infer_input("x", np.ones(4, np.float32), "FP32")], request_id="9", priority=1
    )

    message, raw = codec.split_infer_request(data)

    full = pb.ModelInferRequest.FromString(data)
    assert [bytes(r) for r in raw] == list(full.raw_input_contents)
    full.ClearField("raw_input_contents")
    assert message == full


# -- requests: typed contents -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("datatype", "field", "values", "dtype"),
    [
        ("INT8", "int_contents", [-3, 4], np.int8),
        ("INT32", "int_contents", [-3, 4], np.int32),
        ("UINT8", "uint_contents", [0, 255], np.uint8),
        ("INT64", "int64_contents", [2**40, -1], np.int64),
        ("UINT64", "uint64_contents", [2**63, 1], np.uint64),
        ("FP32", "fp32_contents", [0.5, -1.25], np.float32),
        ("FP64", "fp64_contents", [0.1, 2.0], np.float64),
        ("BOOL", "bool_contents", [True, False], np.bool_),
        ("BYTES", "bytes_contents", [b"a", b"bc"], np.object_),
    ],
)
def test_typed_contents_decode(datatype: str, field: str, values: list, dtype: type):
    message = pb.ModelInferRequest(model_name="m")
    tensor = message.inputs.add(name="x", datatype=datatype, shape=[1, 2])
    getattr(tensor.contents, field).extend(values)

    (decoded,) = decode(message.SerializeToString()).request.inputs

    assert decoded.data.dtype == np.dtype(dtype)
    assert decoded.data.shape == (1, 2)
    assert decoded.data.ravel().tolist() == values


def typed_request(datatype: str, field: str, values: list, shape: list[int]) -> bytes:
    message = pb.ModelInferRequest(model_name="m")
    tensor = message.inputs.add(name="x", datatype=datatype, shape=shape)
    getattr(tensor.contents, field).extend(values)
    return message.SerializeToString()


def test_typed_contents_in_the_wrong_field_is_rejected():
    with pytest.raises(InvalidInput, match=r"inputs\[0\]\.contents: expected fp32_contents, got"):
        decode(typed_request("FP32", "int_contents", [1, 2], [2]))


def test_typed_contents_for_fp16_is_rejected():
    with pytest.raises(InvalidInput, match=r"expected raw_input_contents \(FP16 has no typed"):
        decode(typed_request("FP16", "fp32_contents", [1.0], [1]))


def test_typed_contents_count_must_match_the_shape():
    with pytest.raises(InvalidInput, match=r"fp32_contents: expected 6 values .* got 5"):
        decode(typed_request("FP32", "fp32_contents", [0.0] * 5, [2, 3]))


def test_typed_contents_out_of_range_are_rejected():
    with pytest.raises(InvalidInput, match=r"int_contents: expected values that fit INT8"):
        decode(typed_request("INT8", "int_contents", [300], [1]))


def test_mixing_raw_and_typed_contents_is_rejected():
    message = pb.ModelInferRequest(model_name="m")
    message.inputs.add(name="a", datatype="FP32", shape=[1])
    typed = message.inputs.add(name="b", datatype="FP32", shape=[1])
    typed.contents.fp32_contents.append(1.0)
    message.raw_input_contents.append(np.zeros(1, np.float32).tobytes())

    with pytest.raises(InvalidInput, match=r"inputs\[1\]\.contents: expected no typed contents"):
        decode(message.SerializeToString())


# -- requests: malformed ------------------------------------------------------------------------
def raw_request(*tensors: tuple[str, list[int], bytes]) -> pb.ModelInferRequest:
    message = pb.ModelInferRequest(model_name="m")
    for i, (datatype, shape, raw) in enumerate(tensors):
        message.inputs.add(name=f"in{i}", datatype=datatype, shape=shape)
        message.raw_input_contents.append(raw)
    return message


def test_wrong_byte_length_names_the_raw_entry_expected_and_actual():
    message = raw_request(("INT32", [2], bytes(8)), ("FP32", [2, 3], bytes(20)))
    with pytest.raises(
        InvalidInput,
        match=r"raw_input_contents\[1\] \(input 'in1'\): expected 24 bytes for FP32 "
        r"shape \[2, 3\], got 20",
    ):
        decode(message.SerializeToString())


def test_malformed_bytes_tensor_is_rejected():
    message = raw_request(("BYTES", [2], (5).to_bytes(4, "little") + b"abc"))
    with pytest.raises(InvalidInput, match=r"raw_input_contents\[0\] .*declares 5 bytes"):
        decode(message.SerializeToString())


def test_unknown_datatype_is_rejected():
    with pytest.raises(InvalidInput, match=r"inputs\[0\]\.datatype: .* got 'FLOAT'"):
        decode(raw_request(("FLOAT", [1], bytes(4))).SerializeToString())


def test_negative_dims_are_rejected():
    with pytest.raises(InvalidInput, match=r"inputs\[0\]\.shape: .*dims >= 0, got \[-1, 4\]"):
        decode(raw_request(("FP32", [-1, 4], bytes(16))).SerializeToString())


def test_more_raw_contents_than_inputs_is_rejected():
    message = raw_request(("FP32", [1], bytes(4)))
    message.raw_input_contents.append(bytes(4))
    with pytest.raises(InvalidInput, match=r"raw_input_contents: expected 1 entries .* got 2"):
        decode(message.SerializeToString())


def test_an_input_without_data_is_rejected():
    message = raw_request(("FP32", [1], bytes(4)))
    message.inputs.add(name="late", datatype="FP32", shape=[2])
    with pytest.raises(InvalidInput, match=r"inputs\[1\]: input 'late' expects its data"):
        decode(message.SerializeToString())


def test_an_empty_tensor_needs_no_data():
    message = pb.ModelInferRequest(model_name="m")
    message.inputs.add(name="x", datatype="FP32", shape=[0, 3])
    (tensor,) = decode(message.SerializeToString()).request.inputs
    assert tensor.data.shape == (0, 3)


def test_too_many_elements_is_payload_too_large():
    message = raw_request(("UINT8", [1000, 1001], b""))
    with pytest.raises(PayloadTooLarge, match=r"at most 1000000 elements, got 1001000"):
        decode(message.SerializeToString())


@pytest.mark.parametrize(
    ("name", "param", "match"),
    [
        ("priority", {"int64_param": -1}, r"parameters\['priority'\]: expected a value >= 0"),
        ("priority", {"string_param": "high"}, r"expected int64_param, got string_param"),
        ("timeout", {"double_param": 1.0}, r"parameters\['timeout'\]: expected int64_param"),
        ("other", {}, r"parameters\['other'\]: expected one of .* got none"),
    ],
)
def test_bad_parameters_are_rejected(name: str, param: dict, match: str):
    message = raw_request(("FP32", [1], bytes(4)))
    message.parameters[name].CopyFrom(pb.InferParameter(**param))
    with pytest.raises(InvalidInput, match=match):
        decode(message.SerializeToString())


def test_classification_is_carried_per_requested_output():
    outputs = [
        grpcclient.InferRequestedOutput("y", class_count=3),
        grpcclient.InferRequestedOutput("z"),
    ]
    data = client_request([infer_input("x", np.zeros(1, np.float32), "FP32")], outputs)
    assert decode(data).request.classification == {"y": 3}


def test_a_bad_class_count_names_the_parameter():
    message = raw_request(("FP32", [1], bytes(4)))
    output = message.outputs.add(name="y")
    output.parameters["classification"].string_param = "3"
    with pytest.raises(InvalidInput, match=r"outputs\[0\]\.parameters\['classification'\]"):
        decode(message.SerializeToString())


@pytest.mark.parametrize("cut", [1, 3, 10])
def test_truncated_messages_are_rejected(cut: int):
    data = client_request([infer_input("x", np.zeros(8, np.float32), "FP32")], request_id="r")
    with pytest.raises(InvalidInput, match="ModelInferRequest: "):
        decode(data[:-cut])


def test_garbage_is_rejected():
    with pytest.raises(InvalidInput, match="ModelInferRequest: "):
        decode(b"\x0b\xff\xff")


def test_unknown_fields_of_every_wire_type_are_skipped():
    data = client_request([infer_input("x", np.arange(3, dtype=np.int32), "INT32")])
    varint_field = bytes([0xA0, 0x06]) + bytes([0x96, 0x01])  # field 100, wire type 0
    fixed64_field = bytes([0xA9, 0x06]) + bytes(8)  # field 101, wire type 1
    fixed32_field = bytes([0xB5, 0x06]) + bytes(4)  # field 102, wire type 5

    (tensor,) = decode(varint_field + data + fixed64_field + fixed32_field).request.inputs

    np.testing.assert_array_equal(tensor.data, np.arange(3, dtype=np.int32))


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (bytes([0x0B]), "expected wire types 0, 1, 2 or 5, got 3"),  # a group
        (bytes([0x08]) + b"\xff" * 11, "varint of at most 10 bytes"),
        (bytes([0x08, 0xFF]), "truncated"),  # varint cut short
        (bytes([0x09]) + bytes(3), "truncated"),  # fixed64 cut short
        (bytes([0x2A, 0x02, 0xFF, 0xFF]), "not a valid protobuf message"),  # inputs[0] garbage
    ],
)
def test_malformed_wire_data_is_rejected(data: bytes, match: str):
    with pytest.raises(InvalidInput, match=f"ModelInferRequest: .*{match}"):
        decode(data)


def test_malformed_nested_message_next_to_raw_contents_is_rejected():
    data = raw_request(("FP32", [1], bytes(4))).SerializeToString()
    with pytest.raises(InvalidInput, match="not a valid protobuf message"):
        decode(data + bytes([0x32, 0x02, 0xFF, 0xFF]))  # outputs[0] garbage


def test_parameters_round_trip_through_python_values():
    param = pb.InferParameter()
    codec.set_parameter(param, 2**64 - 1, "big")
    assert param.WhichOneof("parameter_choice") == "uint64_param"
    assert codec.parameter_value(param, "big") == 2**64 - 1
    with pytest.raises(ModelExecutionError, match=r"meta: expected a bool, int, float or str"):
        codec.set_parameter(pb.InferParameter(), [1], "meta")


# -- shared memory ------------------------------------------------------------------------------
@pytest.fixture
def shm(tmp_path: Path) -> SharedMemoryRegistry:
    """The real registry over a folder in tmp_path instead of /dev/shm (same mmap code path)."""
    (tmp_path / "fs_region").write_bytes(bytes(256))
    registry = SharedMemoryRegistry(shm_dir=tmp_path)
    registry.register("region", "/fs_region", 0, 256)
    yield registry
    registry.close()


def test_input_from_shared_memory(shm: SharedMemoryRegistry):
    array = np.arange(6, dtype=np.int32).reshape(2, 3)
    shm.write("region", 64, array.tobytes())
    tensor = grpcclient.InferInput("x", [2, 3], "INT32")
    tensor.set_shared_memory("region", array.nbytes, offset=64)
    other = infer_input("y", np.ones(2, np.float32), "FP32")

    x, y = decode(client_request([tensor, other]), shm).request.inputs

    np.testing.assert_array_equal(x.data, array)
    np.testing.assert_array_equal(y.data, np.ones(2, np.float32))  # first raw entry is y's


def test_shared_memory_window_must_match_the_tensor(shm: SharedMemoryRegistry):
    tensor = grpcclient.InferInput("x", [2, 3], "INT32")
    tensor.set_shared_memory("region", 20)
    with pytest.raises(InvalidInput, match=r"expected 24 bytes for INT32 shape \[2, 3\], got 20"):
        decode(client_request([tensor]), shm)


def test_unknown_shared_memory_region_is_rejected(shm: SharedMemoryRegistry):
    tensor = grpcclient.InferInput("x", [1], "INT32")
    tensor.set_shared_memory("nope", 4)
    with pytest.raises(InvalidInput, match="no shared memory region 'nope'"):
        decode(client_request([tensor]), shm)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        (
            {"shared_memory_byte_size": {"int64_param": 4}},
            "expected 'shared_memory_region' with it",
        ),
        ({"shared_memory_region": {"int64_param": 1}}, "expected a non-empty string_param"),
        ({"shared_memory_region": {"string_param": "region"}}, "expected the byte size"),
        (
            {
                "shared_memory_region": {"string_param": "region"},
                "shared_memory_byte_size": {"int64_param": 4},
                "shared_memory_offset": {"int64_param": -4},
            },
            r"\['shared_memory_offset'\]: expected a value >= 0, got -4",
        ),
    ],
)
def test_shared_memory_parameters_are_checked(shm: SharedMemoryRegistry, params: dict, match: str):
    message = pb.ModelInferRequest(model_name="m")
    tensor = message.inputs.add(name="x", datatype="INT32", shape=[1])
    for key, value in params.items():
        tensor.parameters[key].CopyFrom(pb.InferParameter(**value))
    with pytest.raises(InvalidInput, match=match):
        decode(message.SerializeToString(), shm)


def test_shared_memory_and_contents_together_are_rejected(shm: SharedMemoryRegistry):
    message = pb.ModelInferRequest(model_name="m")
    tensor = message.inputs.add(name="x", datatype="INT32", shape=[1])
    tensor.parameters["shared_memory_region"].string_param = "region"
    tensor.parameters["shared_memory_byte_size"].int64_param = 4
    tensor.contents.int_contents.append(1)
    with pytest.raises(InvalidInput, match=r"inputs\[0\]\.contents: .* uses shared memory"):
        decode(message.SerializeToString(), shm)


def test_other_input_parameters_are_ignored():
    message = raw_request(("INT32", [1], bytes(4)))
    message.inputs[0].parameters["binary_data_size"].int64_param = 4
    (tensor,) = decode(message.SerializeToString()).request.inputs
    assert tensor.data.tolist() == [0]


def test_shared_memory_needs_a_registry():
    tensor = grpcclient.InferInput("x", [1], "INT32")
    tensor.set_shared_memory("region", 4)
    with pytest.raises(InvalidInput, match=r"inputs\[0\]\.parameters: expected no shared memory"):
        decode(client_request([tensor]), None)
    output = grpcclient.InferRequestedOutput("y")
    output.set_shared_memory("region", 4)
    data = client_request([infer_input("x", np.zeros(1, np.int32), "INT32")], [output])
    with pytest.raises(InvalidInput, match=r"outputs\[0\]\.parameters: expected no shared memory"):
        decode(data, None)


def test_outputs_to_shared_memory(shm: SharedMemoryRegistry):
    to_shm = grpcclient.InferRequestedOutput("a")
    to_shm.set_shared_memory("region", 128, offset=16)
    data = client_request(
        [infer_input("x", np.zeros(1, np.float32), "FP32")],
        [to_shm, grpcclient.InferRequestedOutput("b")],
    )
    decoded = decode(data, shm)
    assert decoded.shm_outputs == {"a": codec.SharedMemoryPlacement("region", 16, 128)}
    a, b = np.arange(4, dtype=np.float32), np.array([7, 8], dtype=np.int64)
    response = InferResponse(
        "m", "1", "", [OutputTensor("a", "FP32", (4,), a), OutputTensor("b", "INT64", (2,), b)]
    )

    encoded = codec.encode_infer_response(response, decoded.shm_outputs, shm)

    np.testing.assert_array_equal(np.frombuffer(shm.read("region", 16, 16), np.float32), a)
    result = grpcclient.InferResult(client_pb.ModelInferResponse.FromString(encoded))
    assert result.get_response().raw_output_contents[0] == b""  # keeps b at index 1, as Triton
    np.testing.assert_array_equal(result.as_numpy("b"), b)


def test_shared_memory_output_too_small_is_rejected(shm: SharedMemoryRegistry):
    placement = {"a": codec.SharedMemoryPlacement("region", 0, 8)}
    a = np.zeros(4, np.float32)
    response = InferResponse("m", "1", "", [OutputTensor("a", "FP32", (4,), a)])
    with pytest.raises(InvalidInput, match=r"expected at least 16 bytes .* got 8"):
        codec.encode_infer_response(response, placement, shm)


# -- responses ----------------------------------------------------------------------------------
def sample_response() -> InferResponse:
    boxes = np.arange(8, dtype=np.float32).reshape(2, 4)
    columns = np.arange(8, dtype=np.int64).reshape(2, 4)[:, ::2]  # not contiguous
    labels = np.array([b"face", b"person"], dtype=np.object_)
    return InferResponse(
        model_name="m",
        model_version="3",
        id="req-1",
        outputs=[
            OutputTensor("boxes", "FP32", (2, 4), boxes),
            OutputTensor("columns", "INT64", (2, 2), columns),
            OutputTensor("labels", "BYTES", (2,), labels),
            OutputTensor("mask", "BOOL", (3,), np.array([True, False, True])),
        ],
        parameters={"frames": 2, "source": "cam0", "fps": 29.97, "final": True},
    )


def test_response_reads_back_with_tritonclient():
    response = sample_response()

    encoded = codec.encode_infer_response(response, {}, None)

    result = grpcclient.InferResult(client_pb.ModelInferResponse.FromString(encoded))
    message = result.get_response()
    assert (message.model_name, message.model_version, message.id) == ("m", "3", "req-1")
    for out in response.outputs:
        np.testing.assert_array_equal(result.as_numpy(out.name), out.data)
    params = {k: codec.parameter_value(v, k) for k, v in message.parameters.items()}
    assert params == response.parameters


def test_response_matches_what_protobuf_would_write():
    response = sample_response()

    encoded = codec.encode_infer_response(response, {}, None)

    expected = pb.ModelInferResponse(model_name="m", model_version="3", id="req-1")
    for out in response.outputs:
        expected.outputs.add(name=out.name, datatype=out.datatype, shape=out.shape)
        raw = serialize_bytes(out.data) if out.datatype == "BYTES" else out.data.tobytes()
        expected.raw_output_contents.append(raw)
    for key, value in response.parameters.items():
        codec.set_parameter(expected.parameters[key], value, key)
    assert pb.ModelInferResponse.FromString(encoded) == expected


def test_bf16_and_large_outputs_round_trip():
    bf16 = np.array([1.5, -0.25], dtype=ml_dtypes.bfloat16)
    big = np.random.default_rng(1).random((3, 300, 300), dtype=np.float32)  # multi-byte lengths
    response = InferResponse(
        "m",
        "1",
        "",
        [OutputTensor("h", "BF16", (2,), bf16), OutputTensor("big", "FP32", big.shape, big)],
    )

    message = pb.ModelInferResponse.FromString(codec.encode_infer_response(response, {}, None))

    assert message.raw_output_contents[0] == bf16.tobytes()
    assert message.raw_output_contents[1] == big.tobytes()


def test_stream_response_wraps_the_same_message():
    response = sample_response()

    streamed = pb.ModelStreamInferResponse.FromString(
        codec.encode_infer_response(response, {}, None, stream=True)
    )

    assert streamed.error_message == ""
    plain = pb.ModelInferResponse.FromString(codec.encode_infer_response(response, {}, None))
    assert streamed.infer_response == plain


def test_stream_error_carries_the_request_id():
    message = pb.ModelStreamInferResponse.FromString(codec.encode_stream_error("bad input", "r9"))
    assert (message.error_message, message.infer_response.id) == ("bad input", "r9")
    assert len(message.infer_response.outputs) == 0


def test_output_whose_bytes_do_not_match_its_shape_is_a_model_error():
    wrong = OutputTensor("y", "FP32", (4,), np.zeros(4, np.float64))
    with pytest.raises(ModelExecutionError, match=r"outputs 'y': expected 16 bytes .* got 32"):
        codec.encode_infer_response(InferResponse("m", "1", "", [wrong]), {}, None)
