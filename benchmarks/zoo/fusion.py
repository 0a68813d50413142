"""Declared pre-processing in numpy/cv2 vs fused into the OpenVINO graph, per image.

- plain: ``Preprocessor(spec)([image])`` (resize, colour order, normalise, layout, float32),
  then ``infer`` of the float tensor;
- fused: ``Preprocessor(spec).resize_image(image)`` and ``np.stack`` (uint8 NHWC RGB), then
  ``infer`` through the graph with ``fuse_preprocessing`` (PrePostProcessor does the rest).

Both compiled with the LATENCY hint and f32, the two paths alternate image by image so that
drift on a shared machine hits both alike; the outputs of both are compared.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
from inputs import ModelInputs, source_images
from runtimes import OpenVinoModel, RuntimeSettings, compiled_facts, max_abs_diff, outputs_of

FUSED_MODELS = ("faces", "person-mask", "text-det")


def _median(values: list[float]) -> float:
    return statistics.median(values) * 1000


def measure_fusion(model: ModelInputs, settings: RuntimeSettings, log) -> dict:
    big = model.name == "text-det"
    budget = settings.large_budget if big else settings.budget
    ovm = OpenVinoModel(model, settings.cores)
    plain, fused = ovm.compile("LATENCY", "f32"), ovm.compile("LATENCY", "f32", fused=True)
    plain_req, fused_req = plain.create_infer_request(), fused.create_infer_request()
    pre = model.preprocessor
    image = source_images(model.name)[0]

    def run_plain() -> tuple[float, float]:
        t0 = time.perf_counter()
        tensor, _ = pre([image])
        t1 = time.perf_counter()
        plain_req.infer({0: tensor}, share_inputs=True)
        return t1 - t0, time.perf_counter() - t1

    def run_fused() -> tuple[float, float]:
        t0 = time.perf_counter()
        resized, _ = pre.resize_image(image)
        tensor = np.stack([resized])
        t1 = time.perf_counter()
        fused_req.infer({0: tensor}, share_inputs=True)
        return t1 - t0, time.perf_counter() - t1

    for _ in range(budget.warmup):
        run_plain()
        run_fused()
    times: dict[str, list[tuple[float, float]]] = {"plain": [], "fused": []}
    deadline = time.perf_counter() + 2 * budget.seconds
    while len(times["plain"]) < budget.max_runs and (
        len(times["plain"]) < budget.min_runs or time.perf_counter() < deadline
    ):
        times["plain"].append(run_plain())
        times["fused"].append(run_fused())
    result: dict = {"image": list(image.shape), "runs": len(times["plain"])}
    for path, samples in times.items():
        result[path] = {
            "pre_ms": _median([p for p, _ in samples]),
            "infer_ms": _median([i for _, i in samples]),
            "total_ms": _median([p + i for p, i in samples]),
        }
    result["plain"]["tensor"] = f"{list(pre([image])[0].shape)} {pre.dtype.__name__}"
    result["fused"]["tensor"] = f"{[1, *pre.resize_image(image)[0].shape]} uint8"
    result["precision_used"] = compiled_facts(fused)["precision_used"]
    result["outputs_diff"] = max_abs_diff(outputs_of(plain_req), outputs_of(fused_req))
    result["speedup"] = result["plain"]["total_ms"] / result["fused"]["total_ms"]
    log(
        f"  fusion: plain {result['plain']['total_ms']:.2f} ms, fused "
        f"{result['fused']['total_ms']:.2f} ms, max |diff| {result['outputs_diff']['max_abs']:.3g}"
    )
    return result
