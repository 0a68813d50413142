"""Preview pictures: sizes, results scaled from source pixels to the preview, drawing, JPEG."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data

from frameserve.processing.results import (
    Classes,
    Detections,
    Mask,
    Moderation,
    Texts,
    Verdict,
)
from frameserve.video.overlay import colour_for, draw
from frameserve.video.preview import annotate, encode_jpeg, preview_size, scale_result


@pytest.mark.parametrize(
    ("size", "cap", "expected"),
    [
        ((1280, 720), 640, (640, 360)),
        ((1920, 1080), 640, (640, 360)),
        ((320, 240), 640, (320, 240)),  # never wider than the frame
        ((641, 481), 641, (640, 480)),  # even sizes for H.264 4:2:0
        ((1000, 3), 640, (640, 2)),  # at least 2
    ],
)
def test_preview_size(size: tuple[int, int], cap: int, expected: tuple[int, int]) -> None:
    assert preview_size(*size, cap) == expected


def test_preview_size_refuses_an_empty_frame() -> None:
    with pytest.raises(ValueError, match="0x10"):
        preview_size(0, 10, 640)


def test_detections_boxes_and_keypoints_scale_per_axis() -> None:
    keypoints = np.array([[[100.0, 50.0], [np.nan, np.nan]]])
    det = Detections(np.array([[100.0, 50.0, 300.0, 250.0]]), np.array([0.9]), ["face"],
                     keypoints, np.array([7]))  # fmt: skip
    scaled = scale_result(det, (1280, 720), (640, 180))
    assert isinstance(scaled, Detections)
    np.testing.assert_allclose(scaled.boxes, [[50.0, 12.5, 150.0, 62.5]])
    assert scaled.keypoints is not None
    np.testing.assert_allclose(scaled.keypoints[0, 0], [50.0, 12.5])
    assert np.isnan(scaled.keypoints[0, 1]).all()
    assert scaled.track_ids is not None and scaled.track_ids.tolist() == [7]
    assert scaled.labels == ["face"] and scaled.scores.tolist() == [0.9]
    np.testing.assert_allclose(det.boxes, [[100.0, 50.0, 300.0, 250.0]])  # the input stays


def test_text_polygons_moderation_and_masks_scale() -> None:
    polygons = np.array([[[0.0, 0.0], [200.0, 0.0], [200.0, 100.0], [0.0, 100.0]]])
    texts = scale_result(Texts(polygons, np.array([0.8]), ["hi"]), (400, 200), (200, 100))
    assert isinstance(texts, Texts) and texts.texts == ["hi"]
    np.testing.assert_allclose(texts.polygons[0, 2], [100.0, 50.0])

    det = Detections(np.array([[40.0, 40.0, 80.0, 80.0]]), np.array([0.5]), ["x"])
    moderation = Moderation(det, Verdict(True, ["x"], 0.5))
    scaled = scale_result(moderation, (400, 400), (100, 100))
    assert isinstance(scaled, Moderation) and scaled.verdict == moderation.verdict
    np.testing.assert_allclose(scaled.detections.boxes, [[10.0, 10.0, 20.0, 20.0]])

    mask = np.zeros((200, 400), np.uint8)
    mask[100:, 200:] = 255
    small = scale_result(Mask(mask), (400, 200), (100, 50))
    assert isinstance(small, Mask) and small.mask.shape == (50, 100)
    assert set(np.unique(small.mask).tolist()) == {0, 255}  # nearest: no blended edge values
    assert small.mask[25:, 50:].all() and not small.mask[:25].any() and not small.mask[:, :50].any()


def test_results_without_coordinates_come_back_as_they_are() -> None:
    classes = Classes(["cat"], np.array([0.9]))
    assert scale_result(classes, (100, 100), (50, 50)) is classes


def test_annotate_draws_what_draw_draws_on_the_scaled_result() -> None:
    """The preview shows the box where the frame has it, as ``--video-out`` draws it."""
    frame = np.ascontiguousarray(skimage.data.astronaut())  # 512x512
    det = Detections(np.array([[174.0, 68.0, 278.0, 172.0]]), np.array([0.9]), ["face"],
                     None, np.array([1]))  # fmt: skip
    small = cv2.resize(frame, (256, 256), interpolation=cv2.INTER_AREA)
    got = annotate(small.copy(), det, (512, 512))
    half = Detections(det.boxes / 2, det.scores, det.labels, None, det.track_ids)
    expected = draw(small.copy(), half)
    np.testing.assert_array_equal(got, expected)
    # the box's top edge, at half the frame's coordinates, in the track's colour
    assert tuple(got[34, 110]) == colour_for(1)
    assert annotate(small.copy(), None, (512, 512)).tobytes() == small.tobytes()


def test_encode_jpeg_keeps_rgb() -> None:
    picture = np.zeros((32, 48, 3), np.uint8)
    picture[..., 0] = 255  # red
    data = encode_jpeg(picture)
    back = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert back.shape == (32, 48, 3)
    assert back[16, 24, 2] > 240 and back[16, 24, 0] < 15  # red in OpenCV's BGR
