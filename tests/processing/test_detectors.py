"""The generic detector decoders against each layout's reference decoding on the same tensors.

References (``tests/detector_refs.py``) are plain numpy with a plain greedy NMS; the decoder
under test uses OpenCV's NMS and the pre-processing's own letterbox geometry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skimage.data
from detector_refs import ref_detr, ref_end2end, ref_nudenet, ref_yolo

from frameserve.errors import ConfigError, ModelLoadError
from frameserve.processing.detectors import judge, parse_names
from frameserve.processing.results import Detections, Moderation
from frameserve.processing.spec import PreprocessSpec, VerdictSpec
from frameserve.processing.tasks import DecodeOptions, ModelProcessing
from frameserve.serving.config import parse_model_config

LABELS = ["person", "car", "dog"]
SOURCE = (640, 360)  # letterboxed into 320 x 320: scale 0.5, 70 pixels of padding on top
LETTERBOX = (0.5, (0.0, 70.0), SOURCE)
PRE = {"resize": {"mode": "letterbox", "size": [320, 320]}, "layout": "NCHW"}


def processing(post: dict[str, Any], folder: Path, metadata: dict[str, str] | None = None):
    """A ModelProcessing for ``post`` with labels.txt (LABELS) in ``folder``."""
    (folder / "labels.txt").write_text("\n".join(LABELS) + "\n")
    post = {"labels": "labels.txt", **post} if metadata is None else post
    config = parse_model_config(
        {"backend": "onnxruntime", "preprocess": PRE, "postprocess": post}, "test"
    )
    assert config.preprocess is not None
    meta = (lambda: metadata) if metadata is not None else None
    return ModelProcessing(config.preprocess, config.postprocess, folder, metadata=meta)


def geometry(p: ModelProcessing):
    _, geometries = p.preprocess([np.zeros((SOURCE[1], SOURCE[0], 3), np.uint8)])
    g = geometries[0]
    assert g.scale == (0.5, 0.5) and g.pad == (0.0, 70.0)
    return g


def candidates(seed: int, n: int = 400, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Boxes clustered around a few centres (so suppression matters), and class scores."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(40, 280, (6, 2))
    xy = centres[rng.integers(0, 6, n)] + rng.normal(0, 5, (n, 2))
    wh = rng.uniform(30, 90, (n, 2))
    cls = rng.uniform(0, 1, (n, classes)) ** 3
    return np.concatenate([xy, wh], 1).astype(np.float32), cls.astype(np.float32)


def assert_same(found: Detections, ref: tuple[np.ndarray, np.ndarray, list[int]]) -> None:
    boxes, scores, classes = ref
    assert len(found) == len(scores) > 0
    np.testing.assert_allclose(found.scores, scores, rtol=1e-6)
    np.testing.assert_allclose(found.boxes, boxes, atol=1e-3)
    assert found.labels == [LABELS[c] for c in classes]


@pytest.mark.parametrize("seed", [1, 2])
def test_v8_matches_the_reference(tmp_path: Path, seed: int) -> None:
    xywh, cls = candidates(seed)
    rows = np.concatenate([xywh, cls], 1)
    p = processing({"task": "yolo", "format": "v8", "output": "out"}, tmp_path)
    found = p.decode({"out": rows.T}, geometry(p))
    assert isinstance(found, Detections)
    assert_same(found, ref_yolo(rows.astype(np.float64), False, 0.25, 0.45, LETTERBOX))


def test_v8_transposed_class_agnostic_and_request_options(tmp_path: Path) -> None:
    xywh, cls = candidates(3)
    rows = np.concatenate([xywh, cls], 1)
    post = {"task": "yolo", "format": "v8", "output": "out", "transposed": True,
            "class_agnostic": True, "iou_threshold": 0.5}  # fmt: skip
    p = processing(post, tmp_path)
    found = p.decode({"out": rows[None]}, geometry(p), DecodeOptions(0.4, 5))
    assert isinstance(found, Detections)
    ref = ref_yolo(rows.astype(np.float64), False, 0.4, 0.5, LETTERBOX, agnostic=True)
    assert_same(found, (ref[0][:5], ref[1][:5], ref[2][:5]))


def test_v5_objectness_times_class_score(tmp_path: Path) -> None:
    xywh, cls = candidates(4)
    obj = np.random.default_rng(5).uniform(0.3, 1, (len(cls), 1)).astype(np.float32)
    rows = np.concatenate([xywh, obj, cls], 1)
    p = processing({"task": "yolo", "format": "v5", "output": "out"}, tmp_path)
    found = p.decode({"out": rows}, geometry(p))
    assert isinstance(found, Detections)
    assert_same(found, ref_yolo(rows.astype(np.float64), True, 0.25, 0.45, LETTERBOX))


def test_normalized_boxes(tmp_path: Path) -> None:
    xywh, cls = candidates(6)
    rows = np.concatenate([xywh, cls], 1)
    normalized = np.concatenate([xywh / 320.0, cls], 1)
    p = processing({"task": "yolo", "format": "v8", "output": "o", "normalized": True}, tmp_path)
    found = p.decode({"o": normalized.T}, geometry(p))
    assert isinstance(found, Detections)
    assert_same(found, ref_yolo(rows.astype(np.float64), False, 0.25, 0.45, LETTERBOX))


def end2end_rows(seed: int, k: int = 50) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x1y1 = rng.uniform(0, 250, (k, 2))
    rows = np.concatenate(
        [x1y1, x1y1 + rng.uniform(5, 60, (k, 2)), rng.uniform(0, 1, (k, 1)),
         rng.integers(0, 3, (k, 1))], axis=1,
    )  # fmt: skip
    return rows.astype(np.float32)


def test_end2end_one_output(tmp_path: Path) -> None:
    rows = end2end_rows(7)
    p = processing({"task": "yolo", "format": "end2end", "output": "dets"}, tmp_path)
    found = p.decode({"dets": rows}, geometry(p))
    assert isinstance(found, Detections)
    assert_same(found, ref_end2end(rows.astype(np.float64), 0.25, LETTERBOX))


def test_end2end_four_outputs_take_num_rows(tmp_path: Path) -> None:
    rows = end2end_rows(8)
    outputs = {"num": np.array([20]), "boxes": rows[:, :4], "scores": rows[:, 4],
               "classes": rows[:, 5].astype(np.int32)}  # fmt: skip
    names = {k: k for k in ("num", "boxes", "scores", "classes")}
    post = {"task": "yolo", "format": "end2end", "outputs": names}
    p = processing(post, tmp_path)
    found = p.decode(outputs, geometry(p))
    assert isinstance(found, Detections)
    assert_same(found, ref_end2end(rows[:20].astype(np.float64), 0.25, LETTERBOX))


def test_detr_softmax_with_no_object_class(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    logits = (rng.normal(0, 3, (100, 4))).astype(np.float32)  # 3 classes + "no object"
    boxes = np.concatenate([rng.uniform(0.2, 0.8, (100, 2)), rng.uniform(0.05, 0.3, (100, 2))], 1)
    p = processing({"task": "detr", "boxes": "b", "logits": "l"}, tmp_path)
    found = p.decode({"b": boxes.astype(np.float32), "l": logits}, geometry(p))
    assert isinstance(found, Detections)
    ref = ref_detr(logits.astype(np.float64), boxes.astype(np.float32).astype(np.float64),
                   0.5, (320, 320), LETTERBOX)  # fmt: skip
    assert_same(found, ref)


def test_detr_sigmoid_scores_every_query_class_pair(tmp_path: Path) -> None:
    logits = np.full((2, 3), -9.0, np.float32)
    logits[0, 0], logits[0, 2], logits[1, 1] = 2.0, 1.0, 0.5
    boxes = np.array([[0.5, 0.5, 0.2, 0.2], [0.25, 0.5, 0.1, 0.1]], np.float32)
    post = {"task": "detr", "boxes": "b", "logits": "l", "activation": "sigmoid"}
    p = processing(post, tmp_path)
    found = p.decode({"b": boxes, "l": logits}, geometry(p))
    assert isinstance(found, Detections)
    assert found.labels == ["person", "dog", "car"]
    np.testing.assert_allclose(found.scores, 1 / (1 + np.exp(-np.array([2.0, 1.0, 0.5]))))
    # tensor box 128..192 on both axes; (tensor - pad) / 0.5
    np.testing.assert_allclose(found.boxes[0], [256, 116, 384, 244], atol=1e-4)


def test_class_names_from_the_onnx_metadata(tmp_path: Path) -> None:
    names = "{0: 'person', 1: 'car', 2: 'dog'}"
    p = processing({"task": "yolo", "format": "v8", "output": "o"}, tmp_path, {"names": names})
    assert p.labels == tuple(LABELS)


@pytest.mark.parametrize(
    "text", ["__import__('os').system('true')", "{0: 'a', 2: 'b'}", "{'a': 0}", "[1, 2"]
)
def test_names_metadata_is_parsed_as_literals_only(text: str) -> None:
    with pytest.raises(ConfigError, match="names"):
        parse_names(text, "names")


def test_no_labels_anywhere_names_both_places(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="labels file") as err:
        processing({"task": "yolo", "format": "v8", "output": "o"}, tmp_path, {"author": "x"})
    assert "'author'" in str(err.value)


# -- load-time checks ---------------------------------------------------------------------------


def test_a_layout_matching_no_declared_form_fails_at_load(tmp_path: Path) -> None:
    p = processing({"task": "yolo", "format": "v5", "output": "output0"}, tmp_path)
    with pytest.raises(ModelLoadError) as err:
        p.check_outputs({"output0": (7, 2100)}, "m/model.yaml")  # a v8 layout for 3 labels
    message = str(err.value)
    assert "'output0' [7, 2100]" in message and "[A, 8]" in message  # found and expected
    assert "fits format v8" in message and "v8 [4+C, A]" in message


def test_a_labels_file_of_the_wrong_count_fails_at_load(tmp_path: Path) -> None:
    p = processing({"task": "yolo", "format": "v8", "output": "o", "transposed": True}, tmp_path)
    p.check_outputs({"o": (-1, 7)}, "m")  # 4 + 3 labels: fine
    with pytest.raises(ModelLoadError, match=r"3 labels.*'o' \[2100, 22\].*\[A, 7\]"):
        p.check_outputs({"o": (2100, 22)}, "m")


def test_detr_and_four_output_shapes_are_checked(tmp_path: Path) -> None:
    p = processing({"task": "detr", "boxes": "b", "logits": "l"}, tmp_path)
    p.check_outputs({"b": (100, 4), "l": (100, 4)}, "m")
    with pytest.raises(ModelLoadError, match=r"'l' \[100, 3\].*'l' \[Q, 4\]"):
        p.check_outputs({"b": (100, 4), "l": (100, 3)}, "m")
    outs = {"num": "n", "boxes": "b", "scores": "s", "classes": "c"}
    p = processing({"task": "yolo", "format": "end2end", "outputs": outs}, tmp_path)
    p.check_outputs({"n": (1,), "b": (100, 4), "s": (100,), "c": (100,)}, "m")
    with pytest.raises(ModelLoadError, match=r"'b' \[100, 5\]"):
        p.check_outputs({"n": (1,), "b": (100, 5), "s": (100,), "c": (100,)}, "m")


def test_unknown_verdict_labels_fail_at_load_with_the_known_ones(tmp_path: Path) -> None:
    post = {"task": "yolo", "format": "v8", "output": "o", "verdict": {"unsafe": ["cat", "dog"]}}
    with pytest.raises(ConfigError, match=r"unknown labels \['cat'\].*\['person', 'car', 'dog'\]"):
        processing(post, tmp_path)


def test_verdict_thresholds_per_label() -> None:
    spec = VerdictSpec(unsafe=["car", "dog"], min_score=0.5, scores={"dog": 0.9})
    found = Detections(np.zeros((3, 4)), np.array([0.95, 0.8, 0.6]), ["person", "dog", "car"])
    verdict = judge(found, spec)
    assert verdict.to_json() == {"label": "unsafe", "labels": ["car"], "score": 0.8}
    assert judge(found.take([0, 1]), spec).to_json() == {
        "label": "safe", "labels": [], "score": 0.8
    }  # fmt: skip


def test_the_verdict_travels_with_the_detections(tmp_path: Path) -> None:
    xywh, cls = candidates(10)
    post = {"task": "yolo", "format": "v8", "output": "o", "verdict": {"unsafe": ["dog"]}}
    p = processing(post, tmp_path)
    result = p.decode({"o": np.concatenate([xywh, cls], 1).T}, geometry(p))
    assert isinstance(result, Moderation)
    body = result.to_json()
    assert set(body) == {"detections", "verdict"}
    dogs = [d["score"] for d in body["detections"] if d["label"] == "dog"]
    assert body["verdict"]["label"] == ("unsafe" if max(dogs) >= 0.5 else "safe")


# -- NudeNet's own post-processing on the real model's output ---------------------------------


def test_nsfw_decoding_matches_nudenets_postprocess(zoo_repository: Path) -> None:
    import onnxruntime as ort

    folder = zoo_repository / "nsfw"
    config = parse_model_config(
        __import__("yaml").safe_load((folder / "model.yaml").read_text()), "nsfw"
    )
    assert isinstance(config.preprocess, PreprocessSpec)
    p = ModelProcessing(config.preprocess, config.postprocess, folder)
    session = ort.InferenceSession(str(folder / "1" / "model.onnx"))
    image = skimage.data.astronaut()
    for crop in (image, image[:, 60:400], image[100:, :]):  # square, tall, wide
        tensor, geometries = p.preprocess([np.ascontiguousarray(crop)])
        output = session.run(None, {"images": tensor})[0]
        result = p.decode({"output0": output[0]}, geometries[0])
        assert isinstance(result, Moderation)
        found = result.detections
        ref = ref_nudenet(output, crop.shape[1], crop.shape[0])
        assert len(found) == len(ref) > 0
        assert found.labels == [p.labels[r["class"]] for r in ref]
        np.testing.assert_allclose(found.scores, [r["score"] for r in ref], rtol=1e-6)
        # NudeNet maps back with the square's scale (side / 320), frameserve with the size the
        # image was resized to (rounded to whole pixels): under a pixel apart
        np.testing.assert_allclose(found.boxes, [r["box"] for r in ref], atol=1.0)
