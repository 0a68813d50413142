"""Overlays drawn with real OpenCV onto scikit-image's astronaut: what changes, what must not."""

from __future__ import annotations

import re

import cv2
import numpy as np
import pytest
import skimage.data

from frameserve.processing.results import Classes, Detections, Mask, Text, Texts
from frameserve.video.overlay import PALETTE, OverlayStyle, colour_for, draw, drawable


@pytest.fixture
def frame() -> np.ndarray:
    return skimage.data.astronaut().copy()  # 512x512x3 RGB uint8


def circle_mask(shape: tuple[int, ...], centre: tuple[int, int], radius: int) -> np.ndarray:
    mask = np.zeros(shape[:2], np.uint8)
    cv2.circle(mask, centre, radius, 255, -1)
    return mask


def test_tint_changes_only_masked_pixels_by_alpha(frame: np.ndarray) -> None:
    original = frame.copy()
    mask = circle_mask(frame.shape, (230, 140), 80)
    style = OverlayStyle(mask="tint", tint_color=(0, 255, 0), tint_alpha=0.5)
    assert draw(frame, Mask(mask), style) is frame
    inside = mask > 0
    np.testing.assert_array_equal(frame[~inside], original[~inside])
    expected = original[inside] * 0.5 + np.array([0, 255, 0]) * 0.5
    assert np.abs(frame[inside].astype(float) - expected).max() <= 1.0


def test_blur_changes_only_masked_pixels_and_smooths_them(frame: np.ndarray) -> None:
    original = frame.copy()
    mask = circle_mask(frame.shape, (230, 140), 80)  # the astronaut's face
    draw(frame, Mask(mask), OverlayStyle(mask="blur", blur_kernel=31))
    inside = mask > 0
    np.testing.assert_array_equal(frame[~inside], original[~inside])

    core = cv2.erode(mask, np.ones((5, 5), np.uint8)) > 0  # the seam at the edge is sharp

    def detail(image: np.ndarray) -> float:
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        return float(cv2.Laplacian(gray, cv2.CV_64F)[core].var())

    assert detail(frame) < 0.05 * detail(original)


def test_blur_near_the_frame_edge(frame: np.ndarray) -> None:
    original = frame.copy()
    mask = np.zeros(frame.shape[:2], np.uint8)
    mask[:40, 470:] = 255  # the kernel reaches past two edges
    draw(frame, Mask(mask), OverlayStyle(mask="blur"))
    np.testing.assert_array_equal(frame[mask == 0], original[mask == 0])
    assert not np.array_equal(frame[mask > 0], original[mask > 0])


@pytest.mark.parametrize("effect", ["tint", "blur", "none"])
def test_empty_or_disabled_mask_leaves_frame_unchanged(frame: np.ndarray, effect: str) -> None:
    original = frame.copy()
    draw(frame, Mask(np.zeros(frame.shape[:2], np.uint8)), OverlayStyle(mask=effect))  # type: ignore[arg-type]
    if effect == "none":
        draw(frame, Mask(circle_mask(frame.shape, (100, 100), 50)), OverlayStyle(mask="none"))
    np.testing.assert_array_equal(frame, original)


@pytest.mark.parametrize(
    "result",
    [Detections.empty(), Texts(np.zeros((0, 4, 2)), np.zeros(0)), Classes([], np.zeros(0))],
    ids=["detections", "texts", "classes"],
)
def test_empty_results_leave_frame_unchanged(frame: np.ndarray, result: object) -> None:
    original = frame.copy()
    draw(frame, result)  # type: ignore[arg-type]
    np.testing.assert_array_equal(frame, original)


def tracked(boxes: list[list[float]], track_ids: list[int]) -> Detections:
    n = len(boxes)
    return Detections(
        np.array(boxes, float), np.full(n, 0.9), ["person"] * n, None, np.array(track_ids)
    )


def test_boxes_are_drawn_on_their_edges_in_the_track_colour(frame: np.ndarray) -> None:
    original = frame.copy()
    draw(frame, tracked([[100, 200, 300, 400]], [5]), OverlayStyle(box_thickness=2))
    colour = np.array(colour_for(5))
    assert colour_for(5) == PALETTE[5]
    for x, y in [(200, 400), (100, 300), (300, 300), (200, 200)]:  # bottom, left, right, top
        np.testing.assert_array_equal(frame[y, x], colour)
    # the inside and everything far from the box and its caption are untouched
    np.testing.assert_array_equal(frame[210:390, 110:290], original[210:390, 110:290])
    np.testing.assert_array_equal(frame[410:], original[410:])
    np.testing.assert_array_equal(frame[:, 310:], original[:, 310:])
    # the "#5" caption sits on a tab above the top-left corner
    assert not np.array_equal(frame[180:198, 100:130], original[180:198, 100:130])


def test_a_track_keeps_its_colour_across_frames() -> None:
    first = np.zeros((300, 400, 3), np.uint8)
    second = np.zeros((300, 400, 3), np.uint8)
    draw(first, tracked([[20, 50, 120, 150], [200, 50, 300, 150]], [7, 8]))
    # next frame: the tracks moved and come in the other order
    draw(second, tracked([[230, 100, 330, 200], [40, 100, 140, 200]], [8, 7]))
    np.testing.assert_array_equal(first[150, 70], second[200, 90])  # track 7, bottom edge
    np.testing.assert_array_equal(first[150, 250], second[200, 280])  # track 8
    assert not np.array_equal(first[150, 70], first[150, 250])


def test_untracked_boxes_are_coloured_by_label_and_captioned_with_the_score() -> None:
    frame = np.zeros((300, 400, 3), np.uint8)
    det = Detections(
        np.array([[20, 60, 120, 160], [200, 60, 300, 160]], float),
        np.array([0.9, 0.8]),
        ["face", "face"],
    )
    draw(frame, det)
    np.testing.assert_array_equal(frame[160, 70], frame[160, 250])
    assert frame[30:58, 20:110].any()  # the caption tab above the first box


def test_keypoints_are_dots_and_missing_ones_are_skipped(frame: np.ndarray) -> None:
    original = frame.copy()
    keypoints = np.array([[[150.0, 250.0], [np.nan, np.nan], [250.0, 350.0]]])
    det = Detections(
        np.array([[100, 200, 300, 400]], float), np.array([0.9]), ["face"], keypoints, np.array([2])
    )
    draw(frame, det, OverlayStyle(keypoint_radius=3))
    colour = np.array(colour_for(2))
    for x, y in [(150, 250), (250, 350)]:
        np.testing.assert_array_equal(frame[y, x], colour)
    without = original.copy()
    draw(without, det, OverlayStyle(draw_keypoints=False))
    np.testing.assert_array_equal(without[250, 150], original[250, 150])


def test_boxes_far_outside_the_frame_draw_nothing_and_do_not_fail(frame: np.ndarray) -> None:
    original = frame.copy()
    det = Detections(
        np.array([[1e9, 1e9, 2e9, 2e9], [np.nan, 0, 10, 10], [-5e8, -5e8, -1e8, -1e8]]),
        np.array([0.9, 0.8, 0.7]),
        ["a", "b", "c"],
    )
    draw(frame, det)
    far = np.array([[[600, 10], [700, 10], [700, 40], [600, 40]], [[0, -90], [50, -90]] * 2], float)
    draw(frame, Texts(far, np.array([0.9, 0.9]), ["OFF", "OFF"]))
    np.testing.assert_array_equal(frame, original)


def quads() -> np.ndarray:
    return np.array([[[40, 300], [240, 300], [240, 340], [40, 340]]], float)


def test_text_regions_are_outlined_and_captioned(frame: np.ndarray) -> None:
    style = OverlayStyle(text_region_color=(255, 255, 0))
    outline_only = frame.copy()
    draw(outline_only, Texts(quads(), np.array([0.9])), style)  # not recognised yet: no text
    np.testing.assert_array_equal(outline_only[340, 140], [255, 255, 0])
    np.testing.assert_array_equal(outline_only[320, 40], [255, 255, 0])
    captioned = frame.copy()
    draw(captioned, Texts(quads(), np.array([0.9]), ["SPACE"]), style)
    assert not np.array_equal(captioned[270:298], outline_only[270:298])


def test_text_opencv_cannot_draw_falls_back_to_the_outline(frame: np.ndarray) -> None:
    outline_only = frame.copy()
    draw(outline_only, Texts(quads(), np.array([0.9])))
    for text in ["สวัสดี", "नमस्ते", "مرحبا", "שלום", "😀"]:
        drawn = frame.copy()
        draw(drawn, Texts(quads(), np.array([0.9]), [text]))
        np.testing.assert_array_equal(drawn, outline_only, err_msg=text)


def test_drawable_matches_the_opencv_build() -> None:
    assert drawable("person 0.93")
    assert not drawable("")
    assert not drawable("line\nbreak")
    assert not drawable("ok สวัสดี")
    unicode_font = re.search(r"Built-in Unicode font:\s*YES", cv2.getBuildInformation())
    assert drawable("中文 Привет Γειά") == bool(unicode_font)


@pytest.mark.parametrize(
    "result", [Text("SPACE", 0.93), Classes(["astronaut", "rocket"], np.array([0.9, 0.1]))]
)
def test_results_without_geometry_are_captioned_top_left(frame: np.ndarray, result: object) -> None:
    original = frame.copy()
    draw(frame, result)  # type: ignore[arg-type]
    changed = np.argwhere((frame != original).any(axis=2))
    assert len(changed) > 0
    assert changed[:, 0].max() < 80 and changed[:, 1].max() < 200
    quiet = original.copy()
    draw(quiet, result, OverlayStyle(draw_labels=False))  # type: ignore[arg-type]
    np.testing.assert_array_equal(quiet, original)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.zeros((64, 64), np.uint8), "HxWx3 uint8"),
        (np.zeros((64, 64, 4), np.uint8), "HxWx3 uint8"),
        (np.zeros((64, 64, 3), np.float32), "HxWx3 uint8"),
        (np.zeros((64, 64, 3), np.uint8)[:, ::-1], "packed RGB"),
        ([[0, 0, 0]], "numpy array"),
    ],
    ids=["gray", "rgba", "float", "flipped-view", "list"],
)
def test_bad_frames_raise_clear_errors(bad: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        draw(bad, Detections.empty())


def test_read_only_frame_is_rejected(frame: np.ndarray) -> None:
    frame.flags.writeable = False
    with pytest.raises(ValueError, match="writable"):
        draw(frame, Detections.empty())


def test_mask_of_another_size_is_rejected(frame: np.ndarray) -> None:
    with pytest.raises(ValueError, match=r"mask: expected 512x512 uint8 like the frame, got .*256"):
        draw(frame, Mask(np.zeros((256, 256), np.uint8)))


def test_unknown_results_are_rejected(frame: np.ndarray) -> None:
    with pytest.raises(TypeError, match="dict"):
        draw(frame, {"boxes": []})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("mask", "pixelate"),
        ("tint_alpha", 1.5),
        ("blur_kernel", 30),
        ("tint_color", (0, 0, 300)),
        ("box_thickness", 0),
        ("font_scale", 0.0),
    ],
)
def test_style_rejects_bad_values_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"OverlayStyle.{field}: expected"):
        OverlayStyle(**{field: value})  # type: ignore[arg-type]
