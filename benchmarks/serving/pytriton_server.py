"""Serve one OpenVINO model through Triton with ``nvidia-pytriton`` (the comparison server).

Runs inside ``benchmarks/serving/.venv-pytriton`` (PyTriton 0.7 needs numpy<2), started and
stopped by ``run.py``; it imports nothing from frameserve. The model is compiled exactly as
frameserve compiles it (same hint, streams, threads and precision) and bound as a ``@batch``
callable with one instance per infer request, behind Triton's dynamic batcher.

SIGTERM stops Triton cleanly: PyTriton's ``serve()`` only reacts to KeyboardInterrupt, so the
handler raises one in the main thread.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys

import numpy as np
import openvino as ov
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model-file", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--max-batch-size", type=int, required=True)
    p.add_argument("--queue-delay-us", type=int, required=True)
    p.add_argument("--preferred", type=int, nargs="*", default=[])
    p.add_argument("--instances", type=int, default=2)
    p.add_argument("--threads", type=int, default=2, help="INFERENCE_NUM_THREADS in total")
    p.add_argument("--precision", default="f32")
    p.add_argument("--http-port", type=int, required=True)
    p.add_argument("--grpc-port", type=int, required=True)
    p.add_argument("--http-threads", type=int, default=2)
    return p.parse_args(argv)


def compile_model(args: argparse.Namespace) -> ov.CompiledModel:
    core = ov.Core()
    model = core.read_model(args.model_file)
    model.reshape({p.get_any_name(): _dynamic_batch(p) for p in model.inputs})
    props = {
        "PERFORMANCE_HINT": "THROUGHPUT",
        "NUM_STREAMS": str(args.instances),
        "INFERENCE_NUM_THREADS": str(args.threads),
        "INFERENCE_PRECISION_HINT": args.precision,
    }
    return core.compile_model(model, "CPU", props)


def _dynamic_batch(port: ov.Output) -> ov.PartialShape:
    shape = port.get_partial_shape()
    return ov.PartialShape([ov.Dimension(-1)] + [shape[i] for i in range(1, len(shape))])


def make_instance(compiled: ov.CompiledModel, output_names: list[str]):
    """One model instance: its own infer request, called from its own PyTriton thread."""
    request = compiled.create_infer_request()

    @batch
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        request.infer(inputs, share_inputs=True)
        return {n: request.get_output_tensor(i).data.copy() for i, n in enumerate(output_names)}

    return infer


def _tensor(port: ov.Output) -> Tensor:
    shape = port.get_partial_shape()
    dims = tuple(shape[i].get_length() for i in range(1, len(shape)))
    return Tensor(name=port.get_any_name(), dtype=np.float32, shape=dims)


def triton_config(args: argparse.Namespace) -> TritonConfig:
    return TritonConfig(
        http_address="127.0.0.1",
        http_port=args.http_port,
        grpc_address="127.0.0.1",
        grpc_port=args.grpc_port,
        http_thread_count=args.http_threads,
        allow_metrics=False,
        exit_timeout_secs=5,
        log_verbose=0,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    compiled = compile_model(args)
    output_names = [o.get_any_name() for o in compiled.outputs]
    config = ModelConfig(
        max_batch_size=args.max_batch_size,
        batcher=DynamicBatcher(
            max_queue_delay_microseconds=args.queue_delay_us,
            preferred_batch_size=args.preferred or None,
        ),
    )
    # restricted_endpoints=[]: 0.7.0 otherwise guards statistics/repository behind a token,
    # and perf_analyzer reads /v2/models/{m}/stats without one.
    security = TritonSecurityConfig(restricted_endpoints=[])
    signal.signal(signal.SIGTERM, _raise_interrupt)
    with Triton(config=triton_config(args), security_config=security) as triton:
        triton.bind(
            model_name=args.name,
            infer_func=[make_instance(compiled, output_names) for _ in range(args.instances)],
            inputs=[_tensor(p) for p in compiled.inputs],
            outputs=[_tensor(p) for p in compiled.outputs],
            config=config,
            strict=False,
        )
        triton.serve()
    return 0


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
