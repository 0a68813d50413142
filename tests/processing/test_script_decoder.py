"""``postprocess: {task: script_detections}``: a script model's padded rows -> detections in
source pixels, through the same ``ModelProcessing`` every caller uses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import TypeAdapter, ValidationError

from frameserve.errors import ModelExecutionError
from frameserve.processing.results import Detections
from frameserve.processing.spec import PostprocessSpec, PreprocessSpec
from frameserve.processing.tasks import DETECTION_TASKS, DecodeOptions, ModelProcessing
from frameserve.processing.transform import Geometry

POST = TypeAdapter(PostprocessSpec)
PRE = PreprocessSpec.model_validate(
    {"resize": {"mode": "letterbox", "size": [100, 100]}, "dtype": "UINT8"}
)


def processing(**post: object) -> ModelProcessing:
    spec = POST.validate_python({"task": "script_detections", "boxes": "b", "scores": "s", **post})
    return ModelProcessing(PRE, spec, Path("."))


def geometry() -> Geometry:
    """A 200x100 frame letterboxed into 100x100: scale 0.5, 25 pixels of padding on top."""
    _, [geo] = processing().preprocess([np.zeros((100, 200, 3), np.uint8)])
    assert (geo.scale, geo.pad) == ((0.5, 0.5), (0.0, 25.0))
    return geo


def test_padded_rows_are_dropped_and_boxes_mapped_to_source() -> None:
    outputs = {
        "b": np.array([[10, 25, 60, 75], [0, 0, 0, 0], [0, 25, 100, 75]], np.float32),
        "s": np.array([0.4, 0.0, 0.9], np.float32),
        "l": np.array([1, 0, 0], np.int64),
    }
    result = processing(labels="l", label_names=["car", "bus"]).decode(outputs, geometry())
    assert isinstance(result, Detections)
    assert result.labels == ["car", "bus"]  # best first; the padded row is gone
    np.testing.assert_allclose(result.boxes, [[0, 0, 200, 100], [20, 0, 120, 100]])
    np.testing.assert_allclose(result.scores, [0.9, 0.4])
    assert "script_detections" in DETECTION_TASKS


def test_normalized_boxes_text_labels_and_request_options() -> None:
    outputs = {
        "b": np.array([[0.0, 0.25, 0.5, 0.75], [0.5, 0.25, 1.0, 0.75]], np.float32),
        "s": np.array([0.3, 0.8], np.float32),
        "l": np.array([b"left", b"right"], dtype=object),
    }
    proc = processing(labels="l", coordinates="normalized")
    result = proc.decode(outputs, geometry(), DecodeOptions(score_threshold=0.5))
    assert isinstance(result, Detections)
    assert result.labels == ["right"]
    np.testing.assert_allclose(result.boxes, [[100, 0, 200, 100]])
    unlabelled = processing(label="thing").decode(outputs, geometry())
    assert isinstance(unlabelled, Detections) and unlabelled.labels == ["thing", "thing"]


def test_mismatched_outputs_name_what_was_expected() -> None:
    boxes = np.zeros((3, 4), np.float32)
    with pytest.raises(ModelExecutionError, match=r"expected \[2, 4\]"):
        processing().decode({"b": boxes, "s": np.ones(2, np.float32)}, geometry())
    outputs = {"b": boxes, "s": np.ones(3, np.float32), "l": np.array([0, 1, 5])}
    with pytest.raises(ModelExecutionError, match=r"gives class 5, expected 0..1"):
        processing(labels="l", label_names=["a", "b"]).decode(outputs, geometry())


def test_label_names_need_a_labels_output() -> None:
    with pytest.raises(ValidationError, match="label_names needs labels"):
        processing(label_names=["a"])
    assert processing(labels="l").output_names() == ["b", "s", "l"]
