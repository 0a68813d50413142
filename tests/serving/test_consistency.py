"""Served results equal each model's reference pipeline (the zoo models, real images).

The references are independent of frameserve: tests/reference re-implements MediaPipe's
documented pre- and post-processing around the raw .tflite files (OpenVINO, f32), and for OCR
the reference is rapidocr's own pipeline. Pre-processed tensors are compared too, tightly, so
that drift in resize or colour handling fails here even when the detections happen to agree;
the drift tests show that a deliberate change does fail the comparison.
"""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
import skimage.data
from PIL import Image, ImageDraw, ImageFont
from reference.mediapipe_faces import iou, reference_face_input, reference_faces
from reference.mediapipe_models import FACE_FULL_RANGE, FACE_SHORT_RANGE, SELFIE
from reference.mediapipe_selfie import reference_person_input, reference_person_mask

from frameserve.processing.results import Detections, Mask, Texts
from frameserve.processing.tasks import DecodeOptions
from frameserve.processing.transform import Preprocessor
from frameserve.serving.config import load_model_config
from frameserve.serving.server import InferenceServer, ServerSettings

T = TypeVar("T")
TENSOR_TOLERANCE = 1e-5  # float32 rounding only


class LoopThread:
    """An event loop in a thread owning one started InferenceServer."""

    def __init__(self, repository: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = InferenceServer(ServerSettings(repository=repository))
        self.run(self.server.start())

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=120)

    def close(self) -> None:
        self.run(self.server.drain())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def served(zoo_repository_f32: Path) -> Iterator[LoopThread]:
    """The zoo at f32 (it serves bf16 on this CPU): the references run at f32."""
    running = LoopThread(zoo_repository_f32)
    assert not running.server.repository.failures()
    yield running
    running.close()


def png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "PNG")
    return buf.getvalue()


def predict(served: LoopThread, model: str, image: np.ndarray) -> Any:
    result, _ = served.run(served.server.predict(model, png(image), "image/png", DecodeOptions()))
    return result


def assert_tensor_matches(ours: np.ndarray, reference: np.ndarray) -> None:
    assert ours.shape == reference.shape, (ours.shape, reference.shape)
    worst = float(np.abs(ours.astype(np.float64) - reference).max())
    assert worst <= TENSOR_TOLERANCE, f"pre-processed tensor differs by up to {worst}"


def preprocessor(repository: Path, model: str) -> Preprocessor:
    config = load_model_config(repository / model / "model.yaml")
    assert config.preprocess is not None
    return Preprocessor(config.preprocess)


ASTRONAUT = skimage.data.astronaut()
FRAMINGS = {
    "astronaut": ASTRONAUT,
    "tall crop": np.ascontiguousarray(ASTRONAUT[:, :300]),
    "wide canvas": np.pad(ASTRONAUT, ((0, 0), (200, 188), (0, 0))),
}
FACE_MODELS = {
    "faces": ("full", FACE_FULL_RANGE, 192),
    "faces-near": ("short", FACE_SHORT_RANGE, 128),
}


# --- faces ----------------------------------------------------------------------------------


@pytest.mark.parametrize("model", list(FACE_MODELS))
@pytest.mark.parametrize("framing", list(FRAMINGS))
def test_face_input_tensor_matches_the_reference(
    zoo_repository: Path, model: str, framing: str
) -> None:
    _, _, size = FACE_MODELS[model]
    image = FRAMINGS[framing]
    ours, _ = preprocessor(zoo_repository, model)([image])
    assert_tensor_matches(ours, reference_face_input(image, size))


@pytest.mark.parametrize("model", list(FACE_MODELS))
@pytest.mark.parametrize("framing", list(FRAMINGS))
def test_served_faces_match_the_reference(
    served: LoopThread, zoo_repository: Path, model: str, framing: str
) -> None:
    variant, relative, _ = FACE_MODELS[model]
    image = FRAMINGS[framing]
    expected = reference_faces(image, str(zoo_repository / relative), variant)
    result = predict(served, model, image)
    assert isinstance(result, Detections)
    assert len(result) == len(expected), (result.to_json(), expected)
    # The close-up model is blind to the face once the frame is 900 px wide; so is MediaPipe.
    assert len(result) == (0 if (model, framing) == ("faces-near", "wide canvas") else 1)
    if not expected:
        return
    got = result.to_json()["detections"][0]
    assert iou(np.array(got["box"]), np.array(expected[0]["box"])) >= 0.9
    assert got["score"] == pytest.approx(expected[0]["score"], abs=0.01)
    assert np.abs(np.array(got["keypoints"]) - np.array(expected[0]["keypoints"])).max() < 2.0


# --- person mask ------------------------------------------------------------------------------


@pytest.mark.parametrize("framing", list(FRAMINGS))
def test_person_input_tensor_matches_the_reference(zoo_repository: Path, framing: str) -> None:
    image = FRAMINGS[framing]
    ours, _ = preprocessor(zoo_repository, "person-mask")([image])
    assert_tensor_matches(ours, reference_person_input(image))


@pytest.mark.parametrize("framing", list(FRAMINGS))
def test_served_mask_matches_the_reference(
    served: LoopThread, zoo_repository: Path, framing: str
) -> None:
    image = FRAMINGS[framing]
    expected = reference_person_mask(image, str(zoo_repository / SELFIE))
    result = predict(served, "person-mask", image)
    assert isinstance(result, Mask)
    assert result.mask.shape == image.shape[:2]  # at source resolution
    ours = result.mask > 0
    union = np.logical_or(ours, expected).sum()
    assert union > 0.1 * ours.size
    assert np.logical_and(ours, expected).sum() / union >= 0.95


# --- OCR against rapidocr ---------------------------------------------------------------------


def rendered_text() -> np.ndarray:
    """Lines of text drawn with Pillow's bundled font, one line turned upside down."""
    canvas = Image.new("RGB", (640, 260), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=30)
    draw.text((20, 20), "Frame rate 59.94 fps", fill="black", font=font)
    draw.text((20, 80), "Batch size 8, delay 2 ms", fill=(40, 40, 120), font=font)
    flipped = Image.new("RGB", (600, 50), "white")
    ImageDraw.Draw(flipped).text((10, 5), "upside down line", fill="black", font=font)
    canvas.paste(flipped.rotate(180), (20, 160))
    return np.asarray(canvas).copy()


OCR_IMAGES = {
    "page": lambda: np.stack([skimage.data.page()] * 3, axis=-1),
    "rendered": rendered_text,
}


@pytest.fixture(scope="module")
def rapidocr_engine() -> Any:
    from rapidocr import RapidOCR

    return RapidOCR(params={"Global.log_level": "error"})


def rapidocr_texts(engine: Any, rgb: np.ndarray) -> list[tuple[str, np.ndarray]]:
    out = engine(np.ascontiguousarray(rgb[..., ::-1]))  # rapidocr works in BGR, as cv2 reads
    if out.txts is None:
        return []
    return [(t, np.asarray(b, dtype=np.float64)) for t, b in zip(out.txts, out.boxes, strict=True)]


@pytest.mark.parametrize("image_name", list(OCR_IMAGES))
def test_served_ocr_matches_rapidocr(
    served: LoopThread, rapidocr_engine: Any, image_name: str
) -> None:
    image = OCR_IMAGES[image_name]()
    expected = rapidocr_texts(rapidocr_engine, image)
    assert len(expected) >= 3
    result = predict(served, "ocr", image)
    assert isinstance(result, Texts)
    assert [t for t, _ in expected] == result.texts
    for (_, box), polygon in zip(expected, result.polygons, strict=True):
        assert np.abs(box - polygon).max() <= 2.0, (box, polygon)


def test_text_detection_input_matches_pp_ocr(zoo_repository: Path) -> None:
    from rapidocr.ch_ppocr_det.utils import DetPreProcess

    image = OCR_IMAGES["page"]()
    reference = DetPreProcess(736, "min", [0.5] * 3, [0.5] * 3)(image[..., ::-1].copy())
    ours, _ = preprocessor(zoo_repository, "text-det")([image])
    assert_tensor_matches(ours, reference)


# --- drift has teeth --------------------------------------------------------------------------


def drifted(repository: Path, model: str, **resize: Any) -> Preprocessor:
    spec = preprocessor(repository, model).spec
    changed = spec.model_copy(update={"resize": spec.resize.model_copy(update=resize)})
    return Preprocessor(changed)


@pytest.mark.parametrize(
    "change", [{"interpolation": "cubic"}, {"interpolation": "nearest"}, {"sampler": "resize"}]
)
def test_a_changed_resize_fails_the_face_comparison(zoo_repository: Path, change: dict) -> None:
    ours, _ = drifted(zoo_repository, "faces", **change)([ASTRONAUT])
    with pytest.raises(AssertionError, match="differs by up to"):
        assert_tensor_matches(ours, reference_face_input(ASTRONAUT, 192))


def test_a_swapped_colour_order_fails_the_comparisons(zoo_repository: Path) -> None:
    spec = preprocessor(zoo_repository, "faces").spec
    ours, _ = Preprocessor(spec.model_copy(update={"color": "bgr"}))([ASTRONAUT])
    with pytest.raises(AssertionError, match="differs by up to"):
        assert_tensor_matches(ours, reference_face_input(ASTRONAUT, 192))
    from rapidocr.ch_ppocr_det.utils import DetPreProcess

    page = OCR_IMAGES["rendered"]()
    spec = preprocessor(zoo_repository, "text-det").spec
    ours, _ = Preprocessor(spec.model_copy(update={"color": "rgb"}))([page])
    reference = DetPreProcess(736, "min", [0.5] * 3, [0.5] * 3)(page[..., ::-1].copy())
    with pytest.raises(AssertionError, match="differs by up to"):
        assert_tensor_matches(ours, reference)


@pytest.mark.parametrize("model", ["text-rec", "text-cls"])
def test_crop_tensors_match_pp_ocr(zoo_repository: Path, model: str) -> None:
    from types import SimpleNamespace

    from rapidocr.ch_ppocr_cls.main import TextClassifier
    from rapidocr.ch_ppocr_rec.main import TextRecognizer

    page = OCR_IMAGES["page"]()
    crops = [page[9:36, 3:296], page[45:68, 2:379], page[167:190, 38:150]]  # lines of the page
    ours, _ = preprocessor(zoo_repository, model)(crops)
    bgr = [np.ascontiguousarray(c[..., ::-1]) for c in crops]
    if model == "text-rec":
        shape = [3, 48, 320]
        ratio = max(320 / 48, *(c.shape[1] / c.shape[0] for c in crops))
        owner = SimpleNamespace(rec_image_shape=shape)
        reference = np.stack([TextRecognizer.resize_norm_img(owner, c, ratio) for c in bgr])
    else:
        owner = SimpleNamespace(cls_image_shape=[3, 48, 192])
        reference = np.stack([TextClassifier.resize_norm_img(owner, c) for c in bgr])
    assert_tensor_matches(ours, reference)
