"""The ceiling: raw OpenVINO throughput in-process, no server, no serialisation, no network.

``python ceiling.py --model-file F --batch B --seconds S --properties JSON`` prints one JSON
object. ``run.py`` runs it as a child process so the runtime's threads are gone before the
servers are measured and its CPU time is accounted to nobody else.

The model gets a dynamic batch dimension (as both servers give it), is compiled with the
shared properties, and an ``AsyncInferQueue`` with one job per optimal infer request keeps
every stream busy on the same preallocated batch.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import openvino as ov


def compile_model(model_file: str, properties: dict[str, str]) -> ov.CompiledModel:
    core = ov.Core()
    model = core.read_model(model_file)
    shapes = {}
    for port in model.inputs:
        ps = port.get_partial_shape()
        shapes[port.get_any_name()] = ov.PartialShape(
            [ov.Dimension(-1)] + [ps[i] for i in range(1, len(ps))]
        )
    model.reshape(shapes)
    return core.compile_model(model, "CPU", properties)


def make_batch(compiled: ov.CompiledModel, batch: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    inputs = {}
    for port in compiled.inputs:
        ps = port.get_partial_shape()
        dims = [batch] + [ps[i].get_length() for i in range(1, len(ps))]
        inputs[port.get_any_name()] = rng.random(dims, dtype=np.float32)
    return inputs


def measure(compiled: ov.CompiledModel, batch: int, seconds: float) -> dict[str, float]:
    """Inferences (frames) per second with every infer request kept busy for ``seconds``."""
    jobs = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
    queue = ov.AsyncInferQueue(compiled, jobs)
    inputs = make_batch(compiled, batch)
    for _ in range(2 * jobs):  # warm-up: first inferences allocate and pick kernels
        queue.start_async(inputs, share_inputs=True)
    queue.wait_all()
    done = 0
    cpu0 = time.process_time()
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        queue.start_async(inputs, share_inputs=True)  # blocks until a request is free
        done += 1
    queue.wait_all()
    elapsed = time.perf_counter() - start
    return {
        "infer_per_sec": done * batch / elapsed,
        "batches_per_sec": done / elapsed,
        "jobs": jobs,
        "seconds": elapsed,
        "cpu_seconds": time.process_time() - cpu0,
    }


def effective_properties(compiled: ov.CompiledModel) -> dict[str, str]:
    names = ("NUM_STREAMS", "INFERENCE_NUM_THREADS", "INFERENCE_PRECISION_HINT", "PERFORMANCE_HINT")
    values = {n: compiled.get_property(n) for n in names}
    # ov.Type (the precision) prints as "<Type: 'float32'>"; its to_string() is "f32"
    return {n: v.to_string() if hasattr(v, "to_string") else str(v) for n, v in values.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model-file", required=True)
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--properties", required=True, help="OpenVINO compile properties as JSON")
    args = p.parse_args(argv)
    compiled = compile_model(args.model_file, json.loads(args.properties))
    result = measure(compiled, args.batch, args.seconds)
    result["batch"] = args.batch
    result["properties"] = effective_properties(compiled)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
