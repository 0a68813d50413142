"""The agreement metrics of ``frameserve quantize`` on hand-made results with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from frameserve.processing.results import (
    Classes,
    Detections,
    Mask,
    Moderation,
    Text,
    Texts,
    Verdict,
)
from frameserve.tools.accuracy import (
    METRICS,
    agreement,
    box_iou,
    detection_agreement,
    mask_iou,
    mean_agreement,
    polygon_iou,
    text_match,
    text_region_agreement,
    top1_agreement,
)


def faces(*boxes: tuple[float, float, float, float], label: str = "face") -> Detections:
    return Detections(
        np.array(boxes, dtype=float).reshape(-1, 4), np.ones(len(boxes)), [label] * len(boxes)
    )


def quad(x1: float, y1: float, x2: float, y2: float) -> np.ndarray:
    """An axis-aligned box as a quadrilateral, clockwise from the top left."""
    return np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], dtype=float)


def texts(*polygons: np.ndarray) -> Texts:
    return Texts(np.array(polygons).reshape(-1, 4, 2), np.ones(len(polygons)))


# ----------------------------------------------------------------------------- IoU


def test_box_iou_of_identical_half_and_disjoint_boxes() -> None:
    iou = box_iou(np.array([[0, 0, 2, 2]]), np.array([[0, 0, 2, 2], [1, 0, 3, 2], [5, 5, 6, 6]]))
    np.testing.assert_allclose(iou, [[1.0, 2 / 6, 0.0]])


def test_box_iou_of_empty_and_degenerate_boxes() -> None:
    assert box_iou(np.zeros((0, 4)), np.array([[0, 0, 1, 1]])).shape == (0, 1)
    assert box_iou(np.array([[1, 1, 1, 1]]), np.array([[1, 1, 1, 1]]))[0, 0] == 0.0


def test_polygon_iou_matches_box_iou_for_axis_aligned_quads() -> None:
    a = [quad(0, 0, 2, 2)]
    b = [quad(0, 0, 2, 2), quad(1, 0, 3, 2), quad(5, 5, 6, 6)]
    np.testing.assert_allclose(
        polygon_iou(np.array(a), np.array(b)), [[1.0, 1 / 3, 0.0]], atol=1e-6
    )


def test_polygon_iou_of_a_diamond_inside_its_square_is_one_half() -> None:
    diamond = np.array([[1, 0], [2, 1], [1, 2], [0, 1]], dtype=float)
    np.testing.assert_allclose(polygon_iou(diamond[None], quad(0, 0, 2, 2)[None]), [[0.5]])


def test_polygon_iou_takes_any_vertex_order() -> None:
    square = quad(0, 0, 4, 4)
    counter_clockwise = square[::-1]
    np.testing.assert_allclose(polygon_iou(square[None], counter_clockwise[None]), [[1.0]])


# ------------------------------------------------------------------------- detections


def test_detections_agree_fully_when_equal_in_any_order() -> None:
    a = faces((0, 0, 10, 10), (20, 20, 30, 30))
    b = faces((20, 20, 30, 30), (0, 0, 10, 10))
    assert detection_agreement(a, b) == pytest.approx(1.0)


def test_two_empty_results_agree_and_one_empty_result_does_not() -> None:
    assert detection_agreement(Detections.empty(), Detections.empty()) == 1.0
    assert detection_agreement(faces((0, 0, 10, 10)), Detections.empty()) == 0.0
    assert detection_agreement(Detections.empty(), faces((0, 0, 10, 10))) == 0.0


def test_an_extra_box_counts_against_the_agreement() -> None:
    a = faces((0, 0, 10, 10), (20, 20, 30, 30))
    b = faces((0, 0, 10, 10), (20, 20, 30, 30), (50, 50, 60, 60))
    assert detection_agreement(a, b) == pytest.approx(2 / 3)


def test_matches_need_iou_of_one_half_and_the_same_label() -> None:
    shifted = faces((6, 0, 16, 10))  # IoU 4/16 = 0.25 with (0, 0, 10, 10)
    assert detection_agreement(faces((0, 0, 10, 10)), shifted) == 0.0
    assert detection_agreement(faces((0, 0, 10, 10)), faces((0, 0, 10, 10), label="cat")) == 0.0
    half = faces((0, 0, 10, 5))  # IoU 0.5 exactly
    assert detection_agreement(faces((0, 0, 10, 10)), half) == pytest.approx(0.5)


def test_matching_is_one_to_one_and_optimal_not_greedy() -> None:
    # Greedy matching takes B-X (IoU 0.818) first and leaves A-Y below 0.5: 0.818 / 2.
    # The assignment takes A-X (0.667) and B-Y (0.538): (0.667 + 0.538) / 2.
    source = faces((0, 0, 10, 10), (3, 0, 13, 10))
    int8 = faces((2, 0, 12, 10), (6, 0, 16, 10))
    assert detection_agreement(source, int8) == pytest.approx((80 / 120 + 70 / 130) / 2)
    one_box = faces((0, 0, 10, 10))
    two_on_it = faces((0, 0, 10, 10), (0, 0, 10, 10))
    assert detection_agreement(one_box, two_on_it) == pytest.approx(0.5)


# ---------------------------------------------------------------------- text regions


def test_text_regions_agree_on_polygons() -> None:
    a = texts(quad(0, 0, 100, 20), quad(0, 40, 100, 60))
    assert text_region_agreement(a, a) == pytest.approx(1.0)
    b = texts(quad(0, 0, 100, 20), quad(10, 40, 110, 60))  # second line shifted by 10 %
    assert text_region_agreement(a, b) == pytest.approx((1 + 1800 / 2200) / 2)
    assert text_region_agreement(texts(), texts()) == 1.0
    assert text_region_agreement(a, texts()) == 0.0


def test_rotated_text_regions_use_the_polygon_not_its_bounding_box() -> None:
    diamond = np.array([[10, 0], [20, 10], [10, 20], [0, 10]], dtype=float)
    # Bounding boxes would call these identical; the polygons overlap by one half.
    assert text_region_agreement(texts(diamond), texts(quad(0, 0, 20, 20))) == pytest.approx(0.5)


# ------------------------------------------------------------- masks, text, classes


def test_mask_iou() -> None:
    a = np.zeros((4, 4), np.uint8)
    b = np.zeros((4, 4), np.uint8)
    assert mask_iou(Mask(a), Mask(b)) == 1.0
    a[:, :2] = 255
    assert mask_iou(Mask(a), Mask(b)) == 0.0
    b[:, 1:3] = 255
    assert mask_iou(Mask(a), Mask(b)) == pytest.approx(4 / 12)
    with pytest.raises(ValueError, match="one shape"):
        mask_iou(Mask(a), Mask(np.zeros((4, 5), np.uint8)))


def test_text_is_an_exact_match() -> None:
    assert text_match(Text("EXIT", 0.9), Text("EXIT", 0.5)) == 1.0
    assert text_match(Text("EXIT", 0.9), Text("EXlT", 0.9)) == 0.0


def test_classes_agree_on_the_top_label_only() -> None:
    a = Classes(["0", "180"], np.array([0.9, 0.1]))
    assert top1_agreement(a, Classes(["0", "180"], np.array([0.6, 0.4]))) == 1.0
    assert top1_agreement(a, Classes(["180", "0"], np.array([0.6, 0.4]))) == 0.0
    assert top1_agreement(Classes([], np.zeros(0)), Classes([], np.zeros(0))) == 1.0
    assert top1_agreement(a, Classes([], np.zeros(0))) == 0.0


# ---------------------------------------------------------------------- dispatch


def test_agreement_dispatches_on_the_result_type_and_means_over_frames() -> None:
    pairs = [
        (faces((0, 0, 10, 10)), faces((0, 0, 10, 10))),
        (faces((0, 0, 10, 10)), Detections.empty()),
    ]
    assert agreement(*pairs[0]) == 1.0
    assert mean_agreement(pairs) == pytest.approx(0.5)
    assert agreement(Text("a", 1.0), Text("b", 1.0)) == 0.0


def test_agreement_refuses_mixed_types_and_no_frames() -> None:
    with pytest.raises(ValueError, match="Detections and Text"):
        agreement(faces((0, 0, 1, 1)), Text("a", 1.0))
    with pytest.raises(ValueError, match="at least one pair"):
        mean_agreement([])


def test_moderation_results_agree_on_their_detections() -> None:
    boxes = np.array([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 40.0, 40.0]])
    a = Moderation(Detections(boxes, np.array([0.9, 0.8]), ["x", "y"]), Verdict(False, [], 0.0))
    b = Moderation(Detections(boxes[:1], np.array([0.9]), ["x"]), Verdict(False, [], 0.0))
    assert agreement(a, a) == 1.0
    assert agreement(a, b) == pytest.approx(0.5)
    assert METRICS["yolo"] == METRICS["detr"] == METRICS["ssd_anchors"]
