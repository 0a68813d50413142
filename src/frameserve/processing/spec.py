"""The ``preprocess`` and ``postprocess`` blocks of ``model.yaml``.

They declare exactly how a decoded image becomes the model's input tensor and how the output
tensors become results, so that every caller (an image request, a v2 request with an encoded
image, a video pipeline) runs the same steps the model was trained with.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, model_validator

Interpolation = Literal["nearest", "linear", "cubic", "area", "lanczos"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ResizeSpec(_Strict):
    """How the source image is brought to the model's input size.

    - ``stretch``: to ``size`` exactly, ignoring the aspect ratio.
    - ``letterbox``: keep the ratio, fit inside ``size``, centre, pad the borders.
    - ``pad``: keep the ratio, fit inside ``size``, pad right and bottom.
    - ``limit_side``: scale so the ``limit_type`` side meets ``limit`` (PP-OCR detection:
      ``min`` only enlarges, ``max`` only shrinks), then round each side to a multiple of
      ``multiple``.
    - ``fixed_height``: scale to ``height`` keeping the ratio (width rounded up, at most the
      target width); the target width is ``width``, or with ``variable_width`` the widest
      ratio in the batch times ``height`` (PP-OCR recognition); pad right.
    """

    mode: Literal["stretch", "letterbox", "pad", "limit_side", "fixed_height"]
    size: tuple[PositiveInt, PositiveInt] | None = Field(
        default=None, description="[width, height] for stretch, letterbox and pad"
    )
    interpolation: Interpolation = "linear"
    sampler: Literal["resize", "warp"] = Field(
        default="resize",
        description="resize: cv2.resize (half-pixel centres) on whole-pixel padding; warp: "
        "map the padded source rectangle's corners onto the tensor's corners with "
        "cv2.warpPerspective (MediaPipe's ImageToTensorCalculator on CPU); stretch, letterbox "
        "and pad only",
    )
    pad_value: float = 0.0
    pad_in: Literal["image", "tensor"] = Field(
        default="image",
        description="image: pad pixels with pad_value before normalisation; tensor: fill the "
        "normalised tensor with pad_value (PP-OCR pads its normalised crops with 0)",
    )
    limit: PositiveInt | None = None
    limit_type: Literal["min", "max"] = "max"
    multiple: PositiveInt = 1
    height: PositiveInt | None = None
    width: PositiveInt | None = None
    variable_width: bool = False

    @model_validator(mode="after")
    def _complete(self) -> ResizeSpec:
        need = {
            "stretch": ("size",),
            "letterbox": ("size",),
            "pad": ("size",),
            "limit_side": ("limit",),
            "fixed_height": ("height", "width"),
        }[self.mode]
        missing = [f for f in need if getattr(self, f) is None]
        if missing:
            raise ValueError(f"resize mode {self.mode!r} needs {missing}")
        if self.pad_in == "tensor" and self.sampler == "warp":
            raise ValueError("pad_in 'tensor' works with sampler 'resize' only")
        if self.sampler == "warp" and self.mode not in ("stretch", "letterbox", "pad"):
            raise ValueError(
                f"sampler 'warp' works with stretch, letterbox and pad, not {self.mode!r}"
            )
        return self


class PreprocessSpec(_Strict):
    """Decoded RGB uint8 image -> input tensor: colour, resize, normalise, layout, dtype."""

    input: str | None = Field(default=None, description="the tensor fed; default: the only input")
    color: Literal["rgb", "bgr"] = "rgb"
    resize: ResizeSpec
    scale: float = 1.0
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[PositiveFloat, PositiveFloat, PositiveFloat] = (1.0, 1.0, 1.0)
    layout: Literal["NHWC", "NCHW"] = "NHWC"
    dtype: Literal["FP32", "FP16", "UINT8"] = "FP32"
    fuse: bool = Field(
        default=False,
        description="run colour order, normalisation, layout and dtype inside the OpenVINO "
        "graph (PrePostProcessor); the request then carries uint8 NHWC after resize",
    )

    @model_validator(mode="after")
    def _fusable(self) -> PreprocessSpec:
        if self.fuse and self.resize.pad_in == "tensor":
            raise ValueError("fuse cannot pad in the tensor (resize.pad_in: tensor)")
        return self


class AnchorSpec(_Strict):
    """MediaPipe ``SsdAnchorsCalculator`` options (fixed-size anchors)."""

    input_size: tuple[PositiveInt, PositiveInt]
    strides: tuple[PositiveInt, ...]
    anchor_offset: float = 0.5
    aspect_ratios: tuple[PositiveFloat, ...] = (1.0,)
    interpolated_scale_aspect_ratio: float = 0.0


class FaceSsdSpec(_Strict):
    """MediaPipe face detection: SSD anchors, sigmoid scores, weighted NMS."""

    task: Literal["ssd_anchors"]
    boxes: str
    scores: str
    anchors: AnchorSpec
    num_keypoints: Annotated[int, Field(ge=0)] = 6
    box_scale: PositiveFloat
    score_clipping: PositiveFloat = 100.0
    score_threshold: Annotated[float, Field(ge=0.0, le=1.0)] = 0.5
    iou_threshold: Annotated[float, Field(gt=0.0, le=1.0)] = 0.3
    max_results: PositiveInt = 100
    label: str = "face"


class SegmentationSpec(_Strict):
    """Per-pixel foreground probability -> a mask at the source resolution."""

    task: Literal["segmentation"]
    output: str
    threshold: Annotated[float, Field(ge=0.0, le=1.0)] = 0.5
    interpolation: Interpolation = "linear"


class TextDetectionSpec(_Strict):
    """DB (differentiable binarisation) text detection -> quadrilaterals."""

    task: Literal["db_text"]
    output: str
    threshold: Annotated[float, Field(ge=0.0, le=1.0)] = 0.3
    box_threshold: Annotated[float, Field(ge=0.0, le=1.0)] = 0.5
    max_candidates: PositiveInt = 1000
    unclip_ratio: PositiveFloat = 1.6
    dilation: bool = True
    min_size: PositiveFloat = 3.0


class CtcSpec(_Strict):
    """CTC greedy decoding with a character dictionary (blank first, space last)."""

    task: Literal["ctc"]
    output: str
    dictionary: str = Field(description="one character a line, relative to the model folder")


class ClassesSpec(_Strict):
    """Top-k over class scores (softmax first unless the model already gives probabilities)."""

    task: Literal["classes"]
    output: str
    labels: list[str] = Field(default_factory=list, description="class names in output order")
    labels_file: str | None = Field(
        default=None,
        description="instead of labels: one class name a line, relative to the model folder",
    )
    top_k: PositiveInt = 5
    softmax: bool = False

    @model_validator(mode="after")
    def _one_label_source(self) -> ClassesSpec:
        if bool(self.labels) == (self.labels_file is not None):
            raise ValueError("classes: expected either labels (a list) or labels_file, not both")
        return self


class QualitySpec(_Strict):
    """A no-reference quality score (one number a picture) -> 0..100, higher is better.

    The raw score maps linearly: ``best`` to 100, ``worst`` to 0, clipped (BRISQUE: 0 is
    pristine, 100 badly distorted). A picture whose scored copy has a side under ``min_side``
    pixels is refused (400): its statistics mean nothing."""

    task: Literal["quality"]
    output: str
    method: str = "brisque"
    best: float = 0.0
    worst: float = 100.0
    min_side: PositiveInt = 32

    @model_validator(mode="after")
    def _range(self) -> QualitySpec:
        if self.best == self.worst:
            raise ValueError(f"best and worst must differ, both are {self.best}")
        return self


class ScriptDetectionsSpec(_Strict):
    """A script model's boxes as results (``docs/scripts.md``): each row's outputs hold up to K
    boxes, padded; rows whose score is <= 0 or below ``score_threshold`` are padding."""

    task: Literal["script_detections"]
    boxes: str = Field(description="output [K, 4]: x1, y1, x2, y2 per box")
    scores: str = Field(description="output [K]: a score per box; <= 0 marks padding")
    labels: str | None = Field(
        default=None, description="output [K]: integer index into label_names, or BYTES text"
    )
    label_names: list[str] = Field(default_factory=list)
    label: str = Field(default="object", description="every box's label without labels")
    coordinates: Literal["input", "normalized"] = Field(
        default="input",
        description="input: pixels of the model's input tensor; normalized: 0..1 of it",
    )
    score_threshold: Annotated[float, Field(ge=0.0)] = 0.0
    max_results: PositiveInt = 100

    @model_validator(mode="after")
    def _names(self) -> ScriptDetectionsSpec:
        if self.label_names and self.labels is None:
            raise ValueError("label_names needs labels: the output of each box's class index")
        return self


class VerdictSpec(_Strict):
    """A frame is ``unsafe`` when a detection of an ``unsafe`` label reaches its threshold."""

    unsafe: list[str] = Field(min_length=1, description="the labels that make a frame unsafe")
    min_score: Annotated[float, Field(ge=0.0, le=1.0)] = 0.5
    scores: dict[str, Annotated[float, Field(ge=0.0, le=1.0)]] = Field(
        default={}, description="per-label thresholds that replace min_score for those labels"
    )

    @model_validator(mode="after")
    def _known(self) -> VerdictSpec:
        extra = sorted(set(self.scores) - set(self.unsafe))
        if extra:
            raise ValueError(f"verdict.scores: labels {extra} are not in verdict.unsafe")
        return self


class EndToEndOutputs(_Strict):
    """The four outputs of an export with NMS inside (TensorRT's EfficientNMS layout)."""

    num: str = Field(description="detections kept per image, [1]")
    boxes: str = Field(description="[K, 4] x1, y1, x2, y2")
    scores: str = Field(description="[K]")
    classes: str = Field(description="[K] class indices")


class YoloSpec(_Strict):
    """YOLO-family detectors: ``v5`` ``[A, 5+C]`` (x, y, w, h, objectness, class scores),
    ``v8`` ``[4+C, A]`` (v8/v11: no objectness; ``transposed`` for ``[A, 4+C]``) and
    ``end2end`` (NMS inside: ``[K, 6]`` x1, y1, x2, y2, score, class, or four ``outputs``)."""

    task: Literal["yolo"]
    format: Literal["v5", "v8", "end2end"]
    output: str | None = Field(default=None, description="the detections tensor")
    outputs: EndToEndOutputs | None = Field(
        default=None, description="end2end only: num/boxes/scores/classes outputs"
    )
    transposed: bool = Field(default=False, description="v8 only: the output is [A, 4+C]")
    labels: str | None = Field(
        default=None,
        description="class names, one a line, relative to the model folder; unset: the ONNX "
        "file's metadata property 'names' (as Ultralytics writes it)",
    )
    normalized: bool = Field(
        default=False, description="boxes are fractions (0..1) of the input, not its pixels"
    )
    score_threshold: Annotated[float, Field(ge=0.0, le=1.0)] = 0.25
    iou_threshold: Annotated[float, Field(gt=0.0, le=1.0)] = 0.45
    class_agnostic: bool = Field(
        default=False, description="one NMS over all classes (default: per class)"
    )
    max_results: PositiveInt = 300
    verdict: VerdictSpec | None = None

    @model_validator(mode="after")
    def _outputs(self) -> YoloSpec:
        if self.format == "end2end":
            if (self.output is None) == (self.outputs is None):
                raise ValueError("format end2end needs exactly one of output or outputs")
        elif self.output is None or self.outputs is not None:
            raise ValueError(f"format {self.format} needs output (and no outputs)")
        if self.transposed and self.format != "v8":
            raise ValueError(f"transposed is for format v8, got format {self.format}")
        return self


class DetrSpec(_Strict):
    """DETR-style detectors: boxes ``[Q, 4]`` (cx, cy, w, h as fractions of the input) and
    class logits ``[Q, C+1]`` (softmax; the last class is "no object") or ``[Q, C]``
    (``sigmoid``, as RT-DETR); no NMS."""

    task: Literal["detr"]
    boxes: str
    logits: str
    activation: Literal["softmax", "sigmoid"] = "softmax"
    labels: str | None = Field(
        default=None,
        description="class names, one a line, relative to the model folder; unset: the ONNX "
        "file's metadata property 'names'",
    )
    score_threshold: Annotated[float, Field(ge=0.0, le=1.0)] = 0.5
    max_results: PositiveInt = 100
    verdict: VerdictSpec | None = None


PostprocessSpec = Annotated[
    FaceSsdSpec
    | SegmentationSpec
    | TextDetectionSpec
    | CtcSpec
    | ClassesSpec
    | QualitySpec
    | ScriptDetectionsSpec
    | YoloSpec
    | DetrSpec,
    Field(discriminator="task"),
]
