"""Small real ONNX models built with ``onnx.helper`` (no model hub needed).

- ``conv_net``: [N,3,224,224] -> 3x3 conv 64 /2 -> 3x3 conv 128 /2 -> 3x3 conv 128 -> global
  pool -> linear 1000; about 1.4 GFLOP per frame (the serving benchmark's compute-bound model).
- ``matmul_relu``: [N,64] x [64,64] -> ReLU (the overhead-bound model).
Weights are seeded, so every build of a model is identical.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

OPSET = 17
IR_VERSION = 9


def save_model(graph, path: Path) -> Path:  # type: ignore[no-untyped-def]
    """Wrap an ONNX graph in a checked model (opset 17) and write it to ``path``."""
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def conv_net(path: Path, seed: int = 0) -> Path:
    """The ~1.4 GFLOP/frame conv net, input ``images`` [N,3,224,224], output ``logits`` [N,1000]."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)

    def weight(name: str, shape: tuple[int, ...]):  # type: ignore[no-untyped-def]
        fan_in = int(np.prod(shape[1:]))
        arr = rng.normal(0, (2.0 / fan_in) ** 0.5, size=shape).astype(np.float32)
        return numpy_helper.from_array(arr, name)

    inits = [
        weight("w1", (64, 3, 3, 3)),
        numpy_helper.from_array(np.zeros(64, np.float32), "b1"),
        weight("w2", (128, 64, 3, 3)),
        numpy_helper.from_array(np.zeros(128, np.float32), "b2"),
        weight("w3", (128, 128, 3, 3)),
        numpy_helper.from_array(np.zeros(128, np.float32), "b3"),
        weight("fc", (128, 1000)),
        numpy_helper.from_array(np.zeros(1000, np.float32), "fcb"),
    ]
    pads = [1, 1, 1, 1]
    nodes = [
        helper.make_node("Conv", ["images", "w1", "b1"], ["c1"], strides=[2, 2], pads=pads),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], strides=[2, 2], pads=pads),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Conv", ["r2", "w3", "b3"], ["c3"], strides=[1, 1], pads=pads),
        helper.make_node("Relu", ["c3"], ["r3"]),
        helper.make_node("GlobalAveragePool", ["r3"], ["gp"]),
        helper.make_node("Flatten", ["gp"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "fc", "fcb"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "conv_net",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1000])],
        inits,
    )
    return save_model(graph, path)


def matmul_relu(path: Path, size: int = 64, seed: int = 0) -> Path:
    """``x`` [N,size] -> ``y`` = ReLU(x @ W) [N,size]."""
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(seed).normal(0, 1 / size**0.5, (size, size)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Relu", ["m"], ["y"])],
        "matmul_relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", size])],
        [numpy_helper.from_array(w, "w")],
    )
    return save_model(graph, path)


def write_model_yaml(folder: Path, config: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def make_example_repository(root: Path) -> list[str]:
    """A repository with the two benchmark models, one per runtime; returns the model names."""
    conv_net(root / "convnet" / "1" / "model.onnx")
    write_model_yaml(
        root / "convnet",
        {
            "backend": "openvino",
            "max_batch_size": 8,
            "dynamic_batching": {"max_queue_delay_ms": 2, "preferred_batch_sizes": [4, 8]},
            "performance_hint": "THROUGHPUT",
            "warmup": 1,
        },
    )
    matmul_relu(root / "matmul" / "1" / "model.onnx")
    write_model_yaml(
        root / "matmul",
        {"backend": "onnxruntime", "max_batch_size": 64, "dynamic_batching": {}, "warmup": 1},
    )
    return ["convnet", "matmul"]
