"""Raw runtimes in-process: OpenVINO (f32 and bf16 hints) and ONNX Runtime, on real tensors.

- latency: batch 1, synchronous ``infer``, OpenVINO compiled with the ``LATENCY`` hint; ONNX
  Runtime with one session of ``intra_op_num_threads`` = the core budget;
- throughput: OpenVINO compiled with the ``THROUGHPUT`` hint, an ``AsyncInferQueue`` of its
  ``OPTIMAL_NUMBER_OF_INFER_REQUESTS`` jobs (text-det: 2, at batch 1: concurrency instead of
  batching, its tensors are large); ONNX Runtime with one session of 1 thread per core, each
  driven by its own thread (the same shape as OpenVINO's one stream per core).

The graph is what the server compiles: frontend extensions, ``rewrite_batch_reshapes``,
optionally ``fuse_preprocessing``, then a dynamic batch dimension.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort
import openvino as ov
from inputs import ModelInputs
from timing import Budget, rate_windows, sample_ms, summary_ms, threads_window

from frameserve.backends.openvino_graph import (
    FRONTEND_EXTENSIONS,
    fuse_preprocessing,
    rewrite_batch_reshapes,
)

BATCHES = (1, 2, 4, 8)
PRECISIONS = ("f32", "bf16")
CONCURRENT_ONLY = {"text-det": 2}  # model -> in-flight batch-1 requests instead of batching


@dataclass(frozen=True)
class RuntimeSettings:
    cores: int
    budget: Budget  # small models
    large_budget: Budget  # text-det: fewer, longer samples
    rounds: int = 1  # the runtime part measures every model this many times, round-robin


class OpenVinoModel:
    """Reads a zoo model as the server does and compiles it with explicit properties."""

    def __init__(self, model: ModelInputs, cores: int) -> None:
        self.inputs = model
        self.cores = cores
        self.core = ov.Core()
        for name in model.config.openvino.frontend_extensions:
            for extension in FRONTEND_EXTENSIONS[name]():
                self.core.add_extension(extension)

    def read(self, fused: bool = False) -> ov.Model:
        cfg = self.inputs.config
        model = self.core.read_model(str(self.inputs.model_file()))
        if cfg.openvino.rewrite_batch_reshapes:
            rewrite_batch_reshapes(model)
        if fused:
            fuse_preprocessing(model, cfg.preprocess, self.inputs.folder)
        shapes = {}
        for port in model.inputs:
            ps = port.get_partial_shape()
            if ps[0].is_static:
                shapes[port.get_any_name()] = ov.PartialShape([-1, *list(ps)[1:]])
        if shapes:
            model.reshape(shapes)
        return model

    def compile(self, hint: str, precision: str, fused: bool = False) -> ov.CompiledModel:
        props = {
            "PERFORMANCE_HINT": hint,
            "INFERENCE_NUM_THREADS": str(self.cores),
            "INFERENCE_PRECISION_HINT": precision,
        }
        return self.core.compile_model(self.read(fused), "CPU", props)


def compiled_facts(compiled: ov.CompiledModel) -> dict:
    """What OpenVINO actually chose: precision, streams, threads, requests."""
    return {
        "precision_used": compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name(),
        "streams": int(compiled.get_property("NUM_STREAMS")),
        "threads": int(compiled.get_property("INFERENCE_NUM_THREADS")),
        "optimal_requests": int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")),
    }


def outputs_of(request: ov.InferRequest) -> list[np.ndarray]:
    return [t.data.copy() for t in request.output_tensors]


def max_abs_diff(a: list[np.ndarray], b: list[np.ndarray]) -> dict:
    """Largest |a - b| over all outputs, and the largest |a| it compares with."""
    diff = max(float(np.abs(x.astype(np.float64) - y).max()) for x, y in zip(a, b, strict=True))
    ref = max(float(np.abs(x).max()) for x in a)
    return {"max_abs": diff, "max_ref": ref}


def _async_window(queue: ov.AsyncInferQueue, feed: np.ndarray, batch: int, seconds: float):
    t0 = time.perf_counter()
    count = 0
    while time.perf_counter() - t0 < seconds:
        queue.start_async({0: feed}, share_inputs=True)  # blocks while every job is busy
        count += 1
    queue.wait_all()
    return count * batch, time.perf_counter() - t0


def batches_for(name: str) -> tuple[int, ...]:
    return (1,) if name in CONCURRENT_ONLY else BATCHES


def _ov_latency(ovm: OpenVinoModel, precision: str, x1: np.ndarray, budget: Budget) -> dict:
    """Batch-1 synchronous latency (LATENCY hint) and the outputs of the last run."""
    compiled = ovm.compile("LATENCY", precision)
    request = compiled.create_infer_request()
    latency = summary_ms(sample_ms(lambda: request.infer({0: x1}, share_inputs=True), budget))
    return {"latency": {**latency, **compiled_facts(compiled)}, "outputs": outputs_of(request)}


def _ov_throughput(ovm: OpenVinoModel, precision: str, budget: Budget) -> dict:
    """Images/s per batch size (THROUGHPUT hint, an AsyncInferQueue)."""
    model = ovm.inputs
    compiled = ovm.compile("THROUGHPUT", precision)
    jobs = CONCURRENT_ONLY.get(model.name, compiled_facts(compiled)["optimal_requests"])
    queue = ov.AsyncInferQueue(compiled, jobs)
    rates = {}
    for batch in batches_for(model.name):
        feed = model.batch(batch)
        rates[batch] = rate_windows(
            lambda s, f=feed, b=batch: _async_window(queue, f, b, s), budget
        )
    return {"jobs": jobs, **compiled_facts(compiled), "per_batch": rates}


def measure_openvino(model: ModelInputs, settings: RuntimeSettings, log) -> dict:
    """Latency (LATENCY hint) and throughput per batch (THROUGHPUT hint), per precision."""
    budget = settings.large_budget if model.name in CONCURRENT_ONLY else settings.budget
    ovm = OpenVinoModel(model, settings.cores)
    x1 = model.batch(1)
    result: dict = {"input_shape": list(x1.shape)}
    for precision in PRECISIONS:
        entry = _ov_latency(ovm, precision, x1, budget)
        entry["throughput"] = _ov_throughput(ovm, precision, budget)
        result[precision] = entry
        log(
            f"  OpenVINO {precision} (used {entry['latency']['precision_used']}): "
            f"p50 {entry['latency']['p50_ms']:.2f} ms, "
            f"best {best_rate(entry['throughput']['per_batch'])[1]:.1f} img/s"
        )
    result["bf16_vs_f32"] = max_abs_diff(result["f32"]["outputs"], result["bf16"]["outputs"])
    return result


def best_rate(rates: dict) -> tuple[int, float]:
    """(batch, images/s) of the fastest batch size."""
    batch = max(rates, key=lambda b: rates[b]["per_s"])
    return batch, rates[batch]["per_s"]


def ort_session(path: str, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def _ort_latency(path: str, threads: int, x1: np.ndarray, budget: Budget) -> dict:
    session = ort_session(path, threads)
    name = session.get_inputs()[0].name
    latency = summary_ms(sample_ms(lambda: session.run(None, {name: x1}), budget))
    outputs = [np.asarray(o) for o in session.run(None, {name: x1})]
    return {"latency": {**latency, "intra_op_num_threads": threads}, "outputs": outputs}


def measure_onnxruntime(model: ModelInputs, settings: RuntimeSettings, log) -> dict:
    """Latency: one session of ``cores`` threads; throughput: ``cores`` 1-thread sessions."""
    budget = settings.large_budget if model.name in CONCURRENT_ONLY else settings.budget
    path = str(model.model_file())
    result = _ort_latency(path, settings.cores, model.batch(1), budget)
    sessions = [ort_session(path, 1) for _ in range(settings.cores)]
    name = sessions[0].get_inputs()[0].name
    rates = {}
    for batch in batches_for(model.name):
        feed = {name: model.batch(batch)}
        workers = [lambda s=s, f=feed: s.run(None, f) for s in sessions]
        rates[batch] = rate_windows(
            lambda sec, w=workers, b=batch: threads_window(w, sec, b), budget
        )
    p50 = result["latency"]["p50_ms"]
    log(f"  ONNX Runtime: p50 {p50:.2f} ms, best {best_rate(rates)[1]:.1f} img/s")
    result["throughput"] = {
        "sessions": len(sessions),
        "intra_op_num_threads": 1,
        "per_batch": rates,
    }
    return {"version": ort.__version__, **result}


def _merge_latency(rounds: list[dict]) -> dict:
    """The median of the rounds' medians; each round's median kept to show the spread."""
    p50s = [r["p50_ms"] for r in rounds]
    return {
        **rounds[0],
        "n": sum(r["n"] for r in rounds),
        "p50_ms": statistics.median(p50s),
        "p90_ms": statistics.median(r["p90_ms"] for r in rounds),
        "round_p50_ms": [round(p, 3) for p in p50s],
    }


def _merge_throughput(rounds: list[dict]) -> dict:
    per_batch = {}
    for batch in rounds[0]["per_batch"]:
        windows = [w for r in rounds for w in r["per_batch"][batch]["windows"]]
        per_batch[batch] = {"per_s": statistics.median(windows), "windows": windows}
    return {**rounds[0], "per_batch": per_batch}


def merge_rounds(rounds: list[dict]) -> dict:
    """One model's entries from several rounds -> one entry of medians (outputs: round 1)."""
    merged = {**rounds[0], "rounds": len(rounds)}
    merged["other_cores"] = round(statistics.mean(r.get("other_cores", 0.0) for r in rounds), 2)
    ov = {**rounds[0]["openvino"]}
    for precision in PRECISIONS:
        ov[precision] = {
            "latency": _merge_latency([r["openvino"][precision]["latency"] for r in rounds]),
            "throughput": _merge_throughput(
                [r["openvino"][precision]["throughput"] for r in rounds]
            ),
        }
    merged["openvino"] = ov
    if "onnxruntime" in rounds[0]:
        merged["onnxruntime"] = {
            **rounds[0]["onnxruntime"],
            "latency": _merge_latency([r["onnxruntime"]["latency"] for r in rounds]),
            "throughput": _merge_throughput([r["onnxruntime"]["throughput"] for r in rounds]),
        }
    return merged
