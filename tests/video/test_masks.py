"""Mask-track polygons with real OpenCV: drawn shapes and scikit-image's horse silhouette."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import skimage.data
import skimage.transform

from frameserve.video.masks import fill_polygons, mask_polygons, polygons_to_json


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return float((a & b).sum() / (a | b).sum())


def circle(shape: tuple[int, int], centre: tuple[int, int], radius: int) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    cv2.circle(mask, centre, radius, 255, -1)
    return mask


def horse() -> np.ndarray:
    """A detailed real silhouette (legs, ears, tail) at 720p, as 0/255."""
    silhouette = ~skimage.data.horse()  # the horse is False on a True background
    big = skimage.transform.resize(silhouette.astype(float), (720, 880)) > 0.5
    mask = np.zeros((720, 1280), np.uint8)
    mask[:, 200:1080][big] = 255
    return mask


def test_a_circle_becomes_one_close_polygon() -> None:
    mask = circle((480, 640), (320, 240), 150)
    polygons = mask_polygons(mask)
    assert len(polygons) == 1
    polygon = polygons[0]
    assert polygon.dtype == np.int32 and polygon.ndim == 2 and polygon.shape[1] == 2
    assert iou(fill_polygons(polygons, 480, 640), mask) > 0.97
    assert len(polygon) < 60  # simplified: the raw contour has hundreds of points


def test_a_rectangle_becomes_its_four_corners() -> None:
    mask = np.zeros((200, 300), np.uint8)
    mask[40:120, 50:250] = 255
    (polygon,) = mask_polygons(mask)
    assert sorted(map(tuple, polygon.tolist())) == [(50, 40), (50, 119), (249, 40), (249, 119)]
    np.testing.assert_array_equal(fill_polygons([polygon], 200, 300), mask)


def test_a_real_silhouette_round_trips_closely() -> None:
    mask = horse()
    polygons = mask_polygons(mask)
    assert 1 <= len(polygons) <= 3
    assert iou(fill_polygons(polygons, 720, 1280), mask) > 0.97


def test_two_blobs_give_two_polygons_largest_first() -> None:
    mask = circle((300, 600), (100, 150), 40)
    mask |= circle((300, 600), (450, 150), 90)
    polygons = mask_polygons(mask)
    assert len(polygons) == 2
    areas = [cv2.contourArea(p) for p in polygons]
    assert areas[0] > areas[1]
    assert polygons[0][:, 0].min() > 300  # the big circle on the right comes first


def test_tiny_blobs_are_dropped() -> None:
    mask = np.zeros((100, 100), np.uint8)
    mask[10:15, 10:15] = 255  # speckle: 16 px² of contour area
    mask[50:80, 50:80] = 255
    polygons = mask_polygons(mask, min_area=64.0)
    assert len(polygons) == 1 and polygons[0][:, 0].min() == 50
    assert len(mask_polygons(mask, min_area=0.0)) == 2
    assert mask_polygons(np.full((4, 4), 255, np.uint8)) == []  # 9 px² < 64


def test_single_pixels_are_never_polygons() -> None:
    mask = np.zeros((20, 20), np.uint8)
    mask[5, 5] = 255
    mask[10, 3:12] = 255  # a one-pixel line has no area either
    assert mask_polygons(mask, min_area=0.0) == []


def test_an_empty_mask_has_no_polygons() -> None:
    assert mask_polygons(np.zeros((720, 1280), np.uint8)) == []
    assert polygons_to_json([]) == []
    np.testing.assert_array_equal(fill_polygons([], 10, 20), np.zeros((10, 20), np.uint8))


def test_a_boolean_mask_gives_the_same_polygons() -> None:
    mask = circle((200, 200), (100, 100), 60)
    for a, b in zip(mask_polygons(mask), mask_polygons(mask > 0), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_larger_epsilon_gives_fewer_points() -> None:
    mask = horse()
    counts = [sum(len(p) for p in mask_polygons(mask, epsilon=e)) for e in (0.5, 2.0, 8.0)]
    assert counts[0] > counts[1] > counts[2]


@pytest.mark.parametrize("max_points", [4, 16, 64])
def test_max_points_is_respected_and_used(max_points: int) -> None:
    mask = horse()
    free = mask_polygons(mask, epsilon=1.0)
    capped = mask_polygons(mask, epsilon=1.0, max_points=max_points)
    assert len(capped) == len(free)
    assert all(3 <= len(p) <= max_points for p in capped)
    # the cap is reached, not undershot far: the epsilon found is the tightest that fits
    assert len(capped[0]) >= max_points - 2
    assert iou(fill_polygons(capped, 720, 1280), mask) <= iou(fill_polygons(free, 720, 1280), mask)


def test_max_points_leaves_small_polygons_alone() -> None:
    mask = circle((300, 300), (150, 150), 100)
    np.testing.assert_array_equal(mask_polygons(mask, max_points=1000)[0], mask_polygons(mask)[0])


def test_a_huge_epsilon_still_gives_a_polygon() -> None:
    mask = np.zeros((100, 100), np.uint8)
    mask[20:40, 10:90] = 255
    (polygon,) = mask_polygons(mask, epsilon=1000.0)
    assert len(polygon) >= 3
    assert iou(fill_polygons([polygon], 100, 100), mask) > 0.9


def test_json_form_is_plain_ints() -> None:
    polygons = mask_polygons(horse())
    data = polygons_to_json(polygons)
    assert len(data) == len(polygons)
    points = [pt for polygon in data for pt in polygon]
    assert all(type(v) is int for pt in points for v in pt) and all(len(pt) == 2 for pt in points)
    assert json.loads(json.dumps(data)) == data
    back = [np.array(p, np.int32) for p in data]
    np.testing.assert_array_equal(
        fill_polygons(back, 720, 1280), fill_polygons(polygons, 720, 1280)
    )


def test_overlapping_polygons_fill_their_union() -> None:
    a = np.array([[10, 10], [60, 10], [60, 60], [10, 60]], np.int32)
    b = a + 25
    filled = fill_polygons([a, b], 100, 100)
    assert filled[40, 40] == 255  # in both: filled, not cancelled out
    assert set(np.unique(filled)) == {0, 255}


@pytest.mark.parametrize(
    ("mask", "kwargs", "message"),
    [
        (np.zeros((10, 10, 3), np.uint8), {}, "mask: expected an HxW uint8 or bool array"),
        (np.zeros((10, 10), np.float32), {}, "float32"),
        (np.zeros((10, 10), np.uint8), {"epsilon": -1.0}, "epsilon: expected >= 0"),
        (np.zeros((10, 10), np.uint8), {"epsilon": float("nan")}, "epsilon"),
        (np.zeros((10, 10), np.uint8), {"max_points": 3}, "max_points: expected None or >= 4"),
    ],
)
def test_bad_arguments_raise_clear_errors(
    mask: np.ndarray, kwargs: dict[str, float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        mask_polygons(mask, **kwargs)  # type: ignore[arg-type]


def test_fill_polygons_rejects_an_empty_size() -> None:
    with pytest.raises(ValueError, match="height, width"):
        fill_polygons([], 0, 10)
