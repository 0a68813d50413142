"""A model's declared processing as one object: images in, task results out.

``ModelProcessing`` joins a ``Preprocessor`` and the decoder of the declared task. It is pure
(numpy/cv2), knows nothing about runtimes or batching, and is shared by image requests, v2
requests with encoded images and video pipelines.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from frameserve.errors import ModelExecutionError, NotSupported
from frameserve.processing.detectors import (
    DETECTION_TASKS,
    Metadata,
    check_layout,
    check_verdict,
    decode_detector,
    resolve_labels,
)
from frameserve.processing.faces import decode_face_batch, decode_faces
from frameserve.processing.labels import with_label_file
from frameserve.processing.quality import decode_quality
from frameserve.processing.results import Classes, Mask, Result
from frameserve.processing.script import decode_script_detections
from frameserve.processing.spec import (
    ClassesSpec,
    CtcSpec,
    DetrSpec,
    FaceSsdSpec,
    PostprocessSpec,
    PreprocessSpec,
    QualitySpec,
    ScriptDetectionsSpec,
    SegmentationSpec,
    TextDetectionSpec,
    YoloSpec,
)
from frameserve.processing.text import decode_ctc, decode_text_regions, load_dictionary
from frameserve.processing.transform import INTERPOLATION, Geometry, Preprocessor


@dataclass(frozen=True, slots=True)
class DecodeOptions:
    """Per-request knobs (query parameters of ``/predict``)."""

    score_threshold: float | None = None
    max_results: int | None = None


def decode_mask(outputs: dict[str, np.ndarray], geometry: Geometry, spec: SegmentationSpec) -> Mask:
    """Foreground probability ``[H, W]`` -> a 0/255 mask at the source size (padding cut off)."""
    prob = outputs[spec.output].astype(np.float32)
    prob = prob.reshape(prob.shape[-3:-1] if prob.shape[-1] == 1 else prob.shape[-2:])
    x0, y0, x1, y1 = geometry.content_box
    content = prob[y0:y1, x0:x1]
    w, h = geometry.source_size
    full = cv2.resize(content, (w, h), interpolation=INTERPOLATION[spec.interpolation])
    # 255 where > threshold, straight to uint8 (no second float picture of the source's size);
    # OpenCV takes the scalar, its type stubs list arrays only
    return Mask(cv2.compare(full, spec.threshold, cv2.CMP_GT))  # type: ignore[call-overload]


def decode_classes(
    outputs: dict[str, np.ndarray], spec: ClassesSpec, options: DecodeOptions
) -> Classes:
    scores = outputs[spec.output].reshape(-1).astype(np.float64)
    if len(scores) != len(spec.labels):
        raise ModelExecutionError(
            f"{spec.output}: the model gives {len(scores)} scores, {len(spec.labels)} labels"
        )
    if spec.softmax:
        e = np.exp(scores - scores.max())
        scores = e / e.sum()
    k = min(spec.top_k, options.max_results or spec.top_k)
    order = np.argsort(-scores, kind="stable")[:k]
    if options.score_threshold is not None:
        order = order[scores[order] >= options.score_threshold]
    return Classes([spec.labels[i] for i in order], scores[order])


class ModelProcessing:
    """Pre-processing and task decoding declared in one model's ``model.yaml``."""

    def __init__(
        self,
        preprocess: PreprocessSpec,
        postprocess: PostprocessSpec | None,
        folder: Path,
        fused: bool = False,
        metadata: Metadata | None = None,
        source: str = "model.yaml",
    ) -> None:
        """``metadata``: the model file's metadata properties, read only when a detector takes
        its class names from there; ``source``: where the config came from, for errors."""
        self.preprocess = Preprocessor(preprocess, fused)
        if isinstance(postprocess, ClassesSpec):
            postprocess = with_label_file(postprocess, folder)
        self.postprocess = postprocess
        self._dictionary = (
            load_dictionary(folder / postprocess.dictionary)
            if isinstance(postprocess, CtcSpec)
            else ()
        )
        self.labels: tuple[str, ...] = ()
        if isinstance(postprocess, YoloSpec | DetrSpec):
            self.labels = resolve_labels(postprocess, folder, metadata, source)
            check_verdict(postprocess, self.labels, source)

    @property
    def task(self) -> str:
        return self.postprocess.task if self.postprocess is not None else ""

    def decode(
        self,
        outputs: dict[str, np.ndarray],
        geometry: Geometry,
        options: DecodeOptions = DecodeOptions(),
    ) -> Result:
        """Outputs of one item (batch dimension removed) -> its result in source pixels."""
        spec = self.postprocess
        if isinstance(spec, FaceSsdSpec):
            return decode_faces(
                outputs, geometry, spec, options.score_threshold, options.max_results
            )
        if isinstance(spec, SegmentationSpec):
            return decode_mask(outputs, geometry, spec)
        if isinstance(spec, TextDetectionSpec):
            return decode_text_regions(
                outputs, geometry, spec, options.score_threshold, options.max_results
            )
        if isinstance(spec, CtcSpec):
            return decode_ctc(outputs, spec, self._dictionary)
        if isinstance(spec, ClassesSpec):
            return decode_classes(outputs, spec, options)
        if isinstance(spec, QualitySpec):
            return decode_quality(outputs, geometry, spec)
        if isinstance(spec, ScriptDetectionsSpec):
            return decode_script_detections(
                outputs, geometry, spec, options.score_threshold, options.max_results
            )
        if isinstance(spec, YoloSpec | DetrSpec):
            return decode_detector(
                outputs, geometry, spec, self.labels, options.score_threshold, options.max_results
            )
        raise NotSupported("this model declares no postprocess block: it answers tensors only")

    def decode_batch(
        self,
        outputs: dict[str, np.ndarray],
        geometries: list[Geometry],
        options: DecodeOptions = DecodeOptions(),
    ) -> list[Result]:
        """Outputs of a batch (batch dimension kept), one geometry per item -> each item's
        result, as ``decode`` gives it for that item alone (face detectors decode the batch
        in one pass; other tasks item by item)."""
        spec = self.postprocess
        if isinstance(spec, FaceSsdSpec):
            threshold, most = options.score_threshold, options.max_results
            return [*decode_face_batch(outputs, geometries, spec, threshold, most)]
        return [
            self.decode({name: value[i] for name, value in outputs.items()}, geometry, options)
            for i, geometry in enumerate(geometries)
        ]

    def output_names(self) -> list[str]:
        """The output tensors the decoder reads."""
        spec = self.postprocess
        if isinstance(spec, FaceSsdSpec):
            return [spec.boxes, spec.scores]
        if isinstance(spec, ScriptDetectionsSpec):
            return [spec.boxes, spec.scores] + ([spec.labels] if spec.labels else [])
        if isinstance(spec, DetrSpec):
            return [spec.boxes, spec.logits]
        if isinstance(spec, YoloSpec) and spec.outputs is not None:
            o = spec.outputs
            return [o.num, o.boxes, o.scores, o.classes]
        return [spec.output] if spec is not None and spec.output is not None else []

    def check_outputs(self, shapes: dict[str, tuple[int, ...]], source: str) -> None:
        """Refuse, at load, output shapes the declared decoder cannot read (``-1``: dynamic;
        the batch dimension excluded)."""
        if isinstance(self.postprocess, YoloSpec | DetrSpec):
            check_layout(self.postprocess, shapes, self.labels, source)


__all__ = ["DETECTION_TASKS", "DecodeOptions", "ModelProcessing"]
