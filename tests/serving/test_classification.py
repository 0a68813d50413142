"""Triton's classification extension: top-N classes written as Triton writes them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from frameserve.cpu import CpuBudget
from frameserve.errors import ConfigError, InvalidInput
from frameserve.serving.classification import read_labels, top_classes
from frameserve.serving.config import ModelConfig, TensorConfig
from frameserve.serving.model import ModelVersion
from frameserve.serving.types import InferRequest, InferResponse, InputTensor

from models import identity


def test_scores_indices_and_labels_per_batch_row() -> None:
    scores = np.array([[0.1, 0.5, 0.25, 0.5], [3.0, 2.0, 1.0, 0.0]], np.float32)
    out = top_classes(scores, 3, batched=True, labels=("a", "b"))
    assert out.shape == (2, 3)
    # ties keep the lower index first; an index past the last label gets no label
    assert out[0].tolist() == [b"0.500000:1:b", b"0.500000:3", b"0.250000:2"]
    assert out[1].tolist() == [b"3.000000:0:a", b"2.000000:1:b", b"1.000000:2"]


def test_integers_unbatched_and_a_count_above_the_classes() -> None:
    out = top_classes(np.array([[1], [250], [3]], np.uint8), 10, batched=False, labels=())
    assert out.tolist() == [b"250:1", b"3:2", b"1:0"]


def test_label_files(tmp_path: Path) -> None:
    path = tmp_path / "labels.txt"
    path.write_bytes(b"cat\r\ndog\n\nbird")
    assert read_labels(path) == ("cat", "dog", "", "bird")
    path.write_text("cat\n")
    assert read_labels(path) == ("cat",)
    with pytest.raises(ConfigError, match=r"missing.txt: label_filename: cannot read"):
        read_labels(tmp_path / "missing.txt")


def _version(tmp_path: Path, datatype: str, labels: str | None) -> ModelVersion:
    path = identity(tmp_path / "m" / "1" / "model.onnx", datatype, ["N", 4]).parent
    if labels is not None:
        (tmp_path / "m" / "labels.txt").write_text(labels)
    config = ModelConfig(
        backend="onnxruntime",
        max_batch_size=2,
        outputs=[
            TensorConfig(
                name="OUTPUT0",
                datatype=datatype,
                dims=[4],
                label_filename="labels.txt" if labels is not None else None,
            )
        ],
    )
    return ModelVersion("m", 1, config, path, CpuBudget(2, "test"), None)


def test_a_version_answers_with_its_labels(tmp_path: Path) -> None:
    mv = _version(tmp_path, "FP32", "w\nx\ny\nz\n")
    x = np.array([[0.0, 3.0, 1.0, 2.0], [4.0, 0.0, 0.0, 0.0]], np.float32)
    request = InferRequest("m", [InputTensor("INPUT0", "FP32", x.shape, x)])
    request.classification = {"OUTPUT0": 2}

    async def main() -> InferResponse:
        mv.start()
        try:
            return await mv.infer(request)
        finally:
            await mv.close(5)

    (out,) = asyncio.run(main()).outputs
    assert (out.datatype, out.shape) == ("BYTES", (2, 2))
    assert out.data.tolist() == [
        [b"3.000000:1:x", b"2.000000:3:z"],
        [b"4.000000:0:w", b"0.000000:1:x"],
    ]


def test_unclassifiable_requests_are_refused_by_name(tmp_path: Path) -> None:
    mv = _version(tmp_path, "BOOL", None)
    x = np.zeros((1, 4), bool)

    def request(classification: dict[str, int], outputs: list[str] | None = None):
        r = InferRequest("m", [InputTensor("INPUT0", "BOOL", x.shape, x)], outputs=outputs)
        r.classification = classification
        return r

    with pytest.raises(InvalidInput, match=r"classification: output 'OUTPUT0' is BOOL"):
        mv.prepare(request({"OUTPUT0": 1}))
    with pytest.raises(InvalidInput, match=r"outputs.nope.parameters.classification: expected"):
        mv.prepare(request({"nope": 1}))
