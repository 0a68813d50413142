"""Image requests: decoded image -> declared pre-processing -> scheduler -> task result.

``Predictor`` runs a model with declared processing, or a model pipeline, on RGB images. The
CPU-heavy steps (pre-processing, decoding) run on a pool sized from the core budget, never on
the event loop; inference goes through each model's own scheduler, so image requests batch
with v2 requests and video frames. Every step is timed for the response and the metrics.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import orjson

from frameserve.datatypes import from_numpy
from frameserve.errors import InvalidInput, ModelExecutionError, PayloadTooLarge
from frameserve.processing.image import decode_image
from frameserve.processing.results import Classes, Detections, Result, Text, Texts
from frameserve.processing.tasks import DecodeOptions
from frameserve.processing.text import crop_region
from frameserve.processing.transform import Geometry
from frameserve.serving.model import ModelVersion
from frameserve.serving.pipeline import PipelineConfig
from frameserve.serving.types import (
    ONLINE,
    Admission,
    InferRequest,
    InferResponse,
    InputTensor,
    OutputTensor,
)

if TYPE_CHECKING:
    from frameserve.serving.tracing import RequestTrace

T = TypeVar("T")
STEPS = ("decode", "preprocess", "infer", "postprocess")


@dataclass(slots=True)
class Timings:
    """Seconds spent per step of one request (summed over the models of a pipeline), and
    the request's trace, where each step but ``infer`` becomes a span (the scheduler's queue,
    batch and inference spans cover that one)."""

    seconds: dict[str, float] = field(default_factory=dict)
    trace: RequestTrace | None = None

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        start = time.perf_counter_ns()
        try:
            yield
        finally:
            end = time.perf_counter_ns()
            self.seconds[name] = self.seconds.get(name, 0.0) + (end - start) / 1e9
            if self.trace is not None and name != "infer":
                self.trace.record_step(name, start, end)

    def server_timing(self) -> str:
        """The ``Server-Timing`` header value (milliseconds)."""
        return ", ".join(f"{k};dur={v * 1000:.2f}" for k, v in self.seconds.items())


def _regions(result: Result, where: str) -> Texts:
    """The first step's result as quadrilaterals to crop."""
    if isinstance(result, Texts):
        return result
    if isinstance(result, Detections):
        b = result.boxes
        quads = np.stack([b[:, [0, 1]], b[:, [2, 1]], b[:, [2, 3]], b[:, [0, 3]]], axis=1)
        return Texts(quads, result.scores)
    raise InvalidInput(f"{where}: yields {type(result).__name__}, not regions to crop")


async def infer_tensor(
    mv: ModelVersion,
    tensor: np.ndarray,
    admission: Admission | None = None,
    trace: RequestTrace | None = None,
) -> dict[str, np.ndarray]:
    """A pre-processed batch ``[N, ...]`` through the model's scheduler -> outputs ``[N, ...]``.

    ``admission`` places the request among other sources' (stream, live dropping, background).
    """
    assert mv.processing is not None
    name = mv.processing.preprocess.spec.input or mv.inputs[0].name
    if mv.max_batch_size == 0:
        tensor = tensor[0]
    request = InferRequest(
        mv.name,
        [InputTensor(name, from_numpy(tensor.dtype), tuple(tensor.shape), tensor)],
        model_version=str(mv.version),
        outputs=mv.processing.output_names(),
        admission=admission or ONLINE,
        trace=trace,
    )
    response = await mv.infer(request)
    outputs = {o.name: o.data for o in response.outputs}
    if mv.max_batch_size == 0:
        outputs = {k: v[None] for k, v in outputs.items()}
    return outputs


class Predictor:
    """Runs models with declared processing and model pipelines on images."""

    def __init__(
        self,
        get_version: Callable[[str, str], ModelVersion],
        workers: int,
        max_elements: int | None = None,
        max_images: int | None = None,
    ) -> None:
        """``max_elements``: the largest pre-processed tensor (413 above, checked before it is
        made); ``max_images``: the most encoded images one request may carry (413 above)."""
        self._get = get_version
        self._max_elements = max_elements
        self._max_images = max_images
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="processing")

    async def _off_loop(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def processing_version(self, name: str, version: str = "") -> ModelVersion:
        """The version, refused with a clear 400 when it declares no processing."""
        mv = self._get(name, version)
        if mv.processing is None or mv.processing.postprocess is None:
            missing = "preprocess" if mv.processing is None else "postprocess"
            raise InvalidInput(
                f"model {name!r} declares no {missing} block in its model.yaml, so it cannot "
                "take images; send tensors to /v2/models/{name}/infer or declare its processing"
            )
        return mv

    async def tensors(
        self,
        mv: ModelVersion,
        images: list[np.ndarray],
        timings: Timings,
        admission: Admission | None = None,
    ) -> tuple[dict[str, np.ndarray], list[Geometry]]:
        """Pre-process images that share a tensor size and infer them as one batch."""
        assert mv.processing is not None
        with timings.step("preprocess"):
            tensor, geometries = await self._off_loop(
                mv.processing.preprocess, images, self._max_elements
            )
        with timings.step("infer"):
            outputs = await infer_tensor(mv, tensor, admission, timings.trace)
        return outputs, geometries

    async def run_model(
        self,
        mv: ModelVersion,
        images: list[np.ndarray],
        options: DecodeOptions,
        timings: Timings,
        admission: Admission | None = None,
    ) -> list[Result]:
        """Results for each image; batches of at most ``max_batch_size``, in order."""
        assert mv.processing is not None
        processing = mv.processing
        size = max(1, mv.max_batch_size)
        results: list[Result] = []
        for start in range(0, len(images), size):
            chunk = images[start : start + size]
            outputs, geometries = await self.tensors(mv, chunk, timings, admission)

            def decode(
                o: dict[str, np.ndarray] = outputs, g: list[Geometry] = geometries
            ) -> list[Result]:
                return [
                    processing.decode({k: v[i] for k, v in o.items()}, g[i], options)
                    for i in range(len(g))
                ]

            with timings.step("postprocess"):
                results.extend(await self._off_loop(decode))
        return results

    def check_image_count(self, count: int, where: str) -> None:
        """Refuse more encoded images in one request than ``max_images`` (413)."""
        if self._max_images is not None and count > self._max_images:
            raise PayloadTooLarge(
                f"{where}: {count} encoded images in one request, over the limit of "
                f"{self._max_images} (max_images, --max-images)"
            )

    async def decode(
        self, data: bytes, max_pixels: int, content_type: str | None, source: str, timings: Timings
    ) -> np.ndarray:
        """Encoded image bytes -> HxWx3 uint8 RGB, off the loop."""
        with timings.step("decode"):
            return await self._off_loop(
                lambda: decode_image(
                    data, max_pixels=max_pixels, content_type=content_type, source=source
                )
            )

    async def expand_images(
        self, mv: ModelVersion, request: InferRequest, max_pixels: int
    ) -> InferRequest:
        """A v2 request whose image input carries encoded images (BYTES) -> the model's tensor.

        As OVMS does: each element of the BYTES input is one encoded image; the declared
        pre-processing makes the batch. The outputs stay the model's raw tensors.
        """
        assert mv.processing is not None
        name = mv.processing.preprocess.spec.input or mv.inputs[0].name
        timings = Timings(trace=request.trace)
        for i, t in enumerate(request.inputs):
            if t.name != name or t.datatype != "BYTES":
                continue
            items = list(t.data.reshape(-1))
            self.check_image_count(len(items), f"inputs[{i}]")
            if mv.max_batch_size == 0 and len(items) != 1:
                raise InvalidInput(
                    f"inputs[{i}]: model {mv.name} takes one image a request, got {len(items)}"
                )
            if not 1 <= len(items) <= max(1, mv.max_batch_size):
                raise InvalidInput(
                    f"inputs[{i}].shape: expected 1..{mv.max_batch_size} encoded images, "
                    f"got {len(items)}"
                )
            images = [
                await self.decode(bytes(b), max_pixels, None, f"inputs[{i}][{k}]", timings)
                for k, b in enumerate(items)
            ]
            with timings.step("preprocess"):
                tensor, _ = await self._off_loop(
                    mv.processing.preprocess, images, self._max_elements
                )
            if mv.max_batch_size == 0:
                tensor = tensor[0]
            request.inputs[i] = InputTensor(name, from_numpy(tensor.dtype), tensor.shape, tensor)
        return request

    async def infer_pipeline(
        self, name: str, config: PipelineConfig, request: InferRequest, max_pixels: int
    ) -> InferResponse:
        """v2 ``infer`` on a pipeline: BYTES ``image`` in, one JSON document each out."""
        if len(request.inputs) != 1 or request.inputs[0].datatype != "BYTES":
            got = [(t.name, t.datatype) for t in request.inputs]
            raise InvalidInput(
                f"inputs: pipeline {name} takes one BYTES input 'image' of encoded images, "
                f"got {got}"
            )
        docs = []
        self.check_image_count(request.inputs[0].data.size, "inputs[0]")
        for k, data in enumerate(request.inputs[0].data.reshape(-1)):
            timings = Timings(trace=request.trace)
            image = await self.decode(bytes(data), max_pixels, None, f"inputs[0][{k}]", timings)
            result = await self.run_pipeline(name, config, image, DecodeOptions(), timings)
            docs.append(orjson.dumps(result.to_json()))
        out = np.array(docs, dtype=object)
        tensor = OutputTensor("result", "BYTES", out.shape, out)
        return InferResponse(name, "1", request.id, [tensor])

    async def predict(
        self, name: str, image: np.ndarray, options: DecodeOptions, timings: Timings
    ) -> Result:
        mv = self.processing_version(name)
        return (await self.run_model(mv, [image], options, timings))[0]

    async def run_pipeline(
        self,
        name: str,
        config: PipelineConfig,
        image: np.ndarray,
        options: DecodeOptions,
        timings: Timings,
        admission: Admission | None = None,
    ) -> Result:
        """Run the steps of a model pipeline on one image."""
        first = config.steps[0]
        assert first.model is not None
        mv = self.processing_version(first.model)
        found = (await self.run_model(mv, [image], DecodeOptions(), timings, admission))[0]
        if len(config.steps) == 1:
            return found
        regions = _regions(found, f"pipeline {name}: steps[0] ({first.model})")
        with timings.step("postprocess"):
            crops = await self._off_loop(lambda: [crop_region(image, p) for p in regions.polygons])
        texts: list[str] = [""] * len(crops)
        scores = np.asarray(regions.scores, dtype=np.float64).copy()
        for i, step in enumerate(config.steps[2:], start=2):
            assert step.model is not None
            mv = self.processing_version(step.model)
            # Widest last, in batches: how PP-OCR groups crops (and pads each batch's width).
            order = sorted(range(len(crops)), key=lambda j: crops[j].shape[1] / crops[j].shape[0])
            results = await self.run_model(
                mv, [crops[j] for j in order], DecodeOptions(), timings, admission
            )
            for j, result in zip(order, results, strict=True):
                if isinstance(result, Text):
                    texts[j], scores[j] = result.text, result.score
                elif isinstance(result, Classes) and step.rotate is not None:
                    top, score = result.labels[0], float(result.scores[0])
                    if top == step.rotate.label and score > step.rotate.min_score:
                        crops[j] = np.ascontiguousarray(crops[j][::-1, ::-1])
                elif not isinstance(result, Classes):
                    raise ModelExecutionError(
                        f"pipeline {name}: steps[{i}] ({step.model}) gave "
                        f"{type(result).__name__}; crop steps take text or classes"
                    )
        out = Texts(regions.polygons, scores, texts)
        spec = config.output.texts
        floor = options.score_threshold
        if floor is None:
            floor = spec.min_score if spec else 0.0
        drop_empty = spec.drop_empty if spec else False
        keep = [
            k
            for k in range(len(out))
            if scores[k] >= floor and not (drop_empty and not texts[k].strip())
        ]
        kept = Texts(out.polygons[keep], out.scores[keep], [texts[k] for k in keep])
        if options.max_results is not None:
            kept = Texts(
                kept.polygons[: options.max_results],
                kept.scores[: options.max_results],
                kept.texts[: options.max_results],
            )
        return kept
