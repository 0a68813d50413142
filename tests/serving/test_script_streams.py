"""Script models with per-stream state, in-process: ``ModelVersion`` (scheduler, real Python
backend) gives ``process`` the stream of every row of a batch mixing two streams and an online
request, only the streams' own params, and collects the stages a profiling stream reports.

Requests are submitted in the same loop tick so the scheduler forms one batch of them (the
batcher cannot start before the loop runs it), which is what frames of several streams do.
"""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest

from frameserve.cpu import CpuBudget
from frameserve.errors import InvalidInput, ModelExecutionError
from frameserve.serving.config import load_model_config
from frameserve.serving.model import ModelVersion
from frameserve.serving.types import ONLINE, Admission, InferRequest, InputTensor
from frameserve.tools.example_models import write_model_yaml

T = TypeVar("T")
BUDGET = CpuBudget(2, "test")

SCALER = """
import numpy as np

class Model:
    def setup(self, config):
        self.factors = {}
        self.batches = []

    def configure(self, stream_config):
        factor = stream_config["params"]["factor"]
        if factor < 0:
            raise ValueError(f"factor must be >= 0, got {factor}")
        self.factors[stream_config["stream"]] = factor

    def release(self, stream):
        del self.factors[stream]

    def process(self, batch, streams, profiling=False):
        self.batches.append(list(streams))
        factors = np.array([self.factors.get(s, 1) for s in streams], np.float32)
        out = {"y": batch["x"] * factors[:, None]}
        if profiling:
            return out, {"scale": 0.25, "check": 0.5}
        return out
"""

KWARGS = """
def process(batch, **options):
    process.seen = options
    return {"y": batch["x"]}
"""

BAD_STAGES = """
def process(batch, profiling=False):
    return {"y": batch["x"]}, {"scale": "slow"}
"""


def model(tmp_path: Path, source: str) -> Path:
    folder = tmp_path / "m"
    (folder / "1").mkdir(parents=True)
    (folder / "1" / "model.py").write_text(textwrap.dedent(source))
    write_model_yaml(
        folder,
        {
            "backend": "python",
            "max_batch_size": 8,
            "dynamic_batching": {"max_queue_delay_ms": 50},
            "inputs": [{"name": "x", "datatype": "FP32", "dims": [2]}],
            "outputs": [{"name": "y", "datatype": "FP32", "dims": [2]}],
            "warmup": 0,
        },
    )
    return folder


def with_version(folder: Path, use: Callable[[ModelVersion], Awaitable[T]]) -> T:
    async def run() -> T:
        config = load_model_config(folder / "model.yaml")
        version = await asyncio.to_thread(ModelVersion, "m", 1, config, folder / "1", BUDGET, None)
        try:
            await version.warmup()
            version.start()
            return await asyncio.wait_for(use(version), 60)
        finally:
            await version.close(timeout=10)

    return asyncio.run(run())


def request(rows: int, stream: str | None) -> InferRequest:
    x = np.ones((rows, 2), np.float32)
    admission = ONLINE if stream is None else Admission(stream_id=stream)
    return InferRequest("m", [InputTensor("x", "FP32", x.shape, x)], admission=admission)


def test_one_batch_of_two_streams_and_an_online_request(tmp_path: Path) -> None:
    async def use(mv: ModelVersion) -> tuple[list[Any], dict[str, float], dict[str, float]]:
        assert mv.streams_backend is not None
        await mv.configure_stream("video-0", {"factor": 2})
        await mv.configure_stream("video-1", {"factor": 3}, profiling=True)
        answers = await asyncio.gather(
            mv.infer(request(2, "video-0")),
            mv.infer(request(1, "video-1")),
            mv.infer(request(1, None)),
        )
        profiled = mv.stage_seconds()
        await mv.infer(request(1, "video-0"))  # no profiling stream in this batch
        after = mv.stage_seconds()
        await mv.release_stream("video-1")
        await mv.infer(request(1, "video-1"))  # released: the script's default
        return [a.outputs[0].data.tolist() for a in answers], profiled, after

    folder = model(tmp_path, SCALER)
    (a, b, online), profiled, after = with_version(folder, use)
    assert a == [[2, 2], [2, 2]] and b == [[3, 3]] and online == [[1, 1]]
    assert profiled == {"scale": 0.25, "check": 0.5}
    assert after == profiled


def test_the_batch_the_script_saw(tmp_path: Path) -> None:
    async def use(mv: ModelVersion) -> list[list[str | None]]:
        await mv.configure_stream("s", {"factor": 1})
        await asyncio.gather(mv.infer(request(2, "s")), mv.infer(request(1, None)))
        target = mv.backend._target  # type: ignore[attr-defined]
        return list(target.batches)

    assert with_version(model(tmp_path, SCALER), use) == [["s", "s", None]]


def test_configure_refusing_is_invalid_input_with_the_scripts_message(tmp_path: Path) -> None:
    async def use(mv: ModelVersion) -> None:
        await mv.configure_stream("s", {"factor": -1})

    with pytest.raises(InvalidInput) as caught:
        with_version(model(tmp_path, SCALER), use)
    message = caught.value.message
    assert message.startswith("params: model m refused them (m/1/model.py configure()):")
    assert message.endswith("ValueError: factor must be >= 0, got -1")


def test_keyword_arguments_get_streams_and_profiling(tmp_path: Path) -> None:
    async def use(mv: ModelVersion) -> dict[str, Any]:
        await mv.configure_stream("s", {}, profiling=True)
        await mv.infer(request(1, "s"))
        return dict(mv.backend._target.process.seen)  # type: ignore[attr-defined]

    assert with_version(model(tmp_path, KWARGS), use) == {"streams": ["s"], "profiling": True}


def test_stages_that_are_not_seconds_fail_the_batch(tmp_path: Path) -> None:
    async def use(mv: ModelVersion) -> None:
        await mv.configure_stream("s", {}, profiling=True)
        await mv.infer(request(1, "s"))

    with pytest.raises(ModelExecutionError, match="stages as a dict of stage name -> seconds"):
        with_version(model(tmp_path, BAD_STAGES), use)


def test_stateless_backends_ignore_streams(tmp_path: Path) -> None:
    from frameserve.tools.example_models import matmul_relu

    folder = tmp_path / "mm"
    matmul_relu(folder / "1" / "model.onnx")
    write_model_yaml(folder, {"backend": "onnxruntime", "max_batch_size": 4})

    async def use(mv: ModelVersion) -> dict[str, float]:
        assert mv.streams_backend is None
        await mv.configure_stream("s", {"anything": 1})  # a no-op
        await mv.release_stream("s")
        return mv.stage_seconds()

    async def run() -> dict[str, float]:
        config = load_model_config(folder / "model.yaml")
        mv = await asyncio.to_thread(ModelVersion, "mm", 1, config, folder / "1", BUDGET, None)
        try:
            return await use(mv)
        finally:
            await mv.close(timeout=10)

    assert asyncio.run(run()) == {}


def test_a_script_with_no_stream_calls_is_not_told_of_streams(tmp_path: Path) -> None:
    plain = "def process(batch):\n    return {'y': batch['x']}\n"

    async def use(mv: ModelVersion) -> list[list[float]]:
        assert mv.streams_backend is None  # the scheduler passes it no row ids
        await mv.configure_stream("s", {"x": 1})  # a no-op
        answer = await mv.infer(request(1, "s"))
        return [list(map(float, row)) for row in answer.outputs[0].data]

    assert with_version(model(tmp_path, plain), use) == [[1.0, 1.0]]


def test_a_reloaded_version_is_configured_with_the_running_streams(tmp_path: Path) -> None:
    from frameserve.serving.server import InferenceServer, ServerSettings

    repo = tmp_path / "models"
    repo.mkdir()
    folder = model(tmp_path, SCALER).rename(repo / "m")

    async def main() -> tuple[list[list[float]], dict[str, Any], dict[str, Any]]:
        server = InferenceServer(ServerSettings(repository=repo, budget=BUDGET))
        await server.start()
        try:
            old = server.repository.get("m")
            await old.configure_stream("video-0", {"factor": 2})
            with (folder / "1" / "model.py").open("a") as f:
                f.write("\n# edited: the repository reloads the version\n")
            await server.repository.load("m")
            new = server.repository.get("m")
            assert new is not old
            answer = await new.infer(request(1, "video-0"))
            adopted = dict(new.stream_params)
            await new.release_stream("video-0")
            return answer.outputs[0].data.tolist(), adopted, dict(new.stream_params)
        finally:
            await server.drain()

    rows, adopted, after = asyncio.run(asyncio.wait_for(main(), 60))
    assert rows == [[2.0, 2.0]]  # the new script got the stream's params before its frames
    assert adopted == {"video-0": ({"factor": 2}, False)}
    assert after == {}
