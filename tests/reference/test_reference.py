"""Sanity tests of the MediaPipe references themselves (not of frameserve).

The model files are MediaPipe's own, from the zoo repository the suite pulls (see
reference/mediapipe_models.py).

``MEDIAPIPE_ASTRONAUT`` holds what MediaPipe 0.10.21 itself (its Python solutions API on CPU,
``FaceDetection(model_selection=0|1, min_detection_confidence=0.5|0.6)`` and
``SelfieSegmentation(model_selection=0)``) returned for ``skimage.data.astronaut()`` and three
re-framings of it, recorded once; the references must reproduce it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeAlias

import numpy as np
import pytest
import skimage.data
from reference.mediapipe_faces import (
    FACE_MODELS,
    Detections,
    Sampler,
    Variant,
    decode_detections,
    face_anchors,
    iou,
    letterbox_input,
    reference_face_input,
    reference_faces,
    ssd_anchors,
    weighted_nms,
)
from reference.mediapipe_models import (
    FACE_FULL_RANGE,
    FACE_SHORT_RANGE,
    SELFIE,
    mediapipe_model,
)
from reference.mediapipe_selfie import (
    reference_person_input,
    reference_person_mask,
    reference_person_probability,
)

# The astronaut's face lies in x 170-300, y 40-200 (checked: both detectors put it at about
# x 172-279, y 66-178).
FACE_REGION = (170.0, 40.0, 300.0, 200.0)


def astronaut() -> np.ndarray:
    return skimage.data.astronaut()  # 512x512 RGB uint8


def _wide() -> np.ndarray:
    canvas = np.zeros((512, 900, 3), dtype=np.uint8)
    canvas[:, 200:712] = astronaut()
    return canvas


IMAGES: dict[str, Callable[[], np.ndarray]] = {
    "astronaut": astronaut,
    "tall_400x512": lambda: np.ascontiguousarray(astronaut()[:, 60:460]),
    "wide_512x300": lambda: np.ascontiguousarray(astronaut()[30:330, :]),
    "black_sides_900x512": _wide,
}

# (image, variant) -> faces from MediaPipe 0.10.21: box [x1, y1, x2, y2] px, score, keypoints.
MEDIAPIPE_ASTRONAUT: dict[tuple[str, str], list[dict]] = {
    ("astronaut", "short"): [
        {
            "box": [177.57, 82.87, 272.91, 178.22],
            "score": 0.9217,
            "keypoints": [
                [201.5, 104.9],
                [245.8, 109.1],
                [220.4, 127.3],
                [219.8, 148.6],
                [178.2, 115.7],
                [272.2, 123.9],
            ],
        }
    ],
    ("astronaut", "full"): [
        {
            "box": [173.66, 67.78, 277.59, 171.7],
            "score": 0.9121,
            "keypoints": [
                [202.8, 103.5],
                [248.0, 105.9],
                [224.0, 132.3],
                [222.6, 148.5],
                [178.6, 107.5],
                [271.4, 112.3],
            ],
        }
    ],
    ("tall_400x512", "short"): [
        {
            "box": [119.47, 80.84, 216.78, 178.15],
            "score": 0.932,
            "keypoints": [
                [145.9, 102.7],
                [190.7, 109.0],
                [164.7, 126.8],
                [162.5, 148.1],
                [120.3, 111.9],
                [215.4, 124.6],
            ],
        }
    ],
    ("tall_400x512", "full"): [
        {
            "box": [112.03, 67.05, 217.88, 172.91],
            "score": 0.8381,
            "keypoints": [
                [142.1, 103.0],
                [188.1, 106.8],
                [165.1, 132.5],
                [162.8, 149.0],
                [114.9, 106.5],
                [208.7, 114.3],
            ],
        }
    ],
    ("wide_512x300", "short"): [
        {
            "box": [182.31, 53.67, 273.16, 144.52],
            "score": 0.9386,
            "keypoints": [
                [202.8, 79.8],
                [241.2, 79.5],
                [218.1, 100.9],
                [220.8, 118.8],
                [188.1, 88.1],
                [270.8, 87.5],
            ],
        }
    ],
    ("wide_512x300", "full"): [
        {
            "box": [170.84, 36.63, 279.34, 145.15],
            "score": 0.959,
            "keypoints": [
                [202.4, 73.7],
                [246.8, 74.1],
                [222.0, 101.0],
                [221.6, 119.2],
                [181.4, 81.0],
                [273.2, 83.7],
            ],
        }
    ],
    ("black_sides_900x512", "short"): [],
    ("black_sides_900x512", "full"): [
        {
            "box": [375.91, 65.36, 484.08, 173.52],
            "score": 0.8449,
            "keypoints": [
                [407.6, 97.9],
                [453.1, 102.8],
                [426.7, 124.1],
                [423.5, 145.6],
                [380.8, 107.7],
                [476.9, 117.9],
            ],
        }
    ],
}
# Fraction of pixels MediaPipe 0.10.21's selfie mask has above 0.5, per image.
MEDIAPIPE_MASK_COVERAGE = {
    "astronaut": 0.5447,
    "tall_400x512": 0.6217,
    "wide_512x300": 0.3711,
    "black_sides_900x512": 0.2624,
}


FindModel: TypeAlias = Callable[[Variant], str]


@pytest.fixture
def face_model(zoo_repository: Path) -> FindModel:
    """``face_model(variant)``: that detector's .tflite path; skips the test when it is absent."""

    def find(variant: Variant) -> str:
        name = FACE_FULL_RANGE if variant == "full" else FACE_SHORT_RANGE
        return str(mediapipe_model(zoo_repository, name))

    return find


@pytest.fixture(scope="module")
def selfie_model(zoo_repository: Path) -> str:
    return str(mediapipe_model(zoo_repository, SELFIE))


# --------------------------------------------------------------------------- no model needed


def test_anchor_counts_and_layout() -> None:
    full, short = face_anchors("full"), face_anchors("short")
    assert full.shape == (2304, 4) and short.shape == (896, 4)
    assert (full[:, 2:] == 1).all() and (short[:, 2:] == 1).all()  # fixed_anchor_size
    # Full range: 48x48, one anchor per cell, row-major (y outer).
    assert np.allclose(full[0, :2], [0.5 / 48, 0.5 / 48])
    assert np.allclose(full[1, :2], [1.5 / 48, 0.5 / 48])
    assert np.allclose(full[48, :2], [0.5 / 48, 1.5 / 48])
    # Short range: 16x16 cells with 2 anchors, then 8x8 cells with 6 (3 merged layers x 2).
    assert np.allclose(short[0, :2], short[1, :2])
    assert np.allclose(short[2, :2], [1.5 / 16, 0.5 / 16])
    assert np.allclose(short[512:518, :2], [0.5 / 8, 0.5 / 8])
    assert np.allclose(short[518, :2], [1.5 / 8, 0.5 / 8])
    assert np.allclose(short[-1, :2], [7.5 / 8, 7.5 / 8])
    # Without interpolated anchors a layer gives len(aspect_ratios) per cell.
    assert len(ssd_anchors(128, (8, 16, 16, 16), interpolated_scale_aspect_ratio=0.0)) == 448
    assert FACE_MODELS["full"].num_boxes == 2304 and FACE_MODELS["short"].num_boxes == 896


def test_decode_one_box() -> None:
    anchors = np.array([[0.25, 0.75, 1.0, 1.0], [0.5, 0.5, 1.0, 1.0], [0.5, 0.5, 1.0, 1.0]])
    raw = np.zeros((3, 16), dtype=np.float32)
    raw[0, :4] = [12.8, -6.4, 25.6, 51.2]  # x, y, w, h in tensor pixels of S = 128
    raw[0, 4:] = np.arange(12) * 1.28
    raw[2, 2] = -1.0  # negative width: dropped even with a high score
    logits = np.array([[0.0], [-0.01], [5.0]], dtype=np.float32)  # sigmoid(0) = 0.5 kept
    det = decode_detections(raw, logits, anchors, 128.0, 0.5)
    assert len(det) == 1
    assert np.allclose(det.boxes[0], [0.25, 0.5, 0.45, 0.9])  # centre (0.35, 0.7), 0.2 x 0.4
    kx = 0.25 + np.arange(0, 12, 2) * 0.01
    ky = 0.75 + np.arange(1, 12, 2) * 0.01
    assert np.allclose(det.keypoints[0], np.stack([kx, ky], axis=1))
    assert det.scores[0] == pytest.approx(0.5)
    # Score clipping at +-100 keeps sigmoid finite.
    huge = decode_detections(raw[:1], np.array([[1e4]]), anchors[:1], 128.0, 0.5)
    assert huge.scores[0] == pytest.approx(1.0)


def _dets(boxes: list[list[float]], scores: list[float]) -> Detections:
    b = np.asarray(boxes, dtype=np.float64)
    # keypoint k of a box: its top-left corner shifted by k, so averages are easy to check
    kps = b[:, None, :2] + np.arange(6, dtype=np.float64)[None, :, None]
    return Detections(b, kps, np.asarray(scores, dtype=np.float64))


def test_weighted_nms_averages_clusters() -> None:
    dets = _dets(
        [
            [0.0, 0.0, 10.0, 10.0],  # A 0.9
            [20.0, 20.0, 30.0, 30.0],  # C 0.8: far away, its own cluster
            [1.0, 1.0, 11.0, 11.0],  # B 0.6: IoU(A) = 81/119 = 0.68 -> merged into A
            [0.0, 5.0, 10.0, 15.0],  # D 0.5: IoU(A) = 50/150 = 0.333 > 0.3 -> merged into A
            [0.0, 6.0, 10.0, 16.0],  # E 0.4: IoU(A) = 40/160 = 0.25 -> survives A ...
        ],
        [0.9, 0.8, 0.6, 0.5, 0.4],
    )
    out = weighted_nms(dets)
    assert len(out) == 3
    assert out.scores.tolist() == [0.9, 0.8, 0.4]  # the best of each cluster
    w = np.array([0.9, 0.6, 0.5])
    expected = (w[:, None] * dets.boxes[[0, 2, 3]]).sum(0) / w.sum()
    assert np.allclose(out.boxes[0], expected)
    assert np.allclose(out.keypoints[0], expected[:2] + np.arange(6)[:, None])
    assert np.allclose(out.boxes[1], [20, 20, 30, 30])
    assert np.allclose(out.boxes[2], [0, 6, 10, 16])  # ... and stands alone


def test_weighted_nms_threshold_is_strict_and_empty_ok() -> None:
    # IoU exactly 0.3 is not > 0.3: both kept.
    a, b = [0.0, 0.0, 13.0, 10.0], [3.0, 0.0, 16.0, 10.0]  # inter 100, union 160: 0.625
    assert iou(a, b) == pytest.approx(0.625)
    c = [0.0, 0.0, 10.0, 13.0]
    d = [0.0, 7.0, 10.0, 20.0]  # inter 60, union 200: 0.3
    assert iou(c, d) == pytest.approx(0.3)
    assert len(weighted_nms(_dets([c, d], [0.9, 0.8]))) == 2
    assert len(weighted_nms(_dets([a, b], [0.9, 0.8]))) == 1
    assert len(weighted_nms(Detections(np.zeros((0, 4)), np.zeros((0, 6, 2)), np.zeros(0)))) == 0


@pytest.mark.parametrize("sampler", ["warp", "resize"])
@pytest.mark.parametrize(("height", "width"), [(512, 512), (300, 512), (512, 400), (480, 640)])
def test_letterbox_geometry(height: int, width: int, sampler: Sampler) -> None:
    rgb = np.full((height, width, 3), 200, dtype=np.uint8)
    tensor, box = letterbox_input(rgb, 192, sampler)
    assert tensor.shape == (1, 192, 192, 3) and tensor.dtype == np.float32
    assert tensor.min() >= -1.0 and tensor.max() <= 1.0
    # Tensor-normalised corners of the content map back to the source's corners.
    u0, v0 = box.pad_x / 192, box.pad_y / 192
    u1, v1 = (box.pad_x + width * box.scale_x) / 192, (box.pad_y + height * box.scale_y) / 192
    corners = box.to_source(np.array([[u0, v0], [u1, v1]]))
    assert np.allclose(corners, [[0, 0], [width, height]])
    # Borders are black (-1), content is 200 / 127.5 - 1, and the content is centred.
    assert tensor[0, 96, 96, 0] == pytest.approx(200 / 127.5 - 1, abs=1e-6)
    if width > height:
        assert (tensor[0, 0] == -1).all() and (tensor[0, -1] == -1).all()
        assert box.pad_y == pytest.approx((192 - height * 192 / width) / 2, abs=0.5)
    elif height > width:
        assert (tensor[0, :, 0] == -1).all() and (tensor[0, :, -1] == -1).all()
        assert box.pad_x == pytest.approx((192 - width * 192 / height) / 2, abs=0.5)
    assert np.array_equal(reference_face_input(rgb, 192, sampler), tensor)


def test_selfie_input() -> None:
    rgb = np.zeros((300, 500, 3), dtype=np.uint8)
    rgb[..., 0] = 255
    tensor = reference_person_input(rgb)
    assert tensor.shape == (1, 256, 256, 3) and tensor.dtype == np.float32
    assert np.allclose(tensor[..., 0], 1.0) and np.allclose(tensor[..., 1:], 0.0)  # RGB, [0, 1]


# --------------------------------------------------------------------------- with the models


@pytest.mark.parametrize("variant", ["full", "short"])
def test_one_face_on_astronaut(face_model: FindModel, variant: Variant) -> None:
    faces = reference_faces(astronaut(), face_model(variant), variant)
    assert len(faces) == 1
    face = faces[0]
    x1, y1, x2, y2 = face["box"]
    rx1, ry1, rx2, ry2 = FACE_REGION
    assert rx1 <= x1 < x2 <= rx2 and ry1 <= y1 < y2 <= ry2
    assert face["score"] > 0.85
    kp = np.asarray(face["keypoints"])
    right_eye, left_eye, nose, mouth, right_ear, left_ear = kp
    assert right_eye[0] < left_eye[0]  # the subject's right eye is on the image's left
    assert max(right_eye[1], left_eye[1]) < nose[1] < mouth[1]  # eyes, nose, mouth downwards
    assert right_ear[0] < right_eye[0] and left_ear[0] > left_eye[0]
    assert ((kp >= [x1 - 5, y1 - 5]) & (kp <= [x2 + 5, y2 + 5])).all()


@pytest.mark.parametrize(("image", "variant"), sorted(MEDIAPIPE_ASTRONAUT))
def test_faces_match_mediapipe(face_model: FindModel, image: str, variant: Variant) -> None:
    faces = reference_faces(IMAGES[image](), face_model(variant), variant)
    expected = MEDIAPIPE_ASTRONAUT[(image, variant)]
    assert len(faces) == len(expected)
    for got, want in zip(faces, expected, strict=True):
        assert iou(got["box"], want["box"]) >= 0.99
        assert got["score"] == pytest.approx(want["score"], abs=0.005)
        assert np.abs(np.asarray(got["keypoints"]) - want["keypoints"]).max() <= 1.0


def test_resize_sampler_is_an_approximation(face_model: FindModel) -> None:
    """cv2.resize pre-processing still finds the face, but only roughly where MediaPipe does."""
    want = MEDIAPIPE_ASTRONAUT[("astronaut", "short")][0]
    faces = reference_faces(astronaut(), face_model("short"), "short", sampler="resize")
    assert len(faces) == 1
    assert 0.8 <= iou(faces[0]["box"], want["box"]) < 0.99


def test_person_mask_on_astronaut(selfie_model: str) -> None:
    rgb = astronaut()
    mask = reference_person_mask(rgb, selfie_model)
    assert mask.shape == rgb.shape[:2] and mask.dtype == bool
    assert 0.25 <= mask.mean() <= 0.75
    x1, y1, x2, y2 = MEDIAPIPE_ASTRONAUT[("astronaut", "full")][0]["box"]
    assert mask[int((y1 + y2) / 2), int((x1 + x2) / 2)]  # the face centre is person
    assert mask[400, 150] and mask[300, 250]  # suit and chest
    assert not mask[20, 480] and not mask[150, 420]  # background: top right, the shuttle
    probability = reference_person_probability(rgb, selfie_model)
    assert probability.dtype == np.float32 and 0.0 <= probability.min() <= probability.max() <= 1.0


@pytest.mark.parametrize("image", sorted(MEDIAPIPE_MASK_COVERAGE))
def test_mask_coverage_matches_mediapipe(selfie_model: str, image: str) -> None:
    mask = reference_person_mask(IMAGES[image](), selfie_model)
    assert mask.mean() == pytest.approx(MEDIAPIPE_MASK_COVERAGE[image], abs=0.005)
