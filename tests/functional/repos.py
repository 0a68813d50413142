"""Model repositories for the functional tests: real ONNX models and small Python models."""

from __future__ import annotations

import textwrap
from pathlib import Path

from frameserve.tools.example_models import conv_net, matmul_relu, write_model_yaml

# Every v2 datatype, served by a Python model that returns its input unchanged.
ECHO_DATATYPES = (
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BF16", "BYTES",
)  # fmt: skip

ECHO = """
def process(batch):
    return {"OUT": batch["IN"]}
"""

SLOW = """
import time

def setup(config):
    global DELAY
    DELAY = float(config["parameters"].get("delay_s", 0.2))

def process(batch):
    time.sleep(DELAY)
    return {"y": batch["x"] * 2}
"""

FAILING = """
def process(batch):
    if (batch["x"] < 0).any():
        raise ValueError("negative input")
    return {"y": batch["x"]}
"""


def python_model(repo: Path, name: str, source: str, config: dict, version: int = 1) -> Path:
    folder = repo / name
    (folder / str(version)).mkdir(parents=True, exist_ok=True)
    (folder / str(version) / "model.py").write_text(textwrap.dedent(source))
    write_model_yaml(folder, {"backend": "python", **config})
    return folder


def echo_models(repo: Path) -> None:
    for dt in ECHO_DATATYPES:
        tensor = {"datatype": dt, "dims": [-1]}
        python_model(
            repo,
            f"echo_{dt.lower()}",
            ECHO,
            {
                "max_batch_size": 8,
                "inputs": [{"name": "IN", **tensor}],
                "outputs": [{"name": "OUT", **tensor}],
                "warmup": 0,
            },
        )


def api_repository(repo: Path) -> Path:
    """matmul (ONNX Runtime), convnet (OpenVINO), echo models of every datatype, failing, slow."""
    matmul_relu(repo / "matmul" / "1" / "model.onnx")
    write_model_yaml(
        repo / "matmul",
        {"backend": "onnxruntime", "max_batch_size": 16, "dynamic_batching": {}, "warmup": 1},
    )
    conv_net(repo / "convnet" / "1" / "model.onnx")
    write_model_yaml(
        repo / "convnet",
        {"backend": "openvino", "max_batch_size": 4, "precision": "f32", "warmup": 1},
    )
    echo_models(repo)
    io = {
        "inputs": [{"name": "x", "datatype": "FP32", "dims": [4]}],
        "outputs": [{"name": "y", "datatype": "FP32", "dims": [4]}],
    }
    python_model(repo, "failing", FAILING, {"max_batch_size": 8, **io, "warmup": 0})
    python_model(
        repo,
        "slow",
        SLOW,
        {
            "max_batch_size": 8,
            "dynamic_batching": {"max_queue_size": 4},
            "parameters": {"delay_s": 0.3},
            **io,
            "warmup": 0,
        },
    )
    return repo
