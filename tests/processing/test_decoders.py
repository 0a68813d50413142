"""Task decoders: MediaPipe faces, PP-OCR text detection and CTC, masks, classes, results.

Each decoder is compared with an independent implementation on the same numbers: the MediaPipe
reference in ``tests/reference`` (written from MediaPipe's calculators) and rapidocr 3.10's own
post-processing classes for PP-OCR.
"""

from __future__ import annotations

import base64
import io
from functools import cache
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
from PIL import Image
from rapidocr.ch_ppocr_det.main import TextDetector
from rapidocr.ch_ppocr_det.utils import DBPostProcess
from rapidocr.ch_ppocr_rec.utils import CTCLabelDecode
from rapidocr.utils.process_img import get_rotate_crop_image
from reference import mediapipe_faces as mp
from reference.mediapipe_selfie import probability_from_output

from frameserve.errors import ModelExecutionError
from frameserve.processing import faces
from frameserve.processing.faces import decode_face_batch, decode_faces, ssd_anchors, weighted_nms
from frameserve.processing.results import Classes, Detections, Mask, Text, Texts
from frameserve.processing.spec import (
    AnchorSpec,
    ClassesSpec,
    CtcSpec,
    FaceSsdSpec,
    PreprocessSpec,
    SegmentationSpec,
    TextDetectionSpec,
)
from frameserve.processing.tasks import DecodeOptions, decode_classes, decode_mask
from frameserve.processing.text import (
    crop_region,
    decode_ctc,
    decode_text_regions,
    load_dictionary,
    reading_order,
)
from frameserve.processing.transform import Geometry, Preprocessor
from frameserve.serving.config import load_model_config

FACE_MODELS: dict[str, mp.Variant] = {"faces": "full", "faces-near": "short"}  # zoo -> reference


def face_spec(repository: Path, name: str) -> FaceSsdSpec:
    spec = load_model_config(repository / name / "model.yaml").postprocess
    assert isinstance(spec, FaceSsdSpec)
    return spec


@cache
def astronaut() -> np.ndarray:
    return skimage.data.astronaut()


# --------------------------------------------------------------------------- faces


@pytest.mark.parametrize("name", FACE_MODELS)
def test_ssd_anchors_match_mediapipe(zoo_repository: Path, name: str) -> None:
    spec = face_spec(zoo_repository, name)
    expected = mp.face_anchors(FACE_MODELS[name])
    anchors = ssd_anchors(spec.anchors)
    assert anchors.shape == (mp.FACE_MODELS[FACE_MODELS[name]].num_boxes, 2)
    np.testing.assert_array_equal(anchors, expected[:, :2])


def test_ssd_anchors_of_non_square_input() -> None:
    anchors = ssd_anchors(AnchorSpec(input_size=(64, 32), strides=(16, 32, 32)))
    # 4x2 cells with one anchor each, then 2x1 cells with two anchors each (two layers).
    assert anchors.shape == (4 * 2 + 2 * 1 * 2, 2)
    np.testing.assert_allclose(
        anchors[:4], [[0.125, 0.25], [0.375, 0.25], [0.625, 0.25], [0.875, 0.25]]
    )
    np.testing.assert_allclose(anchors[8:], [[0.25, 0.5], [0.25, 0.5], [0.75, 0.5], [0.75, 0.5]])


def _framings() -> dict[str, np.ndarray]:
    return {"square": astronaut(), "wide": astronaut()[:300], "tall": astronaut()[:, 100:400]}


@pytest.mark.parametrize("framing", ["square", "wide", "tall"])
@pytest.mark.parametrize("name", FACE_MODELS)
def test_decode_faces_on_real_outputs_matches_mediapipe(
    zoo_repository: Path, name: str, framing: str
) -> None:
    """The zoo's model on the reference input; the same raw outputs through both decoders."""
    variant = FACE_MODELS[name]
    config = load_model_config(zoo_repository / name / "model.yaml")
    spec = face_spec(zoo_repository, name)
    assert config.preprocess is not None
    im = _framings()[framing]
    tensor, letterbox = mp.letterbox_input(im, mp.FACE_MODELS[variant].size, "warp")
    path = zoo_repository / name / "1" / "model.tflite"
    regressors, classificators = mp.run_face_model(tensor, path, variant)
    expected = mp.faces_from_outputs(regressors, classificators, letterbox, variant)
    _, (geometry,) = Preprocessor(config.preprocess)([im])
    outputs = {spec.boxes: regressors[0], spec.scores: classificators[0]}
    faces = decode_faces(outputs, geometry, spec)
    assert len(expected) == 1 and len(faces) == 1, "the astronaut has one face"
    assert faces.labels == ["face"]
    for i, face in enumerate(expected):
        np.testing.assert_allclose(faces.boxes[i], face["box"], rtol=1e-6)
        np.testing.assert_allclose(faces.scores[i], face["score"], rtol=1e-6)
        assert faces.keypoints is not None
        np.testing.assert_allclose(faces.keypoints[i], face["keypoints"], rtol=1e-6)


@cache
def _short_range_outputs(repository: Path) -> tuple[np.ndarray, np.ndarray, mp.Letterbox]:
    tensor, letterbox = mp.letterbox_input(astronaut(), 128, "warp")
    regressors, classificators = mp.run_face_model(
        tensor, repository / "faces-near" / "1" / "model.tflite", "short"
    )
    return regressors, classificators, letterbox


def test_decode_faces_options_and_many_candidates(zoo_repository: Path) -> None:
    """A low threshold lets weak candidates through: NMS on a real crowd of boxes."""
    regressors, classificators, letterbox = _short_range_outputs(zoo_repository)
    spec = face_spec(zoo_repository, "faces-near")
    geometry = Geometry((512, 512), (128, 128), (letterbox.scale_x,) * 2, (0.0, 0.0))
    outputs = {spec.boxes: regressors[0], spec.scores: classificators[0]}
    anchors = mp.face_anchors("short")
    ref = mp.weighted_nms(mp.decode_detections(regressors, classificators, anchors, 128.0, 0.05))
    assert len(ref) > 5
    faces = decode_faces(outputs, geometry, spec, score_threshold=0.05)
    assert len(faces) == len(ref)
    np.testing.assert_allclose(faces.scores, ref.scores, rtol=1e-6)
    np.testing.assert_allclose(
        faces.boxes, letterbox.to_source(ref.boxes.reshape(-1, 2, 2)).reshape(-1, 4), rtol=1e-6
    )
    assert np.all(faces.scores >= 0.05) and np.all(np.diff(faces.scores) <= 0)
    assert len(decode_faces(outputs, geometry, spec)) == 1  # the spec's own 0.5
    limited = decode_faces(outputs, geometry, spec, score_threshold=0.05, max_results=3)
    np.testing.assert_array_equal(limited.scores, faces.scores[:3])
    assert len(decode_faces(outputs, geometry, spec, score_threshold=0.999)) == 0


def test_decode_face_batch_gives_each_image_what_it_gets_alone(zoo_repository: Path) -> None:
    """A video group: images with several faces, one, none, and other letterboxes, decoded in
    one pass, each exactly (bit for bit) as alone; a threshold and a limit apply per image."""
    regressors, classificators, letterbox = _short_range_outputs(zoo_repository)
    spec = face_spec(zoo_repository, "faces-near")
    shifted = regressors.copy()
    shifted[..., 0] += 3.0  # the same faces, moved: other boxes after NMS
    nothing = np.full_like(classificators, -20.0)  # no anchor near any threshold
    boxes = np.concatenate([regressors, shifted, regressors, regressors])
    scores = np.concatenate([classificators, classificators, nothing, classificators])
    geometries = [
        Geometry((512, 512), (128, 128), (letterbox.scale_x,) * 2, (0.0, 0.0)),
        Geometry((640, 360), (128, 128), (0.2, 0.2), (0.0, 28.0)),
        Geometry((512, 512), (128, 128), (letterbox.scale_x,) * 2, (0.0, 0.0)),
        Geometry((360, 640), (128, 128), (0.2, 0.2), (28.0, 0.0)),
    ]
    for threshold, most in ((None, None), (0.05, None), (0.05, 2)):
        batch = decode_face_batch(
            {spec.boxes: boxes, spec.scores: scores}, geometries, spec, threshold, most
        )
        assert len(batch) == 4
        for i, (got, geometry) in enumerate(zip(batch, geometries, strict=True)):
            alone = decode_faces(
                {spec.boxes: boxes[i], spec.scores: scores[i]}, geometry, spec, threshold, most
            )
            assert got.labels == alone.labels
            for a, b in ((got.boxes, alone.boxes), (got.scores, alone.scores),
                         (got.keypoints, alone.keypoints)):  # fmt: skip
                assert a is not None and b is not None and a.dtype == b.dtype
                np.testing.assert_array_equal(a, b)
        assert len(batch[2]) == 0 and batch[2].keypoints is not None
        assert batch[2].keypoints.shape == (0, spec.num_keypoints, 2)
        assert len(batch[0]) >= 1 and not np.array_equal(batch[0].boxes, batch[1].boxes)


def test_decode_faces_refuses_a_wrong_anchor_count(zoo_repository: Path) -> None:
    spec = face_spec(zoo_repository, "faces")
    outputs = {spec.boxes: np.zeros((100, 16)), spec.scores: np.zeros((100, 1))}
    with pytest.raises(
        ModelExecutionError, match="Identity: the model gives 100 boxes, its anchors expect 2304"
    ):
        decode_faces(outputs, Geometry((192, 192), (192, 192), (1.0, 1.0), (0.0, 0.0)), spec)


def test_decode_faces_drops_boxes_of_negative_size(zoo_repository: Path) -> None:
    spec = face_spec(zoo_repository, "faces")
    raw = np.zeros((2304, 16), dtype=np.float32)
    logits = np.full((2304, 1), -10.0, dtype=np.float32)
    raw[100, 2:4] = (20.0, 20.0)  # a proper 20 px face
    raw[2000, 2:4] = (-20.0, 20.0)  # a confident box of negative width
    logits[[100, 2000]] = 5.0
    geometry = Geometry((192, 192), (192, 192), (1.0, 1.0), (0.0, 0.0))
    ref = mp.decode_detections(raw, logits, mp.face_anchors("full"), 192.0, 0.6)
    assert len(ref) == 1
    faces = decode_faces({spec.boxes: raw, spec.scores: logits}, geometry, spec)
    assert len(faces) == 1
    assert np.all(faces.boxes[:, 2:] >= faces.boxes[:, :2])


def _nms(
    boxes: list[list[float]], scores: list[float], threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    b = np.asarray(boxes, dtype=np.float64)
    keypoints = np.stack([b[:, :2], b[:, 2:]], axis=1)  # two keypoints: the corners
    return weighted_nms(b, np.asarray(scores, dtype=np.float64), keypoints, threshold)


def test_weighted_nms_averages_a_cluster_by_score() -> None:
    boxes, scores, kps = _nms(
        [[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], [0.6, 0.9, 0.7], 0.3
    )
    assert scores.tolist() == [0.9, 0.7]  # the best member's score, best first
    # (0.9 * [1, 1, 11, 11] + 0.6 * [0, 0, 10, 10]) / 1.5
    np.testing.assert_allclose(boxes[0], [0.6, 0.6, 10.6, 10.6])
    np.testing.assert_allclose(kps[0].reshape(-1), boxes[0])
    np.testing.assert_allclose(boxes[1], [50, 50, 60, 60])  # a cluster of one


def test_weighted_nms_iou_exactly_at_the_threshold_is_not_merged() -> None:
    # [0, 0, 2, 1] and [0, 0, 1, 1]: intersection 1, union 2 -> IoU exactly 0.5.
    boxes, scores, _ = _nms([[0, 0, 2, 1], [0, 0, 1, 1]], [0.9, 0.8], 0.5)
    assert len(scores) == 2
    np.testing.assert_allclose(boxes, [[0, 0, 2, 1], [0, 0, 1, 1]])
    assert len(_nms([[0, 0, 2, 1], [0, 0, 1, 1]], [0.9, 0.8], 0.49)[1]) == 1


def test_weighted_nms_keeps_a_zero_area_box() -> None:
    boxes, scores, kps = _nms([[5, 5, 5, 9], [0, 0, 10, 10]], [0.9, 0.8], 0.3)
    assert scores.tolist() == [0.9, 0.8]
    np.testing.assert_allclose(boxes, [[5, 5, 5, 9], [0, 0, 10, 10]])
    np.testing.assert_allclose(kps[0], [[5, 5], [5, 9]])
    empty = weighted_nms(np.zeros((0, 4)), np.zeros(0), np.zeros((0, 6, 2)), 0.3)
    assert [a.shape for a in empty] == [(0, 4), (0,), (0, 6, 2)]


def test_weighted_nms_matches_mediapipe_on_random_clusters() -> None:
    rng = np.random.default_rng(7)
    centres = rng.uniform(0, 1, (6, 2))
    boxes = np.concatenate([np.repeat(centres, 5, 0) + rng.normal(0, 0.02, (30, 2))] * 2, 1)
    boxes[:, 2:] += rng.uniform(0.05, 0.2, (30, 2))
    scores = rng.uniform(0.5, 1.0, 30)
    kps = rng.uniform(0, 1, (30, 6, 2))
    ref = mp.weighted_nms(mp.Detections(boxes, kps, scores), 0.3)
    out_boxes, out_scores, out_kps = weighted_nms(boxes, scores, kps, 0.3)
    assert 3 < len(ref) < 30
    np.testing.assert_allclose(out_boxes, ref.boxes, rtol=1e-12)
    np.testing.assert_allclose(out_scores, ref.scores, rtol=1e-12)
    np.testing.assert_allclose(out_kps, ref.keypoints, rtol=1e-12)


def test_weighted_nms_of_a_few_boxes_in_python_floats_is_the_array_path_to_the_bit() -> None:
    """Fewer than 8 boxes (a face's anchors) go through Python floats: on clusters, ties,
    equal and zero-area boxes, IoUs at the threshold and no keypoints, the same clusters
    and bit-identical means as the numpy path; float32 and NaN inputs take the numpy path."""
    rng = np.random.default_rng(11)
    for trial in range(400):
        n, k = int(rng.integers(1, faces.FEW)), int(rng.choice([0, 2, 6]))
        centre = rng.uniform(0, 100, (1, 2)) + rng.normal(0, rng.choice([0.5, 5.0]), (n, 2))
        size = rng.uniform(0, 20, (n, 2)) * (rng.random((n, 1)) > 0.1)  # some zero-area
        boxes = np.concatenate([centre, centre + size], axis=1)
        if trial % 7 == 0:
            boxes[-1] = boxes[0]  # equal boxes
        scores = rng.choice([0.5, 0.7, rng.uniform(0.5, 1.0)], n)  # ties now and then
        kps = rng.uniform(0, 100, (n, k, 2))
        threshold = float(rng.choice([0.0, 0.3, 0.5, 0.9]))
        few = faces._weighted_nms_few(boxes, scores, kps, threshold)
        full = faces._weighted_nms_arrays(boxes, scores, kps, threshold)
        for a, b in zip(few, full, strict=True):
            assert a.dtype == b.dtype and a.shape == b.shape
            np.testing.assert_array_equal(a, b)
    # [0, 0, 2, 1] and [0, 0, 1, 1] overlap at exactly 0.5, which does not merge
    two = np.array([[0.0, 0, 2, 1], [0, 0, 1, 1]]), np.array([0.9, 0.8]), np.zeros((2, 1, 2))
    assert len(faces._weighted_nms_few(*two, 0.5)[1]) == 2
    assert len(faces._weighted_nms_few(*two, 0.49)[1]) == 1
    calls: list[int] = []
    few_path = faces._weighted_nms_few
    try:
        faces._weighted_nms_few = lambda *a: calls.append(1) or few_path(*a)  # type: ignore[assignment]
        weighted_nms(*two, 0.5)
        weighted_nms(two[0].astype(np.float32), two[1], two[2], 0.5)
        weighted_nms(np.array([[np.nan, 0, 1, 1], [0, 0, 1, 1]]), two[1], two[2], 0.5)
    finally:
        faces._weighted_nms_few = few_path  # type: ignore[assignment]
    assert calls == [1]  # float64 finite boxes only


# --------------------------------------------------------------------------- CTC


@pytest.fixture(scope="module")
def rec_dictionary(zoo_repository: Path) -> tuple[Path, tuple[str, ...]]:
    path = zoo_repository / "text-rec" / "dict.txt"
    return path, load_dictionary(path)


CTC = CtcSpec(task="ctc", output="fetch_name_0", dictionary="dict.txt")


def ctc_matrix(dictionary: tuple[str, ...], steps: list[tuple[str | None, float]]) -> np.ndarray:
    """``[1, T, C]`` probabilities whose best class at step t is ``steps[t]`` (None = blank)."""
    rng = np.random.default_rng(0)
    probs = rng.uniform(0, 0.01, (1, len(steps), len(dictionary))).astype(np.float32)
    for t, (char, p) in enumerate(steps):
        probs[0, t, 0 if char is None else dictionary.index(char)] = p
    return probs


def test_load_dictionary_adds_blank_and_space(rec_dictionary: tuple[Path, tuple[str, ...]]) -> None:
    path, dictionary = rec_dictionary
    assert dictionary[0] == "" and dictionary[-1] == " "
    assert dictionary[1:4] == ("!", '"', "#")
    assert len(dictionary) == len(CTCLabelDecode(character_path=path).character) == 18710


def test_decode_ctc_matches_rapidocr(rec_dictionary: tuple[Path, tuple[str, ...]]) -> None:
    path, dictionary = rec_dictionary
    steps = [
        (None, 0.99),
        ("a", 0.9),
        ("a", 0.8),  # a repeat: collapsed
        (None, 0.95),
        ("a", 0.7),  # after a blank: a second "a"
        ("b", 0.6),
        (" ", 0.85),  # the space class, last in the dictionary
        (" ", 0.5),
        ("\u4e2d", 0.75),
        (None, 0.9),
    ]
    probs = ctc_matrix(dictionary, steps)
    text = decode_ctc({"fetch_name_0": probs}, CTC, dictionary)
    [(expected_text, expected_score)], _ = CTCLabelDecode(character_path=path)(probs)
    assert text.text == expected_text == "aab \u4e2d"
    # Mean of the kept steps' maxima, rounded to 5 places (the first "a" of a repeat counts).
    assert text.score == pytest.approx(np.mean([0.9, 0.7, 0.6, 0.85, 0.75]), abs=1e-5)
    assert text.score == pytest.approx(expected_score, abs=1e-5)


def test_decode_ctc_of_only_blanks(rec_dictionary: tuple[Path, tuple[str, ...]]) -> None:
    _, dictionary = rec_dictionary
    probs = ctc_matrix(dictionary, [(None, 0.9)] * 4)
    assert decode_ctc({"fetch_name_0": probs}, CTC, dictionary) == Text("", 0.0)


def test_decode_ctc_rounds_the_score_like_rapidocr(
    rec_dictionary: tuple[Path, tuple[str, ...]],
) -> None:
    path, dictionary = rec_dictionary
    # mean(0.86863, 0.76752) = 0.818075: numpy rounds it to 0.81808, round() to 0.81807.
    probs = ctc_matrix(dictionary, [("x", 0.86863), ("y", 0.76752)])
    [(_, expected_score)], _ = CTCLabelDecode(character_path=path)(probs)
    assert decode_ctc({"fetch_name_0": probs}, CTC, dictionary).score == expected_score


def test_decode_ctc_class_count_mismatch(rec_dictionary: tuple[Path, tuple[str, ...]]) -> None:
    _, dictionary = rec_dictionary
    probs = np.zeros((1, 5, 6625), dtype=np.float32)
    with pytest.raises(
        ModelExecutionError, match=r"fetch_name_0: the model has 6625 classes, .* 18710"
    ):
        decode_ctc({"fetch_name_0": probs}, CTC, dictionary)


# --------------------------------------------------------------------------- DB text regions


DB = TextDetectionSpec(task="db_text", output="fetch_name_0")


def db_map() -> np.ndarray:
    """A 160x320 probability map: two text lines on the first row, one on the second."""
    prob = np.zeros((160, 320), dtype=np.float32)
    prob[100:120, 20:140] = 0.9  # second line
    prob[30:50, 180:300] = 0.8  # first line, right
    prob[33:53, 30:150] = 0.7  # first line, left (3 px lower: still the same line)
    prob[5:7, 5:7] = 0.9  # a speck: below min_size
    return prob


def test_decode_text_regions_matches_rapidocr() -> None:
    prob = db_map()
    # The map covers a source twice its size (tensor = source * 0.5).
    geometry = Geometry((640, 320), (320, 160), (0.5, 0.5), (0.0, 0.0))
    texts = decode_text_regions({"fetch_name_0": prob[None, None]}, geometry, DB)
    post = DBPostProcess(
        thresh=DB.threshold,
        box_thresh=DB.box_threshold,
        max_candidates=DB.max_candidates,
        unclip_ratio=DB.unclip_ratio,
        use_dilation=DB.dilation,
    )
    boxes, scores = post(prob[None, None], (320, 640))
    expected = TextDetector.sorted_boxes(boxes.astype(np.float64))
    assert len(texts) == 3
    np.testing.assert_array_equal(texts.polygons, expected)
    same = [next(j for j, b in enumerate(boxes) if np.array_equal(b, p)) for p in expected]
    np.testing.assert_allclose(texts.scores, np.asarray(scores)[same], rtol=1e-6)
    # In source pixels, in reading order: the first line left to right, then the second.
    x0 = texts.polygons[:, 0, 0]
    y0 = texts.polygons[:, 0, 1]
    assert x0[0] < x0[1] and y0[2] > y0[0] + 100
    # The 20x120 line at (20, 100) grows by area * 1.6 / perimeter = 14 map pixels a side.
    assert texts.polygons[2].min(0).tolist() == pytest.approx([2 * (20 - 14), 2 * (100 - 14)])
    assert texts.polygons[2].max(0).tolist() == pytest.approx([2 * (140 + 14), 2 * (120 + 14)])
    assert texts.texts == []


def test_decode_text_regions_options() -> None:
    prob = db_map()
    geometry = Geometry((320, 160), (320, 160), (1.0, 1.0), (0.0, 0.0))
    outputs = {"fetch_name_0": prob[None]}
    assert len(decode_text_regions(outputs, geometry, DB, score_threshold=0.75)) == 2
    assert len(decode_text_regions(outputs, geometry, DB, max_results=1)) == 1
    empty = decode_text_regions({"fetch_name_0": np.zeros((1, 32, 32))}, geometry, DB)
    assert len(empty) == 0 and empty.polygons.shape == (0, 4, 2)


def test_reading_order_matches_rapidocr() -> None:
    rng = np.random.default_rng(3)
    tops = rng.uniform(0, 200, (20, 2)).round()
    polygons = np.stack([tops, tops + [50, 0], tops + [50, 20], tops + [0, 20]], axis=1)
    np.testing.assert_array_equal(
        polygons[reading_order(polygons)], TextDetector.sorted_boxes(polygons)
    )
    assert reading_order(np.zeros((0, 4, 2))).tolist() == []


def _rotated_rectangle() -> tuple[np.ndarray, np.ndarray]:
    """A 160x40 white rectangle on a dark page turned by 10 degrees, and its corners."""
    page = np.full((300, 400, 3), 30, dtype=np.uint8)
    corners = np.array([[120, 130], [280, 130], [280, 170], [120, 170]], dtype=np.float32)
    cv2.fillPoly(page, [corners.astype(np.int32)], (255, 255, 255))
    turn = cv2.getRotationMatrix2D((200, 150), 10, 1.0)
    page = cv2.warpAffine(page, turn, (400, 300), borderValue=(30, 30, 30))
    turned = cv2.transform(corners[None], turn)[0]
    return page, turned.astype(np.float32)


def test_crop_region_straightens_a_rotated_quadrilateral() -> None:
    page, polygon = _rotated_rectangle()
    crop = crop_region(page, polygon)
    assert abs(crop.shape[1] - 160) <= 2 and abs(crop.shape[0] - 40) <= 2
    assert crop[3:-3, 3:-3].min() > 200  # all of it the rectangle, none of the page
    np.testing.assert_array_equal(crop, get_rotate_crop_image(page, polygon))


def test_crop_region_turns_tall_crops() -> None:
    page = skimage.data.astronaut()
    polygon = np.array([[100, 50], [130, 50], [130, 150], [100, 150]], dtype=np.float32)
    crop = crop_region(page, polygon)
    assert crop.shape == (30, 100, 3) and crop.flags.c_contiguous
    np.testing.assert_array_equal(crop, np.rot90(page[50:150, 100:130]))
    np.testing.assert_array_equal(crop, get_rotate_crop_image(page, polygon))


# --------------------------------------------------------------------------- masks, classes


def test_decode_mask_cuts_the_letterbox_and_resizes_to_the_source() -> None:
    pre = Preprocessor(PreprocessSpec(resize={"mode": "letterbox", "size": [256, 256]}))
    _, geometry = pre.resize_image(np.zeros((300, 512, 3), dtype=np.uint8))
    x0, y0, x1, y1 = geometry.content_box
    assert (y0, y1) == (53, 203)
    prob = np.ones((1, 256, 256, 1), dtype=np.float32)  # the padding says "person" ...
    prob[0, y0:y1, x0:x1] = 0.0  # ... the content only on its left half
    prob[0, y0:y1, x0 : (x0 + x1) // 2] = 1.0
    mask = decode_mask({"m": prob}, geometry, SegmentationSpec(task="segmentation", output="m"))
    assert mask.mask.shape == (300, 512) and mask.mask.dtype == np.uint8
    assert set(np.unique(mask.mask)) == {0, 255}
    assert (mask.mask[:, :250] == 255).all() and not mask.mask[:, 262:].any()


def test_decode_mask_stretch_matches_mediapipe() -> None:
    rng = np.random.default_rng(1)
    output = cv2.GaussianBlur(rng.uniform(0, 1, (256, 256)).astype(np.float32), (0, 0), 8)
    output = ((output - output.min()) / np.ptp(output))[None, :, :, None]
    geometry = Geometry((640, 360), (256, 256), (0.4, 256 / 360), (0.0, 0.0))
    spec = SegmentationSpec(task="segmentation", output="activation_10")
    mask = decode_mask({"activation_10": output}, geometry, spec)
    expected = probability_from_output(output, 360, 640) > 0.5
    np.testing.assert_array_equal(mask.mask == 255, expected)
    # [H, W] without the channel dimension reads the same.
    assert np.array_equal(
        decode_mask({"activation_10": output[0, :, :, 0]}, geometry, spec).mask, mask.mask
    )


LABELS = ClassesSpec(task="classes", output="p", labels=["cat", "dog", "fox", "owl"], top_k=3)


def test_decode_classes_top_k_best_first() -> None:
    out = decode_classes({"p": np.array([[0.1, 0.5, 0.3, 0.1]])}, LABELS, DecodeOptions())
    assert out.labels == ["dog", "fox", "cat"]  # equal scores keep the label order
    np.testing.assert_allclose(out.scores, [0.5, 0.3, 0.1])
    two = decode_classes(
        {"p": np.array([0.1, 0.5, 0.3, 0.1])}, LABELS, DecodeOptions(max_results=2)
    )
    assert two.labels == ["dog", "fox"]


def test_decode_classes_softmax_and_threshold() -> None:
    spec = LABELS.model_copy(update={"softmax": True, "top_k": 4})
    logits = np.array([1.0, 3.0, 2.0, 0.0])
    out = decode_classes({"p": logits}, spec, DecodeOptions())
    expected = np.exp(logits) / np.exp(logits).sum()
    np.testing.assert_allclose(out.scores, np.sort(expected)[::-1])
    assert out.scores.sum() == pytest.approx(1.0)
    kept = decode_classes({"p": logits}, spec, DecodeOptions(score_threshold=0.2))
    assert kept.labels == ["dog", "fox"]


def test_decode_classes_label_count_mismatch() -> None:
    with pytest.raises(ModelExecutionError, match="p: the model gives 3 scores, 4 labels"):
        decode_classes({"p": np.zeros(3)}, LABELS, DecodeOptions())


# --------------------------------------------------------------------------- results


def test_detections_validation_names_the_counts() -> None:
    with pytest.raises(ValueError, match="got 2, 3, 3"):
        Detections(np.zeros((2, 4)), np.zeros(3), ["a"] * 3)
    with pytest.raises(ValueError, match="got 2, 2, 1"):
        Detections(np.zeros((2, 4)), np.zeros(2), ["a"])
    with pytest.raises(ValueError, match=r"keypoints must be \[2, K, 2\], got \(2, 6, 3\)"):
        Detections(np.zeros((2, 4)), np.zeros(2), ["a"] * 2, np.zeros((2, 6, 3)))
    with pytest.raises(ValueError, match="track_ids must have 2 rows, got 1"):
        Detections(np.zeros((2, 4)), np.zeros(2), ["a"] * 2, track_ids=np.zeros(1))


def test_detections_to_json_filter_and_take() -> None:
    d = Detections(
        [[1.234, 2, 3, 4], [5, 6, 7, 8.999]],
        np.array([0.5, 0.91234]),
        ["face", "face"],
        np.arange(8, dtype=np.float64).reshape(2, 2, 2),
        np.array([7, 9]),
    )
    assert d.to_json()["detections"][0] == {
        "box": [1.23, 2.0, 3.0, 4.0],
        "score": 0.5,
        "label": "face",
        "keypoints": [[0.0, 1.0], [2.0, 3.0]],
        "track_id": 7,
    }
    best = d.filter(0.6)
    assert len(best) == 1 and best.track_ids is not None and best.track_ids.tolist() == [9]
    assert best.to_json()["detections"][0]["box"] == [5.0, 6.0, 7.0, 9.0]
    assert Detections.empty().to_json() == {"detections": []}
    # a script model's arrays: float32 scores, integer keypoints -> the same JSON numbers
    script = Detections([[0, 0, 4, 4]], np.array([0.7], np.float32), ["x"],
                        np.array([[[3, 4]]], dtype=np.int32))  # fmt: skip
    (row,) = script.to_json()["detections"]
    assert row["score"] == round(float(np.float32(0.7)), 4) and row["keypoints"] == [[3.0, 4.0]]
    assert all(type(v) is float for v in [*row["box"], row["score"], *row["keypoints"][0]])


def test_texts_validation_and_json() -> None:
    with pytest.raises(ValueError, match="got 2, 1, 0"):
        Texts(np.zeros((2, 4, 2)), np.zeros(1))
    with pytest.raises(ValueError, match="got 1, 1, 2"):
        Texts(np.zeros((1, 4, 2)), np.zeros(1), ["a", "b"])
    polygon = [[0, 0], [10.123, 0], [10, 5], [0, 5]]
    detected = Texts(np.array([polygon]), np.array([0.87654]))
    assert detected.to_json() == {
        "texts": [{"polygon": [[0.0, 0.0], [10.12, 0.0], [10.0, 5.0], [0.0, 5.0]], "score": 0.8765}]
    }
    read = Texts(np.array([polygon]), np.array([0.5]), ["hello"])
    assert read.to_json()["texts"][0]["text"] == "hello"
    assert Text("hi", 0.912345).to_json() == {"text": "hi", "score": 0.9123}


def test_classes_json() -> None:
    out = Classes(["180", "0"], np.array([0.95555, 0.04445]))
    assert out.to_json() == {
        "classes": [{"label": "180", "score": 0.9556}, {"label": "0", "score": 0.0445}]
    }


def test_mask_validation_and_png_round_trip() -> None:
    with pytest.raises(ValueError, match=r"Mask: expected HxW uint8, got float32 \(4, 4\)"):
        Mask(np.zeros((4, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="expected HxW uint8"):
        Mask(np.zeros((4, 4, 1), dtype=np.uint8))
    rng = np.random.default_rng(0)
    values = np.where(rng.uniform(size=(37, 53)) > 0.5, 255, 0).astype(np.uint8)
    encoded = Mask(values).to_json()["mask"]
    assert (encoded["width"], encoded["height"]) == (53, 37)
    decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(encoded["png"]))))
    np.testing.assert_array_equal(decoded, values)
