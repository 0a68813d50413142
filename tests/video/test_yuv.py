"""The YUV path (``planes_of`` + ``YuvResizer``) against the RGB path on real decoded H.264.

The RGB path is what the pipelines ran before: ``frame.to_ndarray(format="rgb24")`` (FFmpeg's
scaler) and ``Preprocessor``. A 1280x720 picture of real photographs (scikit-image) is encoded
with libx264 through PyAV, as an encoder pipeline writes it (RGB -> YUV in FFmpeg's scaler with
the matrix and range the stream is tagged with): untagged (BT.601, limited), tagged BT.709
limited, and tagged BT.709 full range (which the decoder returns as ``yuvj420p``). The zoo's
``faces`` (192x192 letterbox) and ``person-mask`` (256x256 stretch) pre-processing runs both
ways; the images must agree within ``processing.yuv``'s tolerance, the served results must
agree, and a wrong matrix, range or chroma alignment must fail that same tolerance.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import av
import cv2
import numpy as np
import pytest
import skimage.data

from frameserve.processing.results import Detections, Mask
from frameserve.processing.transform import Geometry, Preprocessor
from frameserve.processing.yuv import (
    MAX_ABS_DIFF,
    ColorRange,
    Matrix,
    YuvPlanes,
    YuvResizer,
    difference,
    yuv_to_rgb_matrix,
)
from frameserve.serving.config import load_model_config
from frameserve.serving.local import LocalServer
from frameserve.serving.predict import infer_tensor
from frameserve.serving.server import ServerSettings
from frameserve.video.yuv import planes_of

MODELS = ("faces", "person-mask")
# Tags written into the stream: (AVColorSpace, AVColorRange); 0 leaves the tag out.
VARIANTS = {"untagged": (0, 0), "bt709": (1, 1), "bt709 full range": (1, 2)}
EXPECTED_TAGS = {
    "untagged": ("yuv420p", "bt601", "limited"),
    "bt709": ("yuv420p", "bt709", "limited"),
    "bt709 full range": ("yuvj420p", "bt709", "full"),
}


def scene(width: int = 1280, height: int = 720) -> np.ndarray:
    """The astronaut (a person, a face, saturated flag colours) beside a cat and a coffee cup."""
    side = height
    person = cv2.resize(skimage.data.astronaut(), (side, side), interpolation=cv2.INTER_AREA)
    rest = width - side
    top = height * 31 // 60
    cat = cv2.resize(skimage.data.chelsea(), (rest, top), interpolation=cv2.INTER_AREA)
    cup = cv2.resize(skimage.data.coffee(), (rest, height - top), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(np.concatenate([person, np.concatenate([cat, cup])], axis=1))


def encode_and_decode(rgb: np.ndarray, colorspace: int, color_range: int) -> av.VideoFrame:
    """One picture through libx264 and back, with the stream tagged as asked."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = rgb.shape[1], rgb.shape[0], "yuv420p"
        stream.options = {"crf": "16", "preset": "veryfast"}
        if colorspace:
            stream.codec_context.colorspace = colorspace
        if color_range:
            stream.codec_context.color_range = color_range
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
            format="yuv420p",
            dst_colorspace=colorspace or None,
            dst_color_range=color_range or None,
        )
        frame.pts = 0
        for packet in [*stream.encode(frame), *stream.encode()]:
            out.mux(packet)
    with av.open(io.BytesIO(buf.getvalue()), "r") as container:
        return next(container.decode(video=0))


@pytest.fixture(scope="module")
def frames() -> dict[str, av.VideoFrame]:
    picture = scene()
    return {name: encode_and_decode(picture, *tags) for name, tags in VARIANTS.items()}


@pytest.fixture(scope="module")
def preprocessors(zoo_repository: Path) -> dict[str, Preprocessor]:
    out = {}
    for model in MODELS:
        config = load_model_config(zoo_repository / model / "model.yaml")
        assert config.preprocess is not None
        out[model] = Preprocessor(config.preprocess)
    return out


@pytest.fixture(scope="module")
def served(zoo_repository: Path) -> Iterator[LocalServer]:
    settings = ServerSettings(
        repository=zoo_repository, model_control_mode="explicit", load_models=MODELS
    )
    with LocalServer(settings) as local:
        yield local


def rgb_path(pre: Preprocessor, frame: av.VideoFrame) -> tuple[np.ndarray, Geometry]:
    return pre.resize_image(frame.to_ndarray(format="rgb24"))


def yuv_path(pre: Preprocessor, planes: YuvPlanes | None) -> tuple[np.ndarray, Geometry]:
    assert planes is not None
    result = YuvResizer(pre).resize_image(planes)
    assert result is not None
    return result


# --- the adapter ------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_planes_carry_the_stream_tags(frames: dict[str, av.VideoFrame], variant: str) -> None:
    frame = frames[variant]
    planes = planes_of(frame)
    assert planes is not None
    assert (frame.format.name, planes.matrix, planes.range) == EXPECTED_TAGS[variant]
    assert planes.size == (1280, 720)


def test_untagged_streams_read_as_unspecified() -> None:
    """What PyAV 18 returns for a stream without colour tags: AVCOL_SPC_UNSPECIFIED (2) and
    AVCOL_RANGE_UNSPECIFIED (0), plain ints; FFmpeg's scaler then applies BT.601, limited."""
    frame = encode_and_decode(scene(320, 180), 0, 0)
    assert (frame.colorspace, frame.color_range) == (2, 0)
    assert isinstance(frame.colorspace, int) and isinstance(frame.color_range, int)


def test_planes_are_views_of_padded_rows(preprocessors: dict[str, Preprocessor]) -> None:
    """1002 pixels wide: FFmpeg pads each row (``line_size`` > width); no copy is made."""
    frame = encode_and_decode(scene(1002, 562), 1, 1)
    assert frame.planes[0].line_size > 1002
    planes = planes_of(frame)
    assert planes is not None
    assert planes.y.shape == (562, 1002) and planes.y.strides[0] == frame.planes[0].line_size
    assert [c.shape for c in planes.chroma] == [(281, 501), (281, 501)]
    for view, plane in zip((planes.y, *planes.chroma), frame.planes, strict=True):
        assert np.shares_memory(view, np.frombuffer(memoryview(plane), dtype=np.uint8))
    for pre in preprocessors.values():
        ours, geometry = yuv_path(pre, planes)
        reference, _ = rgb_path(pre, frame)
        assert difference(ours, reference, geometry).within


def test_nv12_reads_the_interleaved_chroma(
    frames: dict[str, av.VideoFrame], preprocessors: dict[str, Preprocessor]
) -> None:
    """nv12 (what hardware decoders give) is the same picture as yuv420p: the YUV path gives
    the same image either way (OpenCV's two-channel remap rounds a few pixels apart). FFmpeg's
    own nv12 -> rgb24 path is not the reference: unlike yuv420p it interpolates chroma
    vertically and runs about two levels dark."""
    planar = frames["bt709"]
    nv12 = planar.reformat(format="nv12")
    planes = planes_of(nv12)
    assert planes is not None and planes.chroma[0].shape == (360, 640, 2)
    assert (planes.matrix, planes.range) == ("bt709", "limited")
    for pre in preprocessors.values():
        ours, geometry = yuv_path(pre, planes)
        same = yuv_path(pre, planes_of(planar))[0]
        assert np.abs(ours.astype(np.int16) - same).max() <= 3
        assert difference(ours, rgb_path(pre, planar)[0], geometry).within


@pytest.mark.parametrize(
    "fmt, colorspace", [("yuv444p", 1), ("yuv422p", 1), ("rgb24", 2), ("yuv420p", 9)]
)
def test_other_pictures_stay_on_the_rgb_path(fmt: str, colorspace: int) -> None:
    """Other subsampling, RGB, and matrices FFmpeg's scaler has but this path does not
    (9: BT.2020) give None."""
    frame = av.VideoFrame(64, 48, fmt)
    frame.colorspace = colorspace
    assert planes_of(frame) is None
    frame = av.VideoFrame(64, 48, "yuv420p")
    frame.colorspace = 1
    assert planes_of(frame) is not None


# --- FFmpeg's rgb24 conversion, the reference ----------------------------------------------------


def exact_rgb(planes: YuvPlanes, matrix: Matrix, color_range: ColorRange) -> np.ndarray:
    """Full-size RGB of ``planes`` in exact arithmetic, chroma replicated 2x2 as the scaler
    does (float: no rounding, no clipping until the end)."""
    h, w = planes.y.shape
    rep = [np.repeat(np.repeat(c, 2, 0), 2, 1)[:h, :w] for c in planes.chroma]
    yuv = np.stack([planes.y, *rep], axis=-1).astype(np.float64)
    m = yuv_to_rgb_matrix(matrix, color_range)
    return np.clip(yuv @ m[:, :3].T + m[:, 3], 0, 255)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_ffmpeg_rgb24_follows_the_tags(frames: dict[str, av.VideoFrame], variant: str) -> None:
    """``to_ndarray(format="rgb24")`` converts with the tagged matrix and range (and BT.601
    limited when untagged), replicating chroma; so the YUV path follows the same tags. Its
    rounding is about one level dark, which the YUV path does not copy."""
    frame = frames[variant]
    planes = planes_of(frame)
    assert planes is not None
    ffmpeg = frame.to_ndarray(format="rgb24").astype(np.float64)
    errors = {}
    for matrix in get_args(Matrix):
        for color_range in get_args(ColorRange):
            d = ffmpeg - exact_rgb(planes, matrix, color_range)
            errors[matrix, color_range] = float(np.abs(d).mean())
    tagged = errors.pop((planes.matrix, planes.range))
    assert tagged < 1.5, errors
    assert min(errors.values()) > 2 * tagged, (tagged, errors)


# --- the YUV path against the RGB path --------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_yuv_path_matches_the_rgb_path(
    frames: dict[str, av.VideoFrame],
    preprocessors: dict[str, Preprocessor],
    variant: str,
    model: str,
) -> None:
    pre = preprocessors[model]
    frame = frames[variant]
    ours, geometry = yuv_path(pre, planes_of(frame))
    reference, reference_geometry = rgb_path(pre, frame)
    assert geometry == reference_geometry
    diff = difference(ours, reference, geometry)
    assert diff.within, diff.describe()
    # The float tensors: the same bound, scaled by the normalisation.
    tensor = pre.normalize(ours[None])
    expected, _ = pre([frame.to_ndarray(format="rgb24")])
    gain = float(np.max(np.abs(np.asarray(pre.spec.scale) / np.asarray(pre.spec.std))))
    worst = float(np.abs(tensor.astype(np.float64) - expected).max())
    assert worst <= MAX_ABS_DIFF * gain, (worst, diff.describe())


def serve(local: LocalServer, model: str, image: np.ndarray, geometry: Geometry) -> Any:
    """A resized image through the served model's own normalisation (in numpy, or in its
    graph where it is fused), its scheduler and its task decoder."""

    async def run() -> tuple[Any, dict[str, np.ndarray]]:
        mv = local.server.repository.get(model)  # on the loop that owns the repository
        tensor = mv.processing.preprocess.normalize(image[None])
        return mv, await infer_tensor(mv, tensor)

    mv, outputs = local.call(run(), timeout=60)
    return mv.processing.decode({k: v[0] for k, v in outputs.items()}, geometry)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_served_results_agree(
    served: LocalServer,
    frames: dict[str, av.VideoFrame],
    preprocessors: dict[str, Preprocessor],
    variant: str,
) -> None:
    """The zoo models see the difference as noise: here the mask IoU is 0.99 and the face
    keypoints move at most 1.3 px, where H.264 itself (source picture against decoded frame)
    gives 0.94-0.95 and 2.5 px, and a wrong matrix, range or chroma offset 0.96-0.98 and
    up to 4.8 px."""
    frame = frames[variant]
    results = {}
    for path in ("rgb", "yuv"):
        for model, pre in preprocessors.items():
            if path == "rgb":
                image, geometry = rgb_path(pre, frame)
            else:
                image, geometry = yuv_path(pre, planes_of(frame))
            results[path, model] = serve(served, model, image, geometry)
    faces, expected = results["yuv", "faces"], results["rgb", "faces"]
    assert isinstance(faces, Detections) and isinstance(expected, Detections)
    assert len(faces) == len(expected) == 1  # the astronaut
    assert iou(faces.boxes[0], expected.boxes[0]) >= 0.97
    assert abs(faces.scores[0] - expected.scores[0]) <= 0.01
    assert faces.keypoints is not None and expected.keypoints is not None
    assert np.abs(faces.keypoints - expected.keypoints).max() <= 2.0  # source pixels
    mask, expected_mask = results["yuv", "person-mask"], results["rgb", "person-mask"]
    assert isinstance(mask, Mask) and isinstance(expected_mask, Mask)
    ours, theirs = mask.mask > 0, expected_mask.mask > 0
    assert theirs.mean() > 0.15  # the astronaut is found at all
    assert (ours & theirs).sum() / (ours | theirs).sum() >= 0.98


def iou(a: np.ndarray, b: np.ndarray) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0.0) * max(h, 0.0)
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    return float(inter / (area - inter))


# --- drift has teeth --------------------------------------------------------------------------


def drifted(planes: YuvPlanes, drift: str) -> YuvPlanes:
    """The mistakes a YUV path makes: the other matrix or range, chroma one sample off."""
    if drift == "matrix":
        other_matrix: Matrix = "bt709" if planes.matrix == "bt601" else "bt601"
        return YuvPlanes(planes.y, planes.chroma, other_matrix, planes.range)
    if drift == "range":
        other: ColorRange = "full" if planes.range == "limited" else "limited"
        return YuvPlanes(planes.y, planes.chroma, planes.matrix, other)
    axis = {"chroma column": 1, "chroma row": 0}[drift]
    shifted = tuple(np.roll(c, 1, axis=axis) for c in planes.chroma)
    return YuvPlanes(planes.y, shifted, planes.matrix, planes.range)


@pytest.mark.parametrize("drift", ["matrix", "range", "chroma column", "chroma row"])
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_a_drifted_conversion_fails_the_tolerance(
    frames: dict[str, av.VideoFrame],
    preprocessors: dict[str, Preprocessor],
    variant: str,
    model: str,
    drift: str,
) -> None:
    pre = preprocessors[model]
    frame = frames[variant]
    planes = planes_of(frame)
    assert planes is not None
    ours, geometry = yuv_path(pre, drifted(planes, drift))
    diff = difference(ours, rgb_path(pre, frame)[0], geometry)
    assert not diff.within, diff.describe()
