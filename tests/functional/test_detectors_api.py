"""Detector layouts served by a real server: /v1/models/{m}/predict on tiny ONNX models that emit
each YOLO/DETR layout, the zoo's ``nsfw`` on the astronaut, and layouts refused at load.

The tiny models (``detector_refs.constant_outputs``) give the same tensors for every image, so
the answer is checked against the reference decoding of those tensors with the letterbox of
the image sent.
"""

from __future__ import annotations

import io
import json
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skimage.data
import tritonclient.http as httpclient
from detector_refs import constant_outputs, ref_detr, ref_end2end, ref_yolo
from PIL import Image

from models import make_model
from servers import RunningServer, ServerLauncher

LABELS = ["person", "car", "dog"]
SIZE = 64  # the tiny models' input: 64 x 64
IMAGE = (128, 96)  # letterboxed into 64 x 64: scale 0.5, 8 pixels of padding on top
LETTERBOX = (0.5, (0.0, 8.0), IMAGE)
PRE = {"resize": {"mode": "letterbox", "size": [SIZE, SIZE]}, "scale": 0.0039, "layout": "NCHW"}
ASTRONAUT = skimage.data.astronaut()


def rows(seed: int, n: int = 60) -> np.ndarray:
    """YOLO rows x, y, w, h (tensor pixels) and 3 class scores, clustered."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(12, 52, (3, 2))
    xy = centres[rng.integers(0, 3, n)] + rng.normal(0, 1.5, (n, 2))
    wh = rng.uniform(6, 20, (n, 2))
    return np.concatenate([xy, wh, rng.uniform(0, 1, (n, 3)) ** 3], 1).astype(np.float32)


def end2end(seed: int, k: int = 20) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x1y1 = rng.uniform(0, 48, (k, 2))
    cols = [x1y1, x1y1 + rng.uniform(2, 14, (k, 2)), rng.uniform(0, 1, (k, 1)),
            rng.integers(0, 3, (k, 1))]  # fmt: skip
    return np.concatenate(cols, 1).astype(np.float32)


V5 = np.concatenate([rows(1)[:, :4], np.full((60, 1), 0.9, np.float32), rows(1)[:, 4:]], 1)
V8 = rows(2)
E2E = end2end(3)
DETR_LOGITS = np.random.default_rng(4).normal(0, 3, (30, 4)).astype(np.float32)
DETR_BOXES = np.concatenate(
    [np.random.default_rng(5).uniform(0.3, 0.7, (30, 2)), np.full((30, 2), 0.2)], 1
).astype(np.float32)
OUTS4 = {"num": "num", "boxes": "boxes", "scores": "scores", "classes": "classes"}

# name -> (outputs of the model, postprocess block, ONNX names metadata or None)
MODELS: dict[str, tuple[dict[str, np.ndarray], dict[str, Any], str | None]] = {
    "yolo-v5": ({"out": V5}, {"format": "v5", "output": "out"}, None),
    "yolo-v8": (
        {"output0": V8.T},
        {"format": "v8", "output": "output0"},
        "{0: 'person', 1: 'car', 2: 'dog'}",
    ),  # fmt: skip
    "yolo-v8t": ({"out": V8}, {"format": "v8", "output": "out", "transposed": True}, None),
    "yolo-e2e": ({"dets": E2E}, {"format": "end2end", "output": "dets"}, None),
    "yolo-e2e4": (
        {"num": np.array([12.0]), "boxes": E2E[:, :4], "scores": E2E[:, 4], "classes": E2E[:, 5]},
        {"format": "end2end", "outputs": OUTS4},
        None,
    ),  # fmt: skip
    "detr": (
        {"pred_boxes": DETR_BOXES, "pred_logits": DETR_LOGITS},
        {"task": "detr", "boxes": "pred_boxes", "logits": "pred_logits", "score_threshold": 0.3},
        None,
    ),  # fmt: skip
    # declared v5, but the model gives a v8 layout [4+3, 60]: refused at load
    "yolo-wrong": ({"out": V8.T}, {"format": "v5", "output": "out"}, None),
    # 2 labels for a model with 3 classes: refused at load
    "yolo-labels": ({"out": V8.T}, {"format": "v8", "output": "out", "labels": "two.txt"}, None),
}


def write_models(repo: Path) -> None:
    for name, (outputs, post, names) in MODELS.items():
        block = {"task": "yolo", **post}
        if names is None and "labels" not in block:
            block["labels"] = "labels.txt"
        folder = make_model(
            repo, name, "onnxruntime",
            lambda v, o=outputs, n=names: constant_outputs(v / "model.onnx", o, n, SIZE),
            {"max_batch_size": 4, "preprocess": PRE, "postprocess": block},
        )  # fmt: skip
        (folder / "labels.txt").write_text("\n".join(LABELS) + "\n")
        (folder / "two.txt").write_text("person\ncar\n")


@pytest.fixture(scope="module")
def server(
    zoo_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    folder = tmp_path_factory.mktemp("detectors")
    repo = folder / "models"
    repo.mkdir()
    shutil.copytree(zoo_repository / "nsfw", repo / "nsfw")
    zoo_yaml = (repo / "nsfw" / "model.yaml").read_text()
    assert "    min_score: 0.5\n" in zoo_yaml
    for name, unsafe in (("nsfw-faces", "[FACE_FEMALE, FACE_MALE]"), ("nsfw-typo", "[FACE]")):
        shutil.copytree(zoo_repository / "nsfw", repo / name)
        text = zoo_yaml.split("  verdict:")[0] + f"  verdict: {{unsafe: {unsafe}}}\n"
        (repo / name / "model.yaml").write_text(text)
    write_models(repo)
    running = ServerLauncher(folder).start(repo)
    yield running
    assert running.terminate() == 0, running.log()


def predict(server: RunningServer, model: str, image: np.ndarray, query: str = "") -> Any:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "PNG")
    request = urllib.request.Request(
        f"http://{server.http_url}/v1/models/{model}/predict{query}",
        data=buf.getvalue(),
        method="POST",
        headers={"Content-Type": "image/png"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def check(body: dict[str, Any], ref: tuple[np.ndarray, np.ndarray, list[int]]) -> None:
    boxes, scores, classes = ref
    found = body["detections"]
    assert len(found) == len(scores) > 0
    assert [d["label"] for d in found] == [LABELS[c] for c in classes]
    np.testing.assert_allclose([d["score"] for d in found], scores, atol=1e-4)
    np.testing.assert_allclose([d["box"] for d in found], boxes, atol=0.01)  # JSON: 2 decimals


def image() -> np.ndarray:
    return np.full((IMAGE[1], IMAGE[0], 3), 100, np.uint8)


def test_v5(server: RunningServer) -> None:
    status, body = predict(server, "yolo-v5", image())
    assert status == 200, body
    check(body, ref_yolo(V5.astype(np.float64), True, 0.25, 0.45, LETTERBOX))


@pytest.mark.parametrize("model", ["yolo-v8", "yolo-v8t"])
def test_v8_names_from_metadata_and_transposed(server: RunningServer, model: str) -> None:
    status, body = predict(server, model, image())
    assert status == 200, body
    check(body, ref_yolo(V8.astype(np.float64), False, 0.25, 0.45, LETTERBOX))


def test_v8_request_options(server: RunningServer) -> None:
    status, body = predict(server, "yolo-v8", image(), "?score_threshold=0.5&max_results=2")
    assert status == 200, body
    ref = ref_yolo(V8.astype(np.float64), False, 0.5, 0.45, LETTERBOX)
    check(body, (ref[0][:2], ref[1][:2], ref[2][:2]))


def test_end2end_layouts(server: RunningServer) -> None:
    status, body = predict(server, "yolo-e2e", image())
    assert status == 200, body
    check(body, ref_end2end(E2E.astype(np.float64), 0.25, LETTERBOX))
    status, body = predict(server, "yolo-e2e4", image())
    assert status == 200, body
    check(body, ref_end2end(E2E[:12].astype(np.float64), 0.25, LETTERBOX))


def test_detr(server: RunningServer) -> None:
    status, body = predict(server, "detr", image())
    assert status == 200, body
    logits, boxes = DETR_LOGITS.astype(np.float64), DETR_BOXES.astype(np.float64)
    check(body, ref_detr(logits, boxes, 0.3, (SIZE, SIZE), LETTERBOX))


def test_layouts_that_do_not_fit_fail_at_load(server: RunningServer) -> None:
    client = httpclient.InferenceServerClient(server.http_url)
    index = {r["name"]: r for r in client.get_model_repository_index()}
    wrong = index["yolo-wrong"]
    assert wrong["state"] == "UNAVAILABLE"
    assert "'out' [7, 60]" in wrong["reason"] and "[A, 8]" in wrong["reason"]
    assert "fits format v8" in wrong["reason"]
    labels = index["yolo-labels"]
    assert labels["state"] == "UNAVAILABLE" and "2 labels" in labels["reason"]
    assert "'out' [7, 60]" in labels["reason"] and "[6, A]" in labels["reason"]
    assert index["yolo-v8"]["state"] == "READY"


def test_nsfw_finds_her_face_and_says_safe(server: RunningServer) -> None:
    status, body = predict(server, "nsfw", ASTRONAUT)
    assert status == 200, body
    assert body["verdict"] == {"label": "safe", "labels": [], "score": 0.0}
    faces = [d for d in body["detections"] if d["label"] == "FACE_FEMALE"]
    assert len(faces) == 1 and faces[0]["score"] > 0.5
    # her face in skimage's astronaut (512 x 512): about x 170-280, y 80-190
    x1, y1, x2, y2 = faces[0]["box"]
    inter = max(0, min(x2, 280) - max(x1, 170)) * max(0, min(y2, 190) - max(y1, 80))
    union = (x2 - x1) * (y2 - y1) + 110 * 110 - inter
    assert inter / union > 0.6, faces[0]["box"]


def test_verdict_label_sets_are_configurable(server: RunningServer) -> None:
    status, body = predict(server, "nsfw-faces", ASTRONAUT)
    assert status == 200, body
    [face] = [d for d in body["detections"] if d["label"] == "FACE_FEMALE"]
    assert body["verdict"] == {"label": "unsafe", "labels": ["FACE_FEMALE"], "score": face["score"]}
    status, body = predict(server, "nsfw-faces", ASTRONAUT, "?score_threshold=0.95")
    assert status == 200 and body["verdict"]["label"] == "safe", body


def test_unknown_verdict_labels_fail_at_load(server: RunningServer) -> None:
    client = httpclient.InferenceServerClient(server.http_url)
    typo = [r for r in client.get_model_repository_index() if r["name"] == "nsfw-typo"][0]
    assert typo["state"] == "UNAVAILABLE"
    assert "unknown labels ['FACE']" in typo["reason"] and "'FACE_FEMALE'" in typo["reason"]
