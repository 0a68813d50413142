"""model.yaml parsing: the minimum, every documented field, version policies, and bad configs
whose ConfigError names the field and the bad value."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from frameserve.errors import ConfigError
from frameserve.serving.config import (
    DynamicBatching,
    ModelConfig,
    VersionPolicy,
    load_model_config,
    parse_model_config,
)
from frameserve.tools.example_models import write_model_yaml


def _load(tmp_path: Path, config: Any, folder: str = "mymodel") -> ModelConfig:
    return load_model_config(write_model_yaml(tmp_path / folder, config))


def _error(tmp_path: Path, config: Any, folder: str = "mymodel") -> str:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, config, folder)
    return str(info.value)


def test_minimal_config(tmp_path: Path) -> None:
    cfg = _load(tmp_path, {"backend": "openvino"})
    assert cfg.backend == "openvino"
    assert cfg.name is None
    assert cfg.max_batch_size is None  # read from the model file
    assert cfg.inputs is None and cfg.outputs is None
    assert cfg.dynamic_batching is None
    assert cfg.version_policy == VersionPolicy(kind="latest", latest=1)
    assert cfg.device == "CPU"
    assert cfg.warmup.count == 1 and cfg.warmup.batch_size == 1 and cfg.warmup.file is None
    assert cfg.onnxruntime.providers == ["CPUExecutionProvider"]
    assert cfg.parameters == {}
    assert not cfg.batching_enabled


def test_every_documented_field(tmp_path: Path) -> None:
    full = {
        "name": "mymodel",
        "backend": "onnxruntime",
        "max_batch_size": 16,
        "inputs": [{"name": "images", "datatype": "FP32", "dims": [3, -1, -1]}],
        "outputs": [{"name": "logits", "datatype": "FP16", "dims": [1000]}],
        "dynamic_batching": {
            "max_queue_delay_ms": 2.5,
            "preferred_batch_sizes": [4, 8, 16],
            "max_queue_size": 64,
            "timeout_ms": 250,
            "priority_levels": 3,
            "default_priority_level": 2,
        },
        "version_policy": {"latest": 2},
        "device": "AUTO:GPU,CPU",
        "instances": 2,
        "threads": 3,
        "performance_hint": "LATENCY",
        "precision": "bf16",
        "cache_dir": "cache",
        "warmup": {"count": 3, "batch_size": 2, "file": "warmup.npz"},
        "onnxruntime": {
            "providers": ["CPUExecutionProvider"],
            "execution_mode": "parallel",
            "inter_op_threads": 2,
            "graph_optimization_level": "basic",
        },
        "openvino": {"enable_cpu_pinning": False, "properties": {"NUM_STREAMS": "2"}},
        "parameters": {"threshold": 0.5, "labels": "coco", "top_k": 5, "nms": True},
    }
    cfg = _load(tmp_path, full)
    assert cfg.name == "mymodel"
    assert cfg.max_batch_size == 16
    assert cfg.inputs is not None and cfg.inputs[0].dims == [3, -1, -1]
    assert cfg.outputs is not None and cfg.outputs[0].datatype == "FP16"
    assert cfg.dynamic_batching == DynamicBatching(
        max_queue_delay_ms=2.5,
        preferred_batch_sizes=[4, 8, 16],
        max_queue_size=64,
        timeout_ms=250,
        priority_levels=3,
        default_priority_level=2,
    )
    assert cfg.batching_enabled
    assert cfg.version_policy.select([1, 2, 3]) == [2, 3]
    assert (cfg.device, cfg.instances, cfg.threads) == ("AUTO:GPU,CPU", 2, 3)
    assert (cfg.performance_hint, cfg.precision, cfg.cache_dir) == ("LATENCY", "bf16", "cache")
    assert (cfg.warmup.count, cfg.warmup.batch_size, cfg.warmup.file) == (3, 2, "warmup.npz")
    assert cfg.onnxruntime.execution_mode == "parallel"
    assert cfg.onnxruntime.inter_op_threads == 2
    assert cfg.onnxruntime.graph_optimization_level == "basic"
    assert cfg.openvino.enable_cpu_pinning is False
    assert cfg.openvino.properties == {"NUM_STREAMS": "2"}
    assert cfg.parameters == {"threshold": 0.5, "labels": "coco", "top_k": 5, "nms": True}


def test_config_is_frozen(tmp_path: Path) -> None:
    cfg = _load(tmp_path, {"backend": "python"})
    with pytest.raises(ValueError, match="frozen"):
        cfg.instances = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("warmup", "count"),
    [(0, 0), (5, 5), (None, 0), ({"count": 2}, 2)],
)
def test_warmup_shorthands(tmp_path: Path, warmup: Any, count: int) -> None:
    assert _load(tmp_path, {"backend": "python", "warmup": warmup}).warmup.count == count


@pytest.mark.parametrize(
    ("policy", "selected"),
    [
        (None, [5]),
        ({"latest": 2}, [3, 5]),
        ({"latest": {"num_versions": 2}}, [3, 5]),  # Triton's nested spelling
        ({"latest": 10}, [1, 2, 3, 5]),
        ("all", [1, 2, 3, 5]),
        ({"all": {}}, [1, 2, 3, 5]),  # Triton's spelling
        ({"all": None}, [1, 2, 3, 5]),
        ({"specific": [1, 3, 4]}, [1, 3]),  # 4 does not exist: only what is there
        ({"specific": {"versions": [2, 5]}}, [2, 5]),  # Triton's nested spelling
    ],
)
def test_version_policy_spellings(tmp_path: Path, policy: Any, selected: list[int]) -> None:
    raw = {"backend": "openvino"}
    if policy is not None:
        raw["version_policy"] = policy
    cfg = _load(tmp_path, raw)
    assert cfg.version_policy.select([3, 1, 5, 2]) == selected


@pytest.mark.parametrize(
    ("policy", "field", "shown"),
    [
        ({"latest": 0}, "version_policy.latest", "0"),
        ({"newest": 2}, "version_policy", "newest"),
        ({"specific": []}, "version_policy", "[]"),
        ({"specific": [0]}, "version_policy.specific.0", "0"),
        ("latest", "version_policy", "'latest'"),
        ({"latest": 1, "specific": [1]}, "version_policy", "specific"),
    ],
)
def test_bad_version_policy(tmp_path: Path, policy: Any, field: str, shown: str) -> None:
    msg = _error(tmp_path, {"backend": "openvino", "version_policy": policy})
    assert f"{field}:" in msg
    assert shown in msg


def test_unknown_field_is_named(tmp_path: Path) -> None:
    msg = _error(tmp_path, {"backend": "openvino", "max_batchsize": 8})
    assert "max_batchsize" in msg
    assert "(got 8)" in msg
    assert str(tmp_path / "mymodel" / "model.yaml") in msg


def test_unknown_nested_field_is_named(tmp_path: Path) -> None:
    msg = _error(tmp_path, {"backend": "openvino", "dynamic_batching": {"max_delay_ms": 5}})
    assert "dynamic_batching.max_delay_ms" in msg
    assert "(got 5)" in msg


def test_wrong_datatype_name(tmp_path: Path) -> None:
    msg = _error(
        tmp_path,
        {"backend": "openvino", "inputs": [{"name": "x", "datatype": "FLOAT32", "dims": [3]}]},
    )
    assert "inputs.0.datatype" in msg
    assert "'FLOAT32'" in msg
    assert "FP32" in msg  # the expected names are listed


def test_preferred_batch_size_above_max_batch_size(tmp_path: Path) -> None:
    msg = _error(
        tmp_path,
        {
            "backend": "openvino",
            "max_batch_size": 8,
            "dynamic_batching": {"preferred_batch_sizes": [4, 16]},
        },
    )
    assert "preferred_batch_sizes" in msg
    assert "max_batch_size (8)" in msg
    assert "[16]" in msg


def test_name_must_equal_the_folder(tmp_path: Path) -> None:
    msg = _error(tmp_path, {"backend": "openvino", "name": "other"}, folder="mymodel")
    assert "name" in msg
    assert "'mymodel'" in msg and "'other'" in msg


def test_name_equal_to_the_folder_is_fine(tmp_path: Path) -> None:
    assert _load(tmp_path, {"backend": "openvino", "name": "mymodel"}).name == "mymodel"


def test_invalid_yaml(tmp_path: Path) -> None:
    folder = tmp_path / "mymodel"
    folder.mkdir()
    path = folder / "model.yaml"
    path.write_text("backend: openvino\ninputs: [\n  {name: x, datatype: FP32\n")
    with pytest.raises(ConfigError) as info:
        load_model_config(path)
    msg = str(info.value)
    assert str(path) in msg
    assert "not valid YAML" in msg
    assert "line" in msg  # the parser's position is passed on


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "mymodel" / "model.yaml"
    with pytest.raises(ConfigError, match="cannot read"):
        load_model_config(path)


@pytest.mark.parametrize(
    ("raw", "field", "shown"),
    [
        ({}, "backend", "Field required"),
        ({"backend": "tensorflow"}, "backend", "'tensorflow'"),
        ({"backend": "openvino", "max_batch_size": -1}, "max_batch_size", "-1"),
        ({"backend": "openvino", "instances": 0}, "instances", "0"),
        ({"backend": "openvino", "device": "TPU"}, "device", "'TPU'"),
        ({"backend": "openvino", "precision": "int4"}, "precision", "'int4'"),
        ({"backend": "openvino", "performance_hint": "FAST"}, "performance_hint", "'FAST'"),
        (
            {"backend": "openvino", "inputs": [{"name": "x", "datatype": "FP32", "dims": [-2]}]},
            "inputs.0.dims.0",
            "-2",
        ),
        (
            {"backend": "openvino", "dynamic_batching": {"max_queue_size": 0}},
            "dynamic_batching.max_queue_size",
            "0",
        ),
        (
            {"backend": "openvino", "dynamic_batching": {"priority_levels": 17}},
            "dynamic_batching.priority_levels",
            "17",
        ),
        (
            {
                "backend": "openvino",
                "dynamic_batching": {"priority_levels": 2, "default_priority_level": 3},
            },
            "default_priority_level",
            "3",
        ),
        (
            {"backend": "onnxruntime", "onnxruntime": {"execution_mode": "async"}},
            "onnxruntime.execution_mode",
            "'async'",
        ),
        ({"backend": "openvino", "name": "a/b"}, "name", "'a/b'"),
        (
            {
                "backend": "openvino",
                "outputs": [
                    {"name": "y", "datatype": "FP32", "dims": [1]},
                    {"name": "y", "datatype": "FP32", "dims": [2]},
                ],
            },
            "outputs has duplicate names",
            "['y', 'y']",
        ),
    ],
)
def test_bad_values_name_field_and_value(
    tmp_path: Path, raw: dict[str, Any], field: str, shown: str
) -> None:
    msg = _error(tmp_path, raw)
    assert field in msg
    assert shown in msg


def test_not_a_mapping(tmp_path: Path) -> None:
    msg = _error(tmp_path, ["backend", "openvino"])
    assert "expected a mapping" in msg
    assert "['backend', 'openvino']" in msg


def test_every_problem_is_reported(tmp_path: Path) -> None:
    msg = _error(tmp_path, {"backend": "openvino", "instances": 0, "threads": -2, "extra": 1})
    for field in ("instances", "threads", "extra"):
        assert f"{field}:" in msg


def test_parse_model_config_names_its_source() -> None:
    with pytest.raises(ConfigError, match=r"^parameters\.config: bogus: "):
        parse_model_config({"backend": "python", "bogus": True}, "parameters.config")


def test_config_files_are_read_as_utf8_whatever_the_locale(tmp_path: Path) -> None:
    """model.yaml and config.pbtxt are UTF-8 (YAML and protobuf text say so): a process whose
    locale encoding is ASCII (no UTF-8 mode) still reads non-ASCII comments and descriptions."""
    tmp_path = tmp_path / "m"
    tmp_path.mkdir()
    (tmp_path / "model.yaml").write_text(
        "# modèle de détection — visages\nbackend: openvino\n", encoding="utf-8"
    )
    (tmp_path / "config.pbtxt").write_text(
        '# modèle\nname: "m"\nbackend: "onnxruntime"\nmax_batch_size: 4\n', encoding="utf-8"
    )
    code = (
        "import sys, locale; from pathlib import Path\n"
        "assert locale.getencoding().lower() in ('ansi_x3.4-1968', 'ascii'), locale.getencoding()\n"
        "from frameserve.serving.config import read_yaml\n"
        "from frameserve.serving.triton_config import read_triton_config\n"
        "d = Path(sys.argv[1])\n"
        "yaml_backend = read_yaml(d / 'model.yaml')['backend']\n"
        "print(yaml_backend, read_triton_config(d / 'config.pbtxt').backend)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "LANG", "PYTHONUTF8"))}
    env.update(LC_ALL="C", PYTHONCOERCECLOCALE="0")
    out = subprocess.run(
        [sys.executable, "-X", "utf8=0", "-c", code, str(tmp_path)],
        env=env, capture_output=True, text=True, check=False, encoding="utf-8",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["openvino", "onnxruntime"]
