"""Graph edits before OpenVINO compiles a model: batch rewrites, the batching check, fused
pre-processing and the MediaPipe front-end extension, on the zoo's real MediaPipe models.

Every model here is compiled with f32 inference precision so that results can be compared to
1e-4; the reference conversions come from ``tests/reference`` (written apart from frameserve).
"""

from __future__ import annotations

import asyncio
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov
import openvino.opset13 as ops
import pytest
import skimage.data
from reference.mediapipe_selfie import reference_person_input, run_selfie_model

from frameserve.backends import BackendSettings, load_backend
from frameserve.backends.openvino_graph import (
    FRONTEND_EXTENSIONS,
    check_batching,
    fuse_preprocessing,
    rewrite_batch_reshapes,
)
from frameserve.cpu import CpuBudget
from frameserve.errors import ModelLoadError
from frameserve.processing.spec import PreprocessSpec
from frameserve.processing.transform import Preprocessor
from frameserve.serving.config import load_model_config, parse_model_config

F32 = {"INFERENCE_PRECISION_HINT": "f32"}


def faces_file(repository: Path) -> Path:
    return repository / "faces" / "1" / "model.tflite"


def faces_spec(repository: Path) -> PreprocessSpec:
    spec = load_model_config(repository / "faces" / "model.yaml").preprocess
    assert spec is not None
    return spec


@cache
def face_batch(repository: Path) -> np.ndarray:
    """Three different framings of the astronaut as the faces model's float input [3, ...]."""
    a = skimage.data.astronaut()
    return Preprocessor(faces_spec(repository))([a, a[:300], a[:, 100:400]])[0]


@pytest.fixture(scope="module")
def faces_batch1(zoo_repository: Path) -> ov.CompiledModel:
    """The faces model as MediaPipe ships it: batch 1."""
    core = ov.Core()
    return core.compile_model(core.read_model(str(faces_file(zoo_repository))), "CPU", F32)


def outputs(compiled: ov.CompiledModel, feed: np.ndarray) -> list[np.ndarray]:
    return [np.array(v, copy=True) for v in compiled.create_infer_request().infer(feed).values()]


def with_dynamic_batch(model: ov.Model) -> None:
    port = model.inputs[0]
    dims = [ov.Dimension(-1)] + list(port.get_partial_shape())[1:]
    model.reshape({port.get_any_name(): ov.PartialShape(dims)})


# --------------------------------------------------------------------------- batch rewrites


def test_rewrite_batch_reshapes_lets_the_faces_model_batch(
    zoo_repository: Path, faces_batch1: ov.CompiledModel
) -> None:
    core = ov.Core()
    model = core.read_model(str(faces_file(zoo_repository)))
    assert rewrite_batch_reshapes(model) > 0
    with_dynamic_batch(model)
    assert [str(o.get_partial_shape()) for o in model.outputs] == ["[?,2304,16]", "[?,2304,1]"]
    compiled = core.compile_model(model, "CPU", F32)
    batch = face_batch(zoo_repository)
    batched = outputs(compiled, batch)
    assert [o.shape for o in batched] == [(3, 2304, 16), (3, 2304, 1)]
    for i in range(len(batch)):  # one to one with the untouched graph's batch-1 outputs
        single = outputs(faces_batch1, batch[i : i + 1])
        for got, expected in zip(batched, single, strict=True):
            np.testing.assert_allclose(got[i : i + 1], expected, atol=1e-4, rtol=1e-4)
    check_batching(compiled, "faces")  # the load-time check agrees


def test_without_the_rewrite_the_faces_model_folds_the_batch(zoo_repository: Path) -> None:
    """Why the rewrite exists: MediaPipe's Reshape nodes hard-code batch 1."""
    model = ov.Core().read_model(str(faces_file(zoo_repository)))
    with_dynamic_batch(model)
    assert str(model.outputs[0].get_partial_shape()) == "[1,?,16]"  # anchors x batch


def test_rewrite_leaves_other_reshapes_alone() -> None:
    x = ops.parameter([-1, 4, 3], ov.Type.f32, name="x")
    flat = ops.reshape(x, ops.constant(np.array([-1, 12], dtype=np.int64)), False)
    model = ov.Model([flat], [x], "flat")
    assert rewrite_batch_reshapes(model) == 0
    assert str(model.outputs[0].get_partial_shape()) == "[?,12]"


def mixing_model() -> ov.Model:
    """x [?, 4] -> [1, 4N] -> softmax over everything -> [N, 4]: items mix, shapes agree."""
    x = ops.parameter([-1, 4], ov.Type.f32, name="x")
    flat = ops.reshape(x, ops.constant(np.array([1, -1], dtype=np.int64)), False)
    mixed = ops.softmax(flat, 1)
    y = ops.reshape(mixed, ops.constant(np.array([-1, 4], dtype=np.int64)), False)
    return ov.Model([y], [x], "mixing")


def folding_model() -> ov.Model:
    """x [?, 4] -> Reshape to the constant [1, -1]: the batch folds into one item."""
    x = ops.parameter([-1, 4], ov.Type.f32, name="x")
    y = ops.reshape(x, ops.constant(np.array([1, -1], dtype=np.int64)), False)
    return ov.Model([y], [x], "folding")


def test_check_batching_refuses_a_graph_that_mixes_items() -> None:
    compiled = ov.Core().compile_model(mixing_model(), "CPU", F32)
    with pytest.raises(ModelLoadError) as info:
        check_batching(compiled, "m/1/model.xml")
    message = str(info.value)
    assert message.startswith("m/1/model.xml: openvino.rewrite_batch_reshapes: ")
    assert "differ from batch-1 outputs" in message and "set max_batch_size: 0" in message


def test_check_batching_refuses_a_graph_that_folds_the_batch() -> None:
    compiled = ov.Core().compile_model(folding_model(), "CPU", F32)
    with pytest.raises(ModelLoadError, match="cannot batch; set max_batch_size: 0"):
        check_batching(compiled, "m/1/model.xml")


def test_check_batching_refuses_the_faces_model_without_its_rewrite(zoo_repository: Path) -> None:
    model = ov.Core().read_model(str(faces_file(zoo_repository)))
    with_dynamic_batch(model)
    compiled = ov.Core().compile_model(model, "CPU", F32)
    with pytest.raises(ModelLoadError, match="cannot batch"):
        check_batching(compiled, "faces")


# --------------------------------------------------------------------------- fused pre-processing


def test_fused_faces_model_matches_the_unfused_one(
    zoo_repository: Path, faces_batch1: ov.CompiledModel
) -> None:
    spec = faces_spec(zoo_repository)
    core = ov.Core()
    model = core.read_model(str(faces_file(zoo_repository)))
    fuse_preprocessing(model, spec, "faces")
    port = model.inputs[0]
    assert port.get_element_type() == ov.Type.u8
    assert str(port.get_partial_shape()) == "[1,192,192,3]"
    fused = core.compile_model(model, "CPU", F32)
    astronaut = skimage.data.astronaut()
    for im in (astronaut, astronaut[:300]):
        image, _ = Preprocessor(spec, fused=True)([im])
        tensor, _ = Preprocessor(spec)([im])
        assert image.dtype == np.uint8 and tensor.dtype == np.float32
        for got, expected in zip(outputs(fused, image), outputs(faces_batch1, tensor), strict=True):
            assert float(np.abs(got - expected).max()) < 1e-4


def small_nchw_model() -> ov.Model:
    """x [?, 3, 4, 5] f32 -> x * [1, 10, 100] per channel: shows the channel order it got."""
    x = ops.parameter([-1, 3, 4, 5], ov.Type.f32, name="pixels")
    weights = ops.constant(np.array([1, 10, 100], dtype=np.float32).reshape(1, 3, 1, 1))
    return ov.Model([ops.multiply(x, weights)], [x], "channels")


def test_fused_bgr_nchw_normalisation_matches_the_preprocessor() -> None:
    spec = PreprocessSpec(
        resize={"mode": "stretch", "size": [5, 4]},
        color="bgr",
        scale=1 / 255,
        mean=[0.1, 0.2, 0.3],
        std=[0.5, 0.25, 2.0],
        layout="NCHW",
    )
    core = ov.Core()
    unfused = core.compile_model(small_nchw_model(), "CPU", F32)
    model = small_nchw_model()
    fuse_preprocessing(model, spec, "channels")
    assert str(model.inputs[0].get_partial_shape()) == "[?,4,5,3]"
    fused = core.compile_model(model, "CPU", F32)
    images = [skimage.data.astronaut()[:40, :50], skimage.data.astronaut()[200:240, 300:350]]
    expected = outputs(unfused, Preprocessor(spec)(images)[0])[0]
    got = outputs(fused, Preprocessor(spec, fused=True)(images)[0])[0]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


def test_fuse_needs_an_input_name_when_there_are_several() -> None:
    a = ops.parameter([1, 2, 2, 3], ov.Type.f32, name="a")
    b = ops.parameter([1, 2, 2, 3], ov.Type.f32, name="b")
    model = ov.Model([ops.add(a, b)], [a, b], "two")
    spec = PreprocessSpec(resize={"mode": "stretch", "size": [2, 2]})
    with pytest.raises(ModelLoadError, match=r"^two.xml: preprocess.input: name the input"):
        fuse_preprocessing(model, spec, "two.xml")
    fuse_preprocessing(model, spec.model_copy(update={"input": "b"}), "two.xml")
    assert [p.get_element_type() for p in model.inputs] == [ov.Type.f32, ov.Type.u8]


# --------------------------------------------------------------------------- through the backend


def load(repository: Path, name: str, **changes: Any) -> Any:
    """Load a zoo model with the OpenVINO backend, its model.yaml changed by ``changes``."""
    raw = load_model_config(repository / name / "model.yaml").model_dump(exclude_unset=True)
    raw.update(changes)
    config = parse_model_config(raw, f"{name}/model.yaml")
    budget = CpuBudget(2, "test")
    return load_backend(BackendSettings(name, 1, repository / name / "1", config, budget, True))


def infer(backend: Any, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return asyncio.run(asyncio.wait_for(backend.infer(feed), 30))


def test_backend_fused_and_rebatched_faces_model(
    zoo_repository: Path, faces_batch1: ov.CompiledModel
) -> None:
    """openvino.py applies the rewrite, then the fusion, then makes the batch dynamic."""
    spec = faces_spec(zoo_repository)
    # f32 as the reference (the zoo serves at the runtime's precision: bf16 on this CPU)
    fused = {**spec.model_dump(), "fuse": True}
    backend = load(zoo_repository, "faces", preprocess=fused, precision="f32")
    try:
        assert backend.inputs[0].datatype == "UINT8" and backend.inputs[0].shape[0] == -1
        a = skimage.data.astronaut()
        images, _ = Preprocessor(spec, fused=True)([a, a[:300]])
        tensors, _ = Preprocessor(spec)([a, a[:300]])
        result = infer(backend, {"input_1": images})
        for i in range(2):
            expected = outputs(faces_batch1, tensors[i : i + 1])
            for name, ref in zip(("Identity", "Identity_1"), expected, strict=True):
                assert float(np.abs(result[name][i : i + 1] - ref).max()) < 1e-4
    finally:
        backend.close()


# --------------------------------------------------------------------------- MediaPipe custom op


def test_person_mask_needs_the_mediapipe_extension(zoo_repository: Path) -> None:
    path = str(zoo_repository / "person-mask" / "1" / "model.tflite")
    with pytest.raises(RuntimeError, match="Convolution2DTransposeBias"):
        ov.Core().read_model(path)
    core = ov.Core()
    for extension in FRONTEND_EXTENSIONS["mediapipe"]():
        core.add_extension(extension)
    model = core.read_model(path)
    assert str(model.outputs[0].get_partial_shape()) == "[1,256,256,1]"
    # The same numbers as the reference's own conversion of the custom op.
    tensor = reference_person_input(skimage.data.astronaut())
    compiled = core.compile_model(model, "CPU", F32)
    got = outputs(compiled, tensor)[0]
    expected = run_selfie_model(tensor, path)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert 0.1 < float((got > 0.5).mean()) < 0.9  # the astronaut is found, not all or nothing


def test_backend_reports_the_missing_extension(zoo_repository: Path) -> None:
    openvino = {"frontend_extensions": []}
    with pytest.raises(ModelLoadError) as info:
        load(zoo_repository, "person-mask", openvino=openvino)
    message = str(info.value)
    assert "OpenVINO cannot read the model" in message
    assert "Convolution2DTransposeBias" in message
    assert "Exception from" not in message  # OpenVINO's source locations are dropped
