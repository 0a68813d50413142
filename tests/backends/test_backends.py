"""The backends with their real runtimes: OpenVINO, ONNX Runtime and user Python scripts.

Models are built with ``onnx.helper`` (``tests/models.py``, ``frameserve.tools.example_models``);
ONNX Runtime at f32 is the reference the OpenVINO results are compared with.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov
import pytest

from frameserve.backends import Backend, BackendSettings, TensorSpec, load_backend
from frameserve.backends.openvino import compile_properties
from frameserve.cpu import CpuBudget
from frameserve.errors import ConfigError, ModelExecutionError, ModelLoadError
from frameserve.serving.config import parse_model_config
from frameserve.tools.example_models import conv_net, matmul_relu

from models import identity, python_model, simple_add_sub

BUDGET = CpuBudget(2, "test")


def settings(
    path: Path, config: dict[str, Any], batch_dim: bool | None = None, budget: CpuBudget = BUDGET
) -> BackendSettings:
    cfg = parse_model_config(config, "test model.yaml")
    return BackendSettings("m", 1, path, cfg, budget, batch_dim)


@contextmanager
def loaded(path: Path, config: dict[str, Any], batch_dim: bool | None = None) -> Iterator[Any]:
    """A loaded backend, closed (its threads stopped) when the block ends."""
    backend = load_backend(settings(path, config, batch_dim))
    try:
        yield backend
    finally:
        backend.close()


def infer(backend: Backend, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    async def bounded() -> dict[str, np.ndarray]:
        return await asyncio.wait_for(backend.infer(batch), 30)

    return asyncio.run(bounded())


def load_error(path: Path, config: dict[str, Any], batch_dim: bool | None = None) -> str:
    with pytest.raises(ModelLoadError) as info, loaded(path, config, batch_dim):
        pass
    return str(info.value)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """conv_net and matmul_relu as ONNX, and each also saved as OpenVINO IR (model.xml/.bin)."""
    root = tmp_path_factory.mktemp("models")
    out: dict[str, Path] = {}
    for name, build in (("conv_net", conv_net), ("matmul_relu", matmul_relu)):
        onnx_path = build(root / name / "onnx" / "model.onnx")
        ir_dir = root / name / "ir"
        ir_dir.mkdir()
        # compress_to_fp16 defaults to True; keep f32 weights so the numbers can be compared
        ov.save_model(
            ov.Core().read_model(str(onnx_path)), str(ir_dir / "model.xml"), compress_to_fp16=False
        )
        out[f"{name}/onnx"] = onnx_path.parent
        out[f"{name}/ir"] = ir_dir
    return out


SAMPLES = {
    "conv_net": ("images", (2, 3, 224, 224), "logits"),
    "matmul_relu": ("x", (5, 64), "y"),
}


# -- OpenVINO ------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["matmul_relu", "conv_net"])
def test_openvino_onnx_and_ir_match_onnxruntime_at_f32(built: dict[str, Path], model: str) -> None:
    in_name, shape, out_name = SAMPLES[model]
    x = np.random.default_rng(7).normal(size=shape).astype(np.float32)
    with loaded(built[f"{model}/onnx"], {"backend": "onnxruntime"}) as ort_backend:
        reference = infer(ort_backend, {in_name: x})[out_name]
    assert reference.dtype == np.float32 and reference.shape[0] == shape[0]
    atol = 1e-4 * float(np.abs(reference).max())
    for form in ("onnx", "ir"):
        with loaded(built[f"{model}/{form}"], {"backend": "openvino", "precision": "f32"}) as b:
            assert b.platform == "openvino"
            assert b.inputs == (TensorSpec(in_name, "FP32", (-1, *shape[1:])),)
            assert b.outputs[0].name == out_name and b.outputs[0].datatype == "FP32"
            got = infer(b, {in_name: x})[out_name]
        np.testing.assert_allclose(got, reference, rtol=1e-4, atol=atol, err_msg=form)


def test_openvino_prefers_the_ir_when_both_files_exist(
    built: dict[str, Path], tmp_path: Path
) -> None:
    folder = tmp_path / "1"
    folder.mkdir()
    for f in built["matmul_relu/ir"].iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    (folder / "model.onnx").write_bytes(b"not a model")  # would fail if it were read
    with loaded(folder, {"backend": "openvino"}) as b:
        assert infer(b, {"x": np.ones((1, 64), np.float32)})["y"].shape == (1, 64)


def test_openvino_compile_properties_follow_the_config(built: dict[str, Path]) -> None:
    config = {
        "backend": "openvino",
        "instances": 2,
        "threads": 1,
        "precision": "f32",
        "performance_hint": "LATENCY",
    }
    with loaded(built["matmul_relu/onnx"], config) as b:
        c = b._compiled  # what OpenVINO actually compiled with
        assert int(c.get_property("NUM_STREAMS")) == 2
        assert int(c.get_property("INFERENCE_NUM_THREADS")) == 2  # instances * threads
        assert c.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
        assert str(c.get_property("PERFORMANCE_HINT")) == "LATENCY"
        assert b.max_concurrency == 2  # one infer request per stream
        text = b.describe()
        for part in ("device=CPU", "streams=2", "requests=2", "threads=2"):
            assert part in text, text
        # both requests run at once and give the right rows
        x = np.random.default_rng(0).normal(size=(4, 64)).astype(np.float32)

        async def two_at_once() -> list[dict[str, np.ndarray]]:
            return await asyncio.wait_for(
                asyncio.gather(b.infer({"x": x[:2]}), b.infer({"x": x[2:]})), 30
            )

        halves = asyncio.run(two_at_once())
        whole = infer(b, {"x": x})["y"]
        np.testing.assert_allclose(np.concatenate([h["y"] for h in halves]), whole, rtol=1e-5)


@pytest.mark.skipif(
    "BF16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"),
    reason="this CPU has no bf16 support, so OpenVINO keeps f32",
)
def test_openvino_bf16_precision_and_throughput_hint(built: dict[str, Path]) -> None:
    with loaded(built["matmul_relu/onnx"], {"backend": "openvino", "precision": "bf16"}) as b:
        c = b._compiled
        assert c.get_property("INFERENCE_PRECISION_HINT") == ov.Type.bf16
        assert str(c.get_property("PERFORMANCE_HINT")) == "THROUGHPUT"  # the default
        assert int(c.get_property("INFERENCE_NUM_THREADS")) == BUDGET.cores
        y = infer(b, {"x": np.ones((2, 64), np.float32)})["y"]
        assert y.dtype == np.float32  # precision is internal; the interface stays f32


def _props(config: dict[str, Any], budget: CpuBudget = BUDGET) -> dict[str, str]:
    return compile_properties(settings(Path("/models/m/1"), config, True, budget))


def test_compile_properties_from_config_and_budget() -> None:
    assert _props({"backend": "openvino"}) == {
        "PERFORMANCE_HINT": "THROUGHPUT",
        "INFERENCE_NUM_THREADS": "2",
    }
    # threads * instances, capped at the core budget
    assert (
        _props({"backend": "openvino", "instances": 3, "threads": 2})["INFERENCE_NUM_THREADS"]
        == "2"
    )
    big = CpuBudget(16, "test")
    p = _props({"backend": "openvino", "instances": 3, "threads": 2}, big)
    assert (p["NUM_STREAMS"], p["INFERENCE_NUM_THREADS"]) == ("3", "6")
    p = _props(
        {
            "backend": "openvino",
            "precision": "f16",
            "cache_dir": "cache",
            "openvino": {"enable_cpu_pinning": True, "properties": {"PERFORMANCE_HINT": "LATENCY"}},
        }
    )
    assert p["INFERENCE_PRECISION_HINT"] == "f16"
    assert p["CACHE_DIR"] == "/models/m/cache"  # relative to the model folder
    assert p["ENABLE_CPU_PINNING"] == "YES"
    assert p["PERFORMANCE_HINT"] == "LATENCY"  # explicit properties win
    assert _props({"backend": "openvino", "cache_dir": "/var/cache/ov"})["CACHE_DIR"] == (
        "/var/cache/ov"
    )


def test_compile_properties_for_other_devices_drop_cpu_only_ones() -> None:
    p = _props(
        {"backend": "openvino", "device": "GPU.1", "openvino": {"enable_cpu_pinning": False}}
    )
    assert "INFERENCE_NUM_THREADS" not in p and "ENABLE_CPU_PINNING" not in p
    assert p["PERFORMANCE_HINT"] == "THROUGHPUT"


def _allowed(status: str) -> str:
    found = re.search(r"Cpus_allowed_list:\s*(\S+)", status)
    assert found is not None
    return found.group(1)


def _allowed_cpus(prefix: str) -> set[str]:
    """The CPUs the live threads named ``prefix``... may run on, as the kernel lists them."""
    return {
        _allowed(Path(f"/proc/self/task/{t.native_id}/status").read_text())
        for t in threading.enumerate()
        if t.name.startswith(prefix)
    }


def test_inference_threads_run_on_the_budgets_cpus(tmp_path: Path) -> None:
    """A budget that names cpus (``video run`` with bound decoders) binds each inference
    thread as it starts; OpenVINO runs a one-thread stream on that thread. A budget that
    names none leaves them where the process may run. (With OpenVINO's own pinning on, it
    places the thread itself while it infers; the video zoo models turn it off.)"""
    simple_add_sub(tmp_path / "model.onnx", batch=1)
    first = sorted(os.sched_getaffinity(0))[0]
    config = {
        "backend": "openvino", "max_batch_size": 4, "instances": 2,
        "openvino": {"enable_cpu_pinning": False},
    }  # fmt: skip
    a = np.ones((2, 16), np.int32)
    for budget, expected in (
        (CpuBudget(1, "test", cpus=(first,)), str(first)),
        (CpuBudget(1, "test"), _allowed(Path("/proc/self/status").read_text())),
    ):
        backend = load_backend(settings(tmp_path, config, True, budget))
        try:
            out = infer(backend, {"INPUT0": a, "INPUT1": a})
            np.testing.assert_array_equal(out["OUTPUT0"], a + a)
            assert _allowed_cpus("ov-m") == {expected}
        finally:
            backend.close()


def test_openvino_gives_a_static_batch_model_a_dynamic_batch(tmp_path: Path) -> None:
    simple_add_sub(tmp_path / "model.onnx", batch=1)
    a = np.arange(48, dtype=np.int32).reshape(3, 16)
    b = np.full((3, 16), 5, np.int32)
    with loaded(tmp_path, {"backend": "openvino", "max_batch_size": 4}, batch_dim=True) as be:
        assert [s.shape for s in be.inputs] == [(-1, 16), (-1, 16)]
        out = infer(be, {"INPUT0": a, "INPUT1": b})
    np.testing.assert_array_equal(out["OUTPUT0"], a + b)
    np.testing.assert_array_equal(out["OUTPUT1"], a - b)
    # max_batch_size unset: the model file decides, and a static first dim stays static
    with loaded(tmp_path, {"backend": "openvino"}, batch_dim=None) as be:
        assert [s.shape for s in be.inputs] == [(1, 16), (1, 16)]


def test_openvino_static_batch_sizes_run_on_their_own_compiled_model(
    built: dict[str, Path],
) -> None:
    """A listed size starts on the dynamic model, then runs on its static copy once compiled;
    other sizes stay dynamic; the numbers agree throughout."""
    in_name, shape, out_name = SAMPLES["conv_net"]
    rng = np.random.default_rng(3)
    x2 = rng.normal(size=(2, *shape[1:])).astype(np.float32)
    x3 = rng.normal(size=(3, *shape[1:])).astype(np.float32)
    base = {"backend": "openvino", "precision": "f32", "max_batch_size": 4}
    with loaded(built["conv_net/onnx"], base, batch_dim=True) as dynamic:
        ref2, ref3 = (infer(dynamic, {in_name: x})[out_name] for x in (x2, x3))
    config = {**base, "openvino": {"static_batch_sizes": [2, 4]}}
    with loaded(built["conv_net/onnx"], config, batch_dim=True) as be:
        assert be.static_batches_ready == []
        first = infer(be, {in_name: x2})[out_name]  # the dynamic model; starts the compile
        deadline = time.monotonic() + 60
        while be.static_batches_ready != [2] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert be.static_batches_ready == [2]  # 4 was never asked for
        second = infer(be, {in_name: x2})[out_name]
        third = infer(be, {in_name: x3})[out_name]
        assert be.static_batches_ready == [2]
    atol = 1e-4 * float(np.abs(ref2).max())
    np.testing.assert_allclose(first, ref2, atol=atol)
    np.testing.assert_allclose(second, ref2, atol=atol)
    np.testing.assert_allclose(third, ref3, atol=atol)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"max_batch_size": 4, "openvino": {"static_batch_sizes": [0]}}, "greater than 0"),
        ({"max_batch_size": 4, "openvino": {"static_batch_sizes": [2, 2]}}, "distinct sizes"),
    ],
)
def test_static_batch_sizes_are_checked(fields: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(expected)):
        parse_model_config({"backend": "openvino", **fields}, "model.yaml")


def test_openvino_model_without_a_batch_dimension_cannot_batch(tmp_path: Path) -> None:
    identity(tmp_path / "model.onnx", "FP32", [])  # a scalar input
    msg = load_error(tmp_path, {"backend": "openvino", "max_batch_size": 4}, batch_dim=True)
    assert "INPUT0" in msg and "max_batch_size: 0" in msg


def test_openvino_unreadable_model_names_the_file_and_the_reason(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"\x00 definitely not a protobuf")
    msg = load_error(tmp_path, {"backend": "openvino"})
    assert str(tmp_path / "model.onnx") in msg
    # OpenVINO (pinned 2026.4.1) puts its reason after C++ source-location lines; the message
    # must carry the reason, not only "Exception from src/inference/src/cpp/core.cpp:84:".
    assert "Unable to read the model" in msg, msg


def test_openvino_bad_compile_property_names_the_reason(tmp_path: Path) -> None:
    matmul_relu(tmp_path / "model.onnx")
    msg = load_error(
        tmp_path, {"backend": "openvino", "openvino": {"properties": {"NUM_STREAMS": "many"}}}
    )
    assert str(tmp_path / "model.onnx") in msg and "'NUM_STREAMS': 'many'" in msg
    assert "Could not read number of streams" in msg, msg


def test_openvino_folder_without_a_model_file(tmp_path: Path) -> None:
    msg = load_error(tmp_path, {"backend": "openvino"})
    assert str(tmp_path) in msg and "model.xml" in msg and "model.onnx" in msg


def test_openvino_bad_input_is_a_model_execution_error(built: dict[str, Path]) -> None:
    with loaded(built["matmul_relu/onnx"], {"backend": "openvino"}) as b:
        with pytest.raises(ModelExecutionError, match="OpenVINO inference failed"):
            infer(b, {"x": np.ones((2, 63), np.float32)})
        # the infer request went back to the pool: the backend still works
        assert infer(b, {"x": np.ones((2, 64), np.float32)})["y"].shape == (2, 64)


# -- datatypes through both runtimes ------------------------------------------------------

IDENTITY_CASES = {
    "FP32": np.array([[1.5, -2.25, 3.0, 0.0]], np.float32),
    "FP16": np.array([[1.5, -2.25, 3.0, 65504.0]], np.float16),
    "INT8": np.array([[-128, -1, 0, 127]], np.int8),
    # OpenVINO's CPU plugin computes i64 as i32 (a runtime limit, documented by OpenVINO):
    # values beyond int32 would come back truncated, so these stay within it.
    "INT64": np.array([[-(2**31), -1, 0, 2**31 - 1]], np.int64),
    "UINT8": np.array([[0, 1, 128, 255]], np.uint8),
    "BOOL": np.array([[True, False, False, True]]),
    # how every front end hands BYTES to a backend: an object array of ``bytes``
    "BYTES": np.array([[b"a", b"", b"two words", "utf8 \u00e9".encode()]], dtype=object),
}


def _check_same(datatype: str, y: np.ndarray, x: np.ndarray) -> None:
    assert y.shape == x.shape
    if datatype == "BYTES":
        # str elements are allowed: the wire encoders send them as their UTF-8 bytes
        assert y.dtype.kind in ("O", "S")
        got = [v.encode() if isinstance(v, str) else bytes(v) for v in y.reshape(-1)]
        assert got == list(x.reshape(-1))
    else:
        assert y.dtype == x.dtype
        np.testing.assert_array_equal(y, x)


IDENTITY_RUNS = [
    pytest.param(runtime, datatype, id=f"{datatype}-{runtime}")
    for runtime in ("onnxruntime", "openvino")
    for datatype in IDENTITY_CASES
    # OpenVINO 2026.4.1 aborts the whole process (munmap_chunk: invalid pointer) when an infer
    # request that ran an Identity over strings is freed; its BYTES path is tested with a Concat
    # model in test_openvino_bytes_tensors instead.
    if not (runtime == "openvino" and datatype == "BYTES")
]


@pytest.mark.parametrize(("runtime", "datatype"), IDENTITY_RUNS)
def test_identity_round_trips_every_datatype(tmp_path: Path, runtime: str, datatype: str) -> None:
    identity(tmp_path / "model.onnx", datatype, ["N", 4])
    x = np.repeat(IDENTITY_CASES[datatype], 2, axis=0)
    with loaded(tmp_path, {"backend": runtime}) as b:
        assert b.inputs == (TensorSpec("INPUT0", datatype, (-1, 4)),)
        assert b.outputs == (TensorSpec("OUTPUT0", datatype, (-1, 4)),)
        y = infer(b, {"INPUT0": x})["OUTPUT0"]
    _check_same(datatype, y, x)


def _concat_strings(path: Path) -> Path:
    """``OUTPUT0`` [N,8] = ``INPUT0`` [N,4] twice, as ONNX string tensors."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Concat", ["INPUT0", "INPUT0"], ["OUTPUT0"], axis=1)],
        "concat_strings",
        [helper.make_tensor_value_info("INPUT0", TensorProto.STRING, ["N", 4])],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.STRING, ["N", 8])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def test_openvino_bytes_tensors(tmp_path: Path) -> None:
    _concat_strings(tmp_path / "model.onnx")
    x = np.repeat(IDENTITY_CASES["BYTES"], 2, axis=0)
    with loaded(tmp_path, {"backend": "openvino"}) as b:
        assert b.inputs == (TensorSpec("INPUT0", "BYTES", (-1, 4)),)
        y = infer(b, {"INPUT0": x})["OUTPUT0"]
    _check_same("BYTES", y, np.concatenate([x, x], axis=1))


# -- ONNX Runtime ----------------------------------------------------------------------------


def _session_threads(backend: Any) -> list[int]:
    """intra-op threads of every session in the backend's pool (they are all idle here)."""
    sessions = [backend._free.get() for _ in range(backend.max_concurrency)]
    for s in sessions:
        backend._free.put(s)
    return [int(s.get_session_options().intra_op_num_threads) for s in sessions]


def test_onnxruntime_instances_and_threads(built: dict[str, Path]) -> None:
    path = built["matmul_relu/onnx"]
    with loaded(path, {"backend": "onnxruntime", "instances": 2, "threads": 1}) as b:
        assert b.max_concurrency == 2
        assert _session_threads(b) == [1, 1]
        assert "sessions=2" in b.describe() and "intra_op_threads=1" in b.describe()
    # unset threads: the core budget is shared between the sessions
    with loaded(path, {"backend": "onnxruntime", "instances": 2}) as b:
        assert _session_threads(b) == [1, 1]
    with loaded(path, {"backend": "onnxruntime"}) as b:
        assert b.max_concurrency == 1 and _session_threads(b) == [2]
        assert b.platform == "onnxruntime_onnx"


def test_onnxruntime_sessions_run_concurrently_and_keep_rows_apart(tmp_path: Path) -> None:
    simple_add_sub(tmp_path / "model.onnx")
    with loaded(tmp_path, {"backend": "onnxruntime", "instances": 2, "threads": 1}) as b:
        inputs = [
            {
                "INPUT0": np.full((i + 1, 16), i, np.int32),
                "INPUT1": np.arange(16 * (i + 1), dtype=np.int32).reshape(i + 1, 16),
            }
            for i in range(6)
        ]

        async def all_at_once() -> list[dict[str, np.ndarray]]:
            return await asyncio.wait_for(asyncio.gather(*(b.infer(x) for x in inputs)), 30)

        for x, out in zip(inputs, asyncio.run(all_at_once()), strict=True):
            np.testing.assert_array_equal(out["OUTPUT0"], x["INPUT0"] + x["INPUT1"])
            np.testing.assert_array_equal(out["OUTPUT1"], x["INPUT0"] - x["INPUT1"])


def test_onnxruntime_missing_provider(built: dict[str, Path]) -> None:
    msg = load_error(
        built["matmul_relu/onnx"],
        {"backend": "onnxruntime", "onnxruntime": {"providers": ["NoSuchExecutionProvider"]}},
    )
    assert "NoSuchExecutionProvider" in msg and "CPUExecutionProvider" in msg
    assert "onnxruntime.providers" in msg


def test_onnxruntime_needs_model_onnx(tmp_path: Path) -> None:
    msg = load_error(tmp_path, {"backend": "onnxruntime"})
    assert str(tmp_path) in msg and "model.onnx" in msg


def test_onnxruntime_unreadable_model_is_a_model_load_error(tmp_path: Path) -> None:
    # ORT raises InvalidProtobuf here, which is neither RuntimeError nor ORT's Fail
    (tmp_path / "model.onnx").write_bytes(b"\x00 definitely not a protobuf")
    msg = load_error(tmp_path, {"backend": "onnxruntime"})
    assert str(tmp_path / "model.onnx") in msg


def test_onnxruntime_static_batch_model_cannot_batch(tmp_path: Path) -> None:
    # ORT cannot reshape a model; with max_batch_size > 0 the scheduler would send batches the
    # model refuses (every batch of more than one row fails), so loading must refuse instead.
    simple_add_sub(tmp_path / "model.onnx", batch=1)
    msg = load_error(tmp_path, {"backend": "onnxruntime", "max_batch_size": 4}, batch_dim=True)
    assert "INPUT0" in msg and "max_batch_size" in msg


def test_onnxruntime_bad_input_is_a_model_execution_error(built: dict[str, Path]) -> None:
    with loaded(built["matmul_relu/onnx"], {"backend": "onnxruntime"}) as b:
        with pytest.raises(ModelExecutionError, match="ONNX Runtime inference failed"):
            infer(b, {"x": np.ones((2, 63), np.float32)})
        assert infer(b, {"x": np.ones((2, 64), np.float32)})["y"].shape == (2, 64)


# -- Python ----------------------------------------------------------------------------------

PY_IO = {
    "inputs": [{"name": "IN", "datatype": "INT64", "dims": [2]}],
    "outputs": [
        {"name": "OUT", "datatype": "INT64", "dims": [2]},
        {"name": "STATE", "datatype": "INT64", "dims": [3]},
    ],
}

CLASS_MODEL = """
import numpy as np

class Model:
    def setup(self, config):
        self.config = config
        self.scale = int(config["parameters"]["scale"])
        self.warmed = 0
        self.stream_config = None

    def warmup(self):
        self.warmed += 1

    def configure(self, stream_config):
        self.stream_config = dict(stream_config)

    def process(self, batch):
        x = batch["IN"]
        configured = 0 if self.stream_config is None else self.stream_config["fps"]
        state = np.tile([self.warmed, configured, self.config["version"]], (len(x), 1))
        return {"OUT": x * self.scale, "STATE": state}
"""

FUNCTIONS_MODEL = """
import numpy as np

CALLS = 0
CONFIG = None

def setup(config):
    global CONFIG
    CONFIG = config

def process(batch):
    global CALLS
    CALLS += 1
    x = batch["IN"]
    scale = int(CONFIG["parameters"]["scale"])
    return {"OUT": x * scale, "STATE": np.tile([CALLS, 0, 0], (len(x), 1))}
"""


def _py(tmp_path: Path, source: str, **config: Any) -> tuple[Path, dict[str, Any]]:
    python_model(tmp_path, source)
    return tmp_path, {"backend": "python", "max_batch_size": 8, **PY_IO, **config}


def test_python_class_model_gets_its_config_and_hooks(tmp_path: Path) -> None:
    path, config = _py(tmp_path, CLASS_MODEL, parameters={"scale": 3, "label": "cars"})
    with loaded(path, config, batch_dim=True) as b:
        assert b.platform == "python"
        assert b.inputs == (TensorSpec("IN", "INT64", (-1, 2)),)
        assert [o.name for o in b.outputs] == ["OUT", "STATE"]
        got = b._target.config  # what setup() received
        assert got["name"] == "m" and got["version"] == 1
        assert got["path"] == str(path)
        assert got["parameters"] == {"scale": 3, "label": "cars"}
        assert got["max_batch_size"] == 8
        assert got["inputs"] == [{"name": "IN", "datatype": "INT64", "dims": [2]}]
        assert [o["name"] for o in got["outputs"]] == ["OUT", "STATE"]
        x = np.array([[1, 2], [3, 4]], np.int64)
        out = infer(b, {"IN": x})
        np.testing.assert_array_equal(out["OUT"], 3 * x)
        assert out["STATE"][0].tolist() == [0, 0, 1]
        b.warmup()
        b.configure({"fps": 15})
        assert infer(b, {"IN": x})["STATE"][0].tolist() == [1, 15, 1]


def test_python_module_level_functions(tmp_path: Path) -> None:
    path, config = _py(tmp_path, FUNCTIONS_MODEL, parameters={"scale": 2})
    with loaded(path, config, batch_dim=True) as b:
        b.warmup()  # no warmup() in the script: nothing to call, no error
        b.configure({"fps": 1})  # likewise for configure()
        x = np.array([[5, 6]], np.int64)
        np.testing.assert_array_equal(infer(b, {"IN": x})["OUT"], 2 * x)
        assert infer(b, {"IN": x})["STATE"][0, 0] == 2


def test_python_two_loads_of_one_script_do_not_share_state(tmp_path: Path) -> None:
    path, config = _py(tmp_path, FUNCTIONS_MODEL, parameters={"scale": 1})
    x = np.array([[1, 1]], np.int64)
    with loaded(path, config, True) as first, loaded(path, config, True) as second:
        infer(first, {"IN": x})
        infer(first, {"IN": x})
        assert infer(second, {"IN": x})["STATE"][0, 0] == 1
        assert infer(first, {"IN": x})["STATE"][0, 0] == 3


def test_python_without_batch_dimension(tmp_path: Path) -> None:
    path, config = _py(tmp_path, FUNCTIONS_MODEL, parameters={"scale": 1})
    config.pop("max_batch_size")
    with loaded(path, config, batch_dim=None) as b:
        assert b.inputs == (TensorSpec("IN", "INT64", (2,)),)


def test_python_process_error_names_the_script(tmp_path: Path) -> None:
    source = """
    def process(batch):
        raise KeyError("no such camera")
    """
    path, config = _py(tmp_path, source)
    with loaded(path, config, True) as b, pytest.raises(ModelExecutionError) as info:
        infer(b, {"IN": np.zeros((1, 2), np.int64)})
    msg = str(info.value)
    assert f"{path.parent.name}/{path.name}/model.py: " in msg
    assert "KeyError" in msg and "no such camera" in msg


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('return {"OUT": batch["IN"]}', "missing outputs ['STATE']"),
        ("return [1, 2]", "must return a dict of arrays, got list"),
        (
            'return {"OUT": batch["IN"], "STATE": batch["IN"].astype(complex)}',
            "'STATE' has dtype complex128",
        ),
    ],
)
def test_python_bad_process_results(tmp_path: Path, body: str, expected: str) -> None:
    path, config = _py(tmp_path, f"def process(batch):\n    {body}\n")
    with loaded(path, config, True) as b, pytest.raises(ModelExecutionError) as info:
        infer(b, {"IN": np.zeros((1, 2), np.int64)})
    assert expected in str(info.value)
    assert f"{path.parent.name}/{path.name}/model.py: " in str(info.value)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("x = 1\n", "defines no process(batch)"),
        ("def process(batch:\n", "failed during import/setup: SyntaxError"),
        ("import no_such_module_here\n", "ModuleNotFoundError"),
        (
            "def setup(config):\n    raise RuntimeError('weights missing')\n"
            "def process(batch):\n    return batch\n",
            "RuntimeError: weights missing",
        ),
    ],
)
def test_python_load_errors_name_the_script(tmp_path: Path, source: str, expected: str) -> None:
    path, config = _py(tmp_path, source)
    msg = load_error(path, config, True)
    assert f"{path.parent.name}/{path.name}/model.py: " in msg
    assert expected in msg


def test_python_needs_declared_tensors_and_a_script(tmp_path: Path) -> None:
    msg = load_error(tmp_path, {"backend": "python", **PY_IO})
    assert "model.py" in msg
    python_model(tmp_path, FUNCTIONS_MODEL)
    msg = load_error(tmp_path, {"backend": "python", "outputs": PY_IO["outputs"]})
    assert "'inputs' declared in model.yaml" in msg


def test_python_instances_and_finalize(tmp_path: Path) -> None:
    marker = tmp_path / "finalized"
    source = f"""
    from pathlib import Path

    def process(batch):
        return {{"OUT": batch["IN"], "STATE": batch["IN"][:, :1].repeat(3, axis=1)}}

    def finalize():
        Path({str(marker)!r}).write_text("done")
    """
    path, config = _py(tmp_path / "1", source, instances=3)
    with loaded(path, config, True) as b:
        assert b.max_concurrency == 3
        assert "threads=3" in b.describe()
        assert not marker.exists()
    assert marker.read_text() == "done"
