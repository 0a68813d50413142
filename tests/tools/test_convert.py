"""``frameserve convert``: real conversions checked against the runtimes that read the source.

Sources are small ONNX models built with ``onnx.helper`` and the zoo's .tflite/.onnx files;
every IR is read back by OpenVINO from disk, compared with OpenVINO reading the source (f32)
and with ONNX Runtime, and served through the real server core.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import openvino as ov
import pytest

from frameserve.backends.openvino_graph import FRONTEND_EXTENSIONS
from frameserve.cli.convert import EXTENSIONS
from frameserve.cli.main import main
from frameserve.errors import ConfigError, FrameserveError, InvalidInput, ModelLoadError
from frameserve.serving.config import load_model_config
from frameserve.serving.local import LocalServer
from frameserve.serving.server import ServerSettings
from frameserve.serving.types import InferRequest, InputTensor
from frameserve.tools import convert as convert_tool
from frameserve.tools.convert import ConvertOptions, ConvertResult, convert_to_ir
from frameserve.tools.example_models import conv_net, save_model

from models import identity

F32 = {"INFERENCE_PRECISION_HINT": "f32"}
SIZE = 32


def preprocessed_net(path: Path, seed: int = 0) -> Path:
    """A net with its pre-processing baked in, as exported detectors often are.

    ``image`` UINT8 [N,32,32,3] -> Cast -> Transpose (NCHW) -> Sub 127.5 -> Div 58 =
    ``normalized`` -> Conv 3x3 -> Relu = ``features`` -> pool -> ``embedding`` [N,8] ->
    MatMul -> ``scores`` [N,4]. Outputs: ``scores``, ``embedding``.
    """
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.normal(0, 0.3, (8, 4)).astype(np.float32), "fc"),
        numpy_helper.from_array(np.array([127.5], np.float32), "mean"),
        numpy_helper.from_array(np.array([58.0], np.float32), "std"),
    ]
    nodes = [
        helper.make_node("Cast", ["image"], ["image_f"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["image_f"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Sub", ["nchw", "mean"], ["centred"]),
        helper.make_node("Div", ["centred", "std"], ["normalized"]),
        helper.make_node("Conv", ["normalized", "w"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["features"]),
        helper.make_node("GlobalAveragePool", ["features"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["embedding"], axis=1),
        helper.make_node("MatMul", ["embedding", "fc"], ["scores"]),
    ]
    graph = helper.make_graph(
        nodes,
        "preprocessed_net",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", SIZE, SIZE, 3])],
        [
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 4]),
            helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", 8]),
        ],
        inits,
    )
    return save_model(graph, path)


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sources")
    return {
        "conv": conv_net(root / "conv_net.onnx"),
        "pre": preprocessed_net(root / "preprocessed.onnx"),
    }


def images(n: int = 2, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)


def normalise(image: np.ndarray) -> np.ndarray:
    """What ``preprocessed_net`` does before ``normalized``."""
    return (image.transpose(0, 3, 1, 2).astype(np.float32) - 127.5) / 58.0


def run_openvino(path: Path, feeds: dict[str, np.ndarray], ext: tuple[str, ...] = ()) -> dict:
    """OpenVINO reading ``path`` (IR or source) itself, at f32."""
    core = ov.Core()
    for name in ext:
        for extension in FRONTEND_EXTENSIONS[name]():
            core.add_extension(extension)
    compiled = core.compile_model(core.read_model(path), "CPU", F32)
    out = compiled(feeds)
    return {port.get_any_name(): np.array(out[port]) for port in compiled.outputs}


def run_onnxruntime(path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))


def assert_close(got: np.ndarray, want: np.ndarray, rel: float) -> None:
    assert got.shape == want.shape
    scale = float(np.abs(want).max()) + 1e-6
    assert float(np.abs(got - want).max()) <= rel * scale


def convert(src: Path, repo: Path, model: str = "m", **kwargs: Any) -> ConvertResult:
    return convert_to_ir(ConvertOptions(src=src, repository=repo, model=model, **kwargs))


def ir(result: ConvertResult) -> Path:
    return result.path / "model.xml"


def tree(root: Path) -> list[tuple[str, int]]:
    """Every path under ``root`` with its size (0 for folders): a snapshot to compare."""
    if not root.exists():
        return []
    return sorted(
        (str(p.relative_to(root)), p.stat().st_size * p.is_file()) for p in root.rglob("*")
    )


# -- numerics ---------------------------------------------------------------------------------
def test_ir_matches_openvino_and_onnxruntime_on_the_source(
    sources: dict[str, Path], tmp_path: Path
) -> None:
    result = convert(sources["conv"], tmp_path)
    assert result.path == tmp_path / "m" / "1"
    assert sorted(p.name for p in result.path.iterdir()) == ["model.bin", "model.xml"]
    assert [(p.name, p.datatype, p.shape) for p in result.inputs] == [
        ("images", "FP32", "[?,3,224,224]")
    ]
    x = np.random.default_rng(0).normal(size=(2, 3, 224, 224)).astype(np.float32)
    got = run_openvino(ir(result), {"images": x})["logits"]
    assert_close(got, run_openvino(sources["conv"], {"images": x})["logits"], 1e-5)
    assert_close(got, run_onnxruntime(sources["conv"], {"images": x})["logits"], 1e-4)
    weights = 64 * 27 + 128 * 64 * 9 + 128 * 128 * 9 + 128 * 1000  # FP32 unless asked
    assert (result.path / "model.bin").stat().st_size >= 4 * weights


def test_compress_fp16_halves_the_weights_within_fp16_error(
    sources: dict[str, Path], tmp_path: Path
) -> None:
    full = convert(sources["conv"], tmp_path)
    half = convert(sources["conv"], tmp_path, compress_fp16=True)
    assert (full.version, half.version) == (1, 2)
    ratio = (half.path / "model.bin").stat().st_size / (full.path / "model.bin").stat().st_size
    assert 0.45 < ratio < 0.55
    assert half.compressed_fp16 and half.inputs[0].datatype == "FP32"  # only weights change
    x = np.random.default_rng(0).normal(size=(1, 3, 224, 224)).astype(np.float32)
    want = run_openvino(ir(full), {"images": x})["logits"]
    got = run_openvino(ir(half), {"images": x})["logits"]
    assert_close(got, want, 1e-2)
    assert not np.array_equal(got, want)  # the weights really are FP16


# -- cuts, shapes, layouts --------------------------------------------------------------------
def test_cut_at_a_named_output_keeps_fewer_outputs(
    sources: dict[str, Path], tmp_path: Path
) -> None:
    result = convert(sources["pre"], tmp_path, outputs=("embedding",))
    assert [p.name for p in result.outputs] == ["embedding"]
    img = images()
    got = run_openvino(ir(result), {"image": img})
    assert list(got) == ["embedding"]
    want = run_onnxruntime(sources["pre"], {"image": img})["embedding"]
    assert_close(got["embedding"], want, 1e-5)


def test_cut_at_a_named_input_drops_baked_in_preprocessing(
    sources: dict[str, Path], tmp_path: Path
) -> None:
    result = convert(sources["pre"], tmp_path, inputs=("normalized",))
    assert [(p.name, p.datatype, p.shape) for p in result.inputs] == [
        ("normalized", "FP32", "[?,3,32,32]")
    ]
    img = images()
    got = run_openvino(ir(result), {"normalized": normalise(img)})
    want = run_onnxruntime(sources["pre"], {"image": img})
    for name in ("scores", "embedding"):
        assert_close(got[name], want[name], 1e-5)


def test_cut_on_both_sides_at_inner_tensors_with_a_static_shape(
    sources: dict[str, Path], tmp_path: Path
) -> None:
    result = convert(
        sources["pre"], tmp_path, inputs=("normalized[1,3,32,32]",), outputs=("features",)
    )
    read = ov.Core().read_model(ir(result))
    assert [(p.get_any_name(), str(p.get_partial_shape())) for p in read.inputs] == [
        ("normalized", "[1,3,32,32]")
    ]
    assert [p.get_any_name() for p in read.outputs] == ["features"]
    img = images(1)
    got = run_openvino(ir(result), {"normalized": normalise(img)})["features"]
    ref = convert(sources["pre"], tmp_path, outputs=("features",))  # the whole graph, cut below
    assert_close(got, run_openvino(ir(ref), {"image": img})["features"], 1e-5)


@pytest.mark.parametrize(
    ("arg", "shape"),
    [
        ("image[1,32,32,3]", "[1,32,32,3]"),
        ("image[?,-1,-1,3]", "[?,?,?,3]"),
        ("image[1..8,32,32,3]", "[1..8,32,32,3]"),
        ("image", "[?,32,32,3]"),  # as the source declares it
    ],
)
def test_static_dynamic_and_bounded_shapes_reach_the_ir(
    sources: dict[str, Path], tmp_path: Path, arg: str, shape: str
) -> None:
    result = convert(sources["pre"], tmp_path, inputs=(arg,))
    read = ov.Core().read_model(ir(result))
    assert str(read.input("image").get_partial_shape()) == shape
    assert result.inputs[0].shape == shape
    assert load_model_config(tmp_path / "m" / "model.yaml").max_batch_size is None


@pytest.mark.parametrize("arg", ["NHWC", "image:NHWC"])
def test_layout_is_stored_in_the_ir(sources: dict[str, Path], tmp_path: Path, arg: str) -> None:
    result = convert(sources["pre"], tmp_path, layouts=(arg,))
    read = ov.Core().read_model(ir(result))
    assert ov.layout_helpers.get_layout(read.input("image")).to_string() == "[N,H,W,C]"
    assert result.inputs[0].layout == "[N,H,W,C]"


# -- versions and model.yaml --------------------------------------------------------------------
def test_versions_count_on_from_the_highest(sources: dict[str, Path], tmp_path: Path) -> None:
    assert convert(sources["pre"], tmp_path).version == 1  # a new model
    assert convert(sources["pre"], tmp_path).version == 2
    for name in ("5", "07", "x"):  # "07" and "x" are not versions: the server ignores them
        (tmp_path / "m" / name).mkdir()
    assert convert(sources["pre"], tmp_path).version == 6
    assert convert(sources["pre"], tmp_path, version="3").version == 3  # a gap may be filled
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "07", "1", "2", "3", "5", "6", "model.yaml", "x"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("dims", "max_batch_size"),
    [([-1, 4], None), ([1, 4], None), ([3, 4], 0), ([], 0)],
)
def test_new_model_gets_a_model_yaml(
    tmp_path: Path, dims: list[int], max_batch_size: int | None
) -> None:
    src = identity(tmp_path / "id.onnx", "FP32", dims)
    result = convert(src, tmp_path / "repo")
    assert result.config_written and result.served
    config = load_model_config(tmp_path / "repo" / "m" / "model.yaml")
    assert config.backend == "openvino"
    assert config.max_batch_size == max_batch_size
    assert config.inputs is None and config.outputs is None  # the server reads the model


def test_existing_model_yaml_is_left_alone_and_its_policy_reported(
    sources: dict[str, Path], tmp_path: Path
) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    text = "# mine\nbackend: openvino\nversion_policy: {specific: [1]}\nmax_batch_size: 4\n"
    (folder / "model.yaml").write_text(text)
    first = convert(sources["pre"], tmp_path)
    second = convert(sources["pre"], tmp_path)
    assert (folder / "model.yaml").read_text() == text
    assert not first.config_written and first.served
    assert (second.version, second.served, second.served_versions) == (2, False, (1,))
    assert second.policy == "{specific: [1]}"


def test_converted_model_answers_through_the_server_core(
    sources: dict[str, Path], tmp_path: Path
) -> None:
    convert(sources["pre"], tmp_path)
    settings = ServerSettings(
        repository=tmp_path, model_control_mode="explicit", load_models=("m",)
    )
    img = images(3)
    with LocalServer(settings) as local:
        version = local.server.repository.get("m")
        assert version.max_batch_size > 0  # the dynamic first dim batches
        request = InferRequest("m", [InputTensor("image", "UINT8", img.shape, img)])
        response = local.call(version.infer(request), timeout=60)
    got = {o.name: o.data for o in response.outputs}
    want = run_onnxruntime(sources["pre"], {"image": img})
    for name in ("scores", "embedding"):
        # the written model.yaml sets no precision: the CPU's default (bf16 where it has it)
        assert_close(got[name], want[name], 2e-2)


# -- zoo models -------------------------------------------------------------------------------
ZOO = {
    "faces": ((), {"input_1": (1, 192, 192, 3)}),
    "person-mask": (("mediapipe",), {"input_1": (1, 256, 256, 3)}),
    "text-det": ((), {"x": (1, 3, 64, 96)}),
}


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_models_convert_and_match_their_source(
    zoo_repository: Path, tmp_path: Path, name: str
) -> None:
    ext, shapes = ZOO[name]
    src = next((zoo_repository / name / "1").glob("model.*"))
    result = convert(src, tmp_path, model=name, extensions=ext)
    rng = np.random.default_rng(0)
    feeds = {k: rng.uniform(-1, 1, s).astype(np.float32) for k, s in shapes.items()}
    got = run_openvino(ir(result), feeds)
    want = run_openvino(src, feeds, ext)
    assert list(got) == list(want)
    for key in want:
        assert_close(got[key], want[key], 1e-5)
    if src.suffix == ".onnx":
        for key, value in run_onnxruntime(src, feeds).items():
            assert_close(got[key], value, 1e-3)


def test_mediapipe_op_without_the_extension_names_the_fix(
    zoo_repository: Path, tmp_path: Path
) -> None:
    src = zoo_repository / "person-mask" / "1" / "model.tflite"
    with pytest.raises(ModelLoadError, match="Convolution2DTransposeBias.*--extension mediapipe"):
        convert(src, tmp_path)
    assert tree(tmp_path) == []


# -- bad input --------------------------------------------------------------------------------
BAD: dict[str, tuple[dict[str, Any], type[FrameserveError], str]] = {
    "missing SRC": ({"src": "nope.onnx"}, InvalidInput, "SRC '.*nope.onnx': expected a model"),
    "unsupported format": (
        {"src": "notes.txt"},
        InvalidInput,
        "unsupported format: expected one of .*got '.txt'",
    ),
    "folder that is no SavedModel": ({"src": "folder"}, InvalidInput, "saved_model.pb"),
    "existing version": ({"model": "m", "version": "1"}, InvalidInput, "m/1 exists.*e.g. 2"),
    "leading zero": (
        {"version": "01"},
        InvalidInput,
        "--version: .*without leading zeros, got '01'",
    ),
    "version 0": ({"version": "0"}, InvalidInput, "--version: expected a positive integer"),
    "model name": ({"model": "../evil"}, InvalidInput, "--model: .*got '../evil'"),
    "unclosed shape": ({"inputs": ("image[1,32",)}, InvalidInput, r"--input 'image\[1,32'"),
    "bad dim": ({"inputs": ("image[1,x,32,3]",)}, InvalidInput, "dimension 'x': expected N"),
    "min over max": ({"inputs": ("image[8..1,32,32,3]",)}, InvalidInput, "MIN <= MAX"),
    "rank": ({"inputs": ("image[1,32]",)}, InvalidInput, r"shape is \[\?,32,32,3\] \(rank 4\)"),
    "unknown input": (
        {"inputs": ("imgs",)},
        InvalidInput,
        r"--input 'imgs': the model has inputs \['image'\]",
    ),
    "unknown output": (
        {"outputs": ("nope",)},
        InvalidInput,
        r"--output 'nope': .*\['scores', 'embedding'\]",
    ),
    "input twice": ({"inputs": ("image", "image[1,32,32,3]")}, InvalidInput, "more than once"),
    "layout syntax": ({"layouts": ("NC!",)}, InvalidInput, "--layout 'NC!': expected letters"),
    "layout rank": ({"layouts": ("NCW",)}, InvalidInput, "rank 4.*names 3 dims"),
    "layout input": ({"layouts": ("x:NCHW",)}, InvalidInput, "inputs \\['image'\\], got 'x'"),
    "extension": ({"extensions": ("tensorflow",)}, InvalidInput, "--extension: expected one of"),
    "onnxruntime model": (
        {"model": "ort"},
        ConfigError,
        "backend: .*'openvino', got 'onnxruntime'",
    ),
    "pipeline": ({"model": "pipe"}, InvalidInput, "pipe is a model pipeline"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_gives_a_clear_error_and_writes_nothing(
    sources: dict[str, Path], tmp_path: Path, case: str
) -> None:
    kwargs, error, message = BAD[case]
    repo = tmp_path / "repo"
    for name, text in (("m", "backend: openvino\n"), ("ort", "backend: onnxruntime\n")):
        (repo / name / "1").mkdir(parents=True)
        (repo / name / "model.yaml").write_text(text)
    (repo / "pipe").mkdir()
    (repo / "pipe" / "pipeline.yaml").write_text("steps: []\n")
    (tmp_path / "notes.txt").write_text("not a model")
    (tmp_path / "folder").mkdir()
    options: dict[str, Any] = {"src": sources["pre"], "model": "new", **kwargs}
    if isinstance(options["src"], str):
        options["src"] = tmp_path / options["src"]
    before = tree(repo)
    with pytest.raises(error, match=message):
        convert(options.pop("src"), repo, **options)
    assert tree(repo) == before


def test_a_failed_write_leaves_no_half_version(
    sources: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A fake: a full disk cannot be produced here; the fake writes half a model, then fails.
    def full_disk(model: ov.Model, xml: Path, compress_fp16: bool) -> None:
        xml.write_text("<net")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(convert_tool, "save", full_disk)
    with pytest.raises(ConfigError, match="m/1: cannot write the IR: .*No space left"):
        convert(sources["pre"], tmp_path / "repo")
    assert tree(tmp_path) == []  # no version, no model folder, no repository it made


# -- CLI --------------------------------------------------------------------------------------
def test_cli_converts_and_prints_what_it_wrote(
    sources: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["convert", str(sources["pre"]), "--repository", str(tmp_path), "--model", "m"]
    assert main([*args, "--input", "image[?,32,32,3]", "--layout", "NHWC"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {tmp_path}/m/1/model.xml + model.bin (" in out
    assert "FP32 weights" in out
    assert "input  image      UINT8 [?,32,32,3]  layout [N,H,W,C]" in out
    assert "output scores     FP32  [?,4]" in out
    assert f"wrote {tmp_path}/m/model.yaml (backend: openvino)" in out
    assert "version 1 will be served: version_policy {latest: 1} serves [1]" in out

    assert main([*args, "--compress-fp16"]) == 0
    out = capsys.readouterr().out
    assert "FP16 weights" in out and "model.yaml exists: left as it is" in out
    assert "version 2 will be served" in out


def test_cli_errors_exit_1_with_the_reason(
    sources: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["convert", str(sources["pre"]), "--repository", str(tmp_path), "--model", "m"]
    assert main([*args, "--output", "nope"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("frameserve convert: --output 'nope': the model has outputs")
    assert tree(tmp_path) == []


@pytest.mark.parametrize(
    "extra", [[], ["--repository", "r"], ["--model", "m", "--repository", "r", "--extension", "x"]]
)
def test_cli_usage_errors_exit_2(sources: dict[str, Path], extra: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["convert", str(sources["pre"]), *extra])
    assert exc.value.code == 2


def test_cli_extension_choices_are_the_backend_ones() -> None:
    assert sorted(EXTENSIONS) == sorted(FRONTEND_EXTENSIONS)
