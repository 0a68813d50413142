"""The two benchmark models and how every side under test is configured for them.

One ``ServingSetup`` is the single source of the settings that must match across the three
sides (raw OpenVINO, frameserve, PyTriton): precision, streams/instances, threads, maximum batch
size and queue delay. The core budget is the machine's 2 cores, shared with the load generator.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from frameserve.tools.example_models import conv_net, matmul_relu, write_model_yaml


@dataclass(frozen=True)
class ServingSetup:
    """Runtime settings shared by raw OpenVINO, frameserve and PyTriton."""

    precision: str = "f32"  # INFERENCE_PRECISION_HINT, pinned: this CPU would pick bf16
    instances: int = 2  # OpenVINO streams = infer requests = model instances
    threads_per_instance: int = 1  # 2 streams x 1 thread = the 2-core budget

    @property
    def total_threads(self) -> int:
        return self.instances * self.threads_per_instance

    def openvino_properties(self) -> dict[str, str]:
        """The compile properties all three sides use (frameserve derives the same set)."""
        return {
            "PERFORMANCE_HINT": "THROUGHPUT",
            "NUM_STREAMS": str(self.instances),
            "INFERENCE_NUM_THREADS": str(self.total_threads),
            "INFERENCE_PRECISION_HINT": self.precision,
        }


@dataclass(frozen=True)
class BenchModel:
    """A model under test and its batching settings (identical on both servers)."""

    name: str
    build: Callable[[Path], Path]
    input_name: str
    input_dims: tuple[int, ...]
    max_batch_size: int
    max_queue_delay_ms: float
    preferred_batch_sizes: tuple[int, ...]
    description: str
    # grpc-shm: gRPC with the tensors in system shared memory, for inputs large enough that
    # moving them through a socket is a cost of its own
    protocols: tuple[str, ...] = ("grpc", "http")

    def model_file(self, repository: Path) -> Path:
        return repository / self.name / "1" / "model.onnx"


MODELS: tuple[BenchModel, ...] = (
    BenchModel(
        name="conv_net",
        build=conv_net,
        input_name="images",
        input_dims=(3, 224, 224),
        max_batch_size=8,
        max_queue_delay_ms=2.0,
        preferred_batch_sizes=(4, 8),
        description="3 convs + pool + FC, ~1.4 GFLOP/frame, 602 KB input (compute-bound)",
        protocols=("grpc", "http", "grpc-shm"),
    ),
    BenchModel(
        name="matmul_relu",
        build=matmul_relu,
        input_name="x",
        input_dims=(64,),
        max_batch_size=32,
        max_queue_delay_ms=0.5,
        preferred_batch_sizes=(),
        description="64x64 MatMul + ReLU, 256 B input (per-request overhead-bound)",
    ),
)


def frameserve_model_yaml(model: BenchModel, setup: ServingSetup) -> dict:
    """The model.yaml frameserve serves ``model`` with."""
    batching: dict = {"max_queue_delay_ms": model.max_queue_delay_ms}
    if model.preferred_batch_sizes:
        batching["preferred_batch_sizes"] = list(model.preferred_batch_sizes)
    return {
        "backend": "openvino",
        "max_batch_size": model.max_batch_size,
        "dynamic_batching": batching,
        "instances": setup.instances,
        "threads": setup.threads_per_instance,
        "performance_hint": "THROUGHPUT",
        "precision": setup.precision,
        "warmup": 1,
    }


def build_repository(root: Path, model: BenchModel, setup: ServingSetup) -> Path:
    """A frameserve repository holding only ``model``; returns the ONNX file."""
    path = model.build(model.model_file(root))
    write_model_yaml(root / model.name, frameserve_model_yaml(model, setup))
    return path
