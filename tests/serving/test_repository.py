"""InferenceServer and ModelRepository in-process: real models on real runtimes, no network.

Every test runs its own event loop (``asyncio.run``); waits are bounded so a hang fails.
Python-backend models keep most lifecycle tests fast; ONNX Runtime and OpenVINO models show
that the same paths work with the compiled runtimes.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from frameserve.cpu import CpuBudget
from frameserve.errors import (
    ConfigError,
    InvalidInput,
    NotFound,
    NotSupported,
    Unavailable,
)
from frameserve.serving.server import InferenceServer, ServerSettings
from frameserve.serving.types import InferRequest, InputTensor
from frameserve.tools.example_models import matmul_relu, write_model_yaml

from models import make_model, onnx_file, python_file, simple_add_sub

WAIT = 10.0
BUDGET = CpuBudget(2, "test")

# y = x + offset + 1000 * version, so a reply says which version and config answered.
# Every call is appended to parameters.log (when given) for the warm-up tests.
ECHO = """
import time

def setup(config):
    global CFG
    CFG = config
    time.sleep(float(CFG["parameters"].get("setup_delay_s", 0)))

def warmup():
    _log("warmup")

def process(batch):
    x = batch["x"]
    _log(f"process {list(x.shape)} {x.reshape(-1).tolist()}")
    return {"y": x + int(CFG["parameters"].get("offset", 0)) + 1000 * CFG["version"]}

def _log(line):
    path = CFG["parameters"].get("log")
    if path:
        with open(path, "a") as f:
            f.write(line + "\\n")
"""

ECHO_IO = {
    "max_batch_size": 8,
    "inputs": [{"name": "x", "datatype": "INT64", "dims": [2]}],
    "outputs": [{"name": "y", "datatype": "INT64", "dims": [2]}],
    "warmup": 0,
}


def echo_model(repo: Path, name: str, versions: tuple[int, ...] = (1,), **config: Any) -> Path:
    return make_model(repo, name, "python", python_file(ECHO), {**ECHO_IO, **config}, versions)


def run(coro: Awaitable[Any]) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, 6 * WAIT)

    return asyncio.run(bounded())


@asynccontextmanager
async def serving(repo: Path, **settings: Any) -> AsyncIterator[InferenceServer]:
    """A started server over ``repo``, drained (every version closed) at the end."""
    settings.setdefault("exit_timeout_s", 5.0)
    server = InferenceServer(ServerSettings(repository=repo, budget=BUDGET, **settings))
    await asyncio.wait_for(server.start(), WAIT)
    try:
        yield server
    finally:
        await asyncio.wait_for(server.drain(), WAIT)


def x_request(model: str, rows: list[list[int]], version: str = "", **kw: Any) -> InferRequest:
    x = np.array(rows, np.int64)
    return InferRequest(model, [InputTensor("x", "INT64", x.shape, x)], model_version=version, **kw)


async def ask(server: InferenceServer, model: str, rows: list[list[int]], version: str = "") -> Any:
    """The ``y`` rows a model answers for ``rows``."""
    resp = await asyncio.wait_for(server.infer(x_request(model, rows, version)), WAIT)
    return resp.outputs[0].data.tolist()


def simple_request(a: np.ndarray, b: np.ndarray) -> InferRequest:
    """A request for Triton's "simple" (INPUT0 + INPUT1, INPUT0 - INPUT1)."""
    return InferRequest(
        "simple",
        [InputTensor("INPUT0", "INT32", a.shape, a), InputTensor("INPUT1", "INT32", b.shape, b)],
    )


def index(server: InferenceServer) -> dict[tuple[str, str], tuple[str, str]]:
    return {(r.name, r.version): (r.state, r.reason) for r in server.repository_index()}


def ready_versions(server: InferenceServer, name: str) -> list[int]:
    return server.repository.versions_of(name)


# -- loading ------------------------------------------------------------------------------


def test_mode_none_loads_every_model_on_every_runtime(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    make_model(repo, "simple", "onnxruntime", onnx_file(simple_add_sub), {"max_batch_size": 8})
    make_model(repo, "matmul", "openvino", onnx_file(matmul_relu), {"max_batch_size": 4})
    echo_model(repo, "echo")

    async def main() -> None:
        async with serving(repo) as server:
            assert server.ready
            assert index(server) == {
                ("echo", "1"): ("READY", ""),
                ("matmul", "1"): ("READY", ""),
                ("simple", "1"): ("READY", ""),
            }
            a = np.arange(32, dtype=np.int32).reshape(2, 16)
            b = np.ones((2, 16), np.int32)
            resp = await asyncio.wait_for(server.infer(simple_request(a, b)), WAIT)
            out = {o.name: o.data for o in resp.outputs}
            np.testing.assert_array_equal(out["OUTPUT0"], a + b)
            np.testing.assert_array_equal(out["OUTPUT1"], a - b)
            assert (resp.model_name, resp.model_version) == ("simple", "1")
            x = np.ones((3, 64), np.float32)
            req = InferRequest("matmul", [InputTensor("x", "FP32", x.shape, x)])
            resp = await asyncio.wait_for(server.infer(req), WAIT)
            assert resp.outputs[0].shape == (3, 64)
            assert await ask(server, "echo", [[1, 2]]) == [[1001, 1002]]
            meta = server.model_metadata("simple")
            assert meta.platform == "onnxruntime_onnx" and meta.versions == ("1",)
            assert [(t.name, t.datatype, t.shape) for t in meta.inputs] == [
                ("INPUT0", "INT32", (-1, 16)),
                ("INPUT1", "INT32", (-1, 16)),
            ]

    run(main())


@pytest.mark.parametrize(
    ("policy", "versions"),
    [
        ({"latest": 2}, [2, 3]),
        ({"specific": [1, 3]}, [1, 3]),
        ("all", [1, 2, 3]),
        (None, [3]),
    ],
)
def test_version_policy_over_three_versions(
    tmp_path: Path, policy: Any, versions: list[int]
) -> None:
    repo = tmp_path / "models"
    config = {} if policy is None else {"version_policy": policy}
    echo_model(repo, "echo", versions=(1, 2, 3), **config)

    async def main() -> None:
        async with serving(repo) as server:
            assert ready_versions(server, "echo") == versions
            assert [v for (n, v) in index(server)] == [str(v) for v in versions]
            assert await ask(server, "echo", [[0, 0]]) == [[1000 * versions[-1]] * 2]
            for v in versions:
                assert await ask(server, "echo", [[1, 1]], version=str(v)) == [[1000 * v + 1] * 2]
            for v in {1, 2, 3} - set(versions):
                with pytest.raises(NotFound, match=f"no ready version {v}"):
                    await server.infer(x_request("echo", [[0, 0]], version=str(v)))
            with pytest.raises(InvalidInput, match="'latest'"):
                await server.infer(x_request("echo", [[0, 0]], version="latest"))

    run(main())


def test_invalid_model_yaml_makes_only_that_model_unavailable(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    echo_model(repo, "good")
    echo_model(repo, "bad_field", max_batch_size=-3)
    # valid YAML, but the declared datatype does not match the model file
    make_model(
        repo,
        "bad_tensor",
        "onnxruntime",
        onnx_file(simple_add_sub),
        {"max_batch_size": 4, "inputs": [{"name": "INPUT0", "datatype": "FP32", "dims": [16]}]},
    )

    async def main() -> None:
        async with serving(repo) as server:
            rows = index(server)
            assert rows[("good", "1")] == ("READY", "")
            state, reason = rows[("bad_field", "")]
            assert state == "UNAVAILABLE"
            assert "max_batch_size" in reason and "-3" in reason
            state, reason = rows[("bad_tensor", "1")]
            assert state == "UNAVAILABLE"
            assert "inputs[0].datatype" in reason and "INT32" in reason and "FP32" in reason
            assert await ask(server, "good", [[1, 2]]) == [[1001, 1002]]
            with pytest.raises(NotFound):
                await server.infer(x_request("bad_field", [[1, 2]]))
            assert server.ready  # not strict: the good models serve
            assert len(server.repository.failures()) == 2

    async def strict() -> None:
        async with serving(repo, strict_readiness=True) as server:
            assert not server.ready

    run(main())
    run(strict())


def test_a_corrupt_model_file_does_not_stop_the_other_models(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    folder = make_model(repo, "a_corrupt", "onnxruntime", config={"max_batch_size": 4})
    (folder / "1" / "model.onnx").write_bytes(b"\x00 not a protobuf")
    echo_model(repo, "b_good")

    async def main() -> None:
        async with serving(repo) as server:
            state, reason = index(server)[("a_corrupt", "1")]
            assert state == "UNAVAILABLE"
            assert "a_corrupt/1/model.onnx" in reason  # relative: clients read the index
            assert str(repo) not in reason
            assert await ask(server, "b_good", [[1, 2]]) == [[1001, 1002]]

    run(main())


# -- polling ------------------------------------------------------------------------------


def test_poll_swaps_in_a_new_version_without_failing_a_request(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    folder = echo_model(repo, "echo", parameters={"setup_delay_s": 0.2})

    async def main() -> None:
        async with serving(repo) as server:
            seen: list[int] = []
            stop = asyncio.Event()

            async def client(k: int) -> None:
                while not stop.is_set():
                    y = await ask(server, "echo", [[k, k]])
                    seen.append(y[0][0] - k)
                    await asyncio.sleep(0.001)

            clients = [asyncio.create_task(client(k)) for k in range(4)]
            await asyncio.sleep(0.05)
            python_file(ECHO)(folder / "2")
            before_poll = len(seen)
            await asyncio.wait_for(server.repository.poll(), WAIT)
            assert len(seen) > before_poll  # v1 kept answering while v2 loaded (setup_delay_s)
            assert ready_versions(server, "echo") == [2]
            n = len(seen)
            while len(seen) < n + 8 and not any(c.done() for c in clients):
                await asyncio.sleep(0.01)  # v2 answers after the swap
            stop.set()
            await asyncio.wait_for(asyncio.gather(*clients), WAIT)  # raises if any request failed
            assert seen[0] == 1000 and seen[-1] == 2000
            assert set(seen) == {1000, 2000}
            first_v2 = seen.index(2000)
            assert all(v == 2000 for v in seen[first_v2:])  # never back to the old version
            assert index(server) == {("echo", "2"): ("READY", "")}
            await asyncio.wait_for(server.repository.poll(), WAIT)  # nothing changed: no reload
            assert server.repository.get("echo") is server.repository.get("echo", "2")

    run(main())


def test_poll_picks_up_a_changed_config_and_a_removed_model(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    folder = echo_model(repo, "echo", parameters={"offset": 5})
    echo_model(repo, "gone")

    async def main() -> None:
        async with serving(repo) as server:
            before = server.repository.get("echo")
            assert await ask(server, "echo", [[0, 0]]) == [[1005, 1005]]
            write_model_yaml(folder, {"backend": "python", **ECHO_IO, "parameters": {"offset": 50}})
            stat = (folder / "model.yaml").stat()
            os.utime(folder / "model.yaml", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
            shutil.rmtree(repo / "gone")
            await asyncio.wait_for(server.repository.poll(), WAIT)
            assert await ask(server, "echo", [[0, 0]]) == [[1050, 1050]]
            assert server.repository.get("echo") is not before
            with pytest.raises(NotFound):
                await server.infer(x_request("gone", [[0, 0]]))
            assert [n for (n, _) in index(server)] == ["echo"]

    run(main())


def test_poll_mode_finds_a_new_model_on_its_own(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    repo.mkdir()

    async def main() -> None:
        async with serving(repo, model_control_mode="poll", poll_interval_s=0.02) as server:
            assert index(server) == {}
            echo_model(repo, "late")
            for _ in range(500):
                if server.model_ready("late"):
                    break
                await asyncio.sleep(0.02)
            assert await ask(server, "late", [[1, 1]]) == [[1001, 1001]]

    run(main())


def test_poll_records_a_broken_config_and_keeps_the_old_version(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    folder = echo_model(repo, "echo")

    async def main() -> None:
        async with serving(repo) as server:
            (folder / "model.yaml").write_text("backend: python\nmax_batch_size: [oops\n")
            await asyncio.wait_for(server.repository.poll(), WAIT)
            state, reason = index(server)[("echo", "")]
            assert state == "UNAVAILABLE" and "YAML" in reason
            assert await ask(server, "echo", [[1, 1]]) == [[1001, 1001]]  # still serving

    run(main())


# -- explicit control ---------------------------------------------------------------------


def test_explicit_mode_load_unload_and_config_override(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    echo_model(repo, "alpha")
    echo_model(repo, "beta")

    async def main() -> None:
        async with serving(repo, model_control_mode="explicit", load_models=("alpha",)) as server:
            assert index(server) == {("alpha", "1"): ("READY", ""), ("beta", ""): ("", "")}
            await server.load_model("beta")
            assert await ask(server, "beta", [[1, 1]]) == [[1001, 1001]]
            await server.unload_model("beta")
            with pytest.raises(NotFound):
                await server.infer(x_request("beta", [[1, 1]]))
            assert index(server)[("beta", "")] == ("UNAVAILABLE", "unloaded")
            with pytest.raises(NotFound):
                await server.unload_model("beta")  # already unloaded

            override = json.dumps({"backend": "python", **ECHO_IO, "parameters": {"offset": 7}})
            await server.load_model("beta", override)
            assert await ask(server, "beta", [[0, 0]]) == [[1007, 1007]]
            await server.load_model("beta")  # back to model.yaml
            assert await ask(server, "beta", [[0, 0]]) == [[1000, 1000]]
            assert await ask(server, "alpha", [[0, 0]]) == [[1000, 1000]]

            with pytest.raises(NotFound, match="no such folder"):
                await server.load_model("gamma")
            with pytest.raises(InvalidInput, match="parameters.config"):
                await server.load_model("beta", "{not json")
            with pytest.raises(ConfigError) as info:
                await server.load_model("beta", json.dumps({"backend": "python", "colour": 1}))
            assert "parameters.config" in str(info.value) and "colour" in str(info.value)

    run(main())


def test_load_and_unload_need_explicit_mode(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    echo_model(repo, "alpha")

    async def main() -> None:
        async with serving(repo) as server:
            with pytest.raises(NotSupported, match="explicit"):
                await server.load_model("alpha")
            with pytest.raises(NotSupported, match="explicit"):
                await server.unload_model("alpha")
            assert await ask(server, "alpha", [[0, 0]]) == [[1000, 1000]]

    run(main())


@pytest.mark.parametrize(
    "name",
    ["../outside", "a/b", "%2F..%2Foutside", "..", "models/../outside", "/abs", "x..y", "link"],
)
def test_names_that_leave_the_repository_are_refused(tmp_path: Path, name: str) -> None:
    repo = tmp_path / "models"
    echo_model(repo, "inside")
    marker = tmp_path / "outside_was_loaded"
    outside_source = f"""
    from pathlib import Path

    def setup(config):
        Path({str(marker)!r}).write_text("loaded")

    def process(batch):
        return {{"y": batch["x"]}}
    """
    make_model(tmp_path, "outside", "python", python_file(outside_source), ECHO_IO)
    (repo / "link").symlink_to(tmp_path / "outside", target_is_directory=True)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))

    async def main() -> None:
        async with serving(repo, model_control_mode="explicit") as server:
            with pytest.raises(InvalidInput, match="model name|outside the repository"):
                await server.load_model(name)
            if name != "link":
                with pytest.raises(InvalidInput):
                    await server.unload_model(name)
            with pytest.raises(NotFound):
                await server.infer(x_request(name, [[0, 0]]))
            assert server.repository.loaded() == []

    run(main())
    assert not marker.exists()
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


# -- warm-up ------------------------------------------------------------------------------


def test_warmup_count_and_batch_size(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    log = tmp_path / "calls.log"
    echo_model(repo, "echo", warmup={"count": 3, "batch_size": 2}, parameters={"log": str(log)})

    async def main() -> None:
        async with serving(repo) as server:
            lines = log.read_text().splitlines()
            # the script's warmup() hook first, then the generated batches (zeros)
            assert lines == ["warmup"] + ["process [2, 2] [0, 0, 0, 0]"] * 3
            await ask(server, "echo", [[5, 6]])
            assert log.read_text().splitlines()[4:] == ["process [1, 2] [5, 6]"]
            stats = server.model_statistics("echo")[0]
            assert stats.inference_count == 1  # warm-up is not counted as traffic

    run(main())


def test_warmup_from_an_npz_file(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    log = tmp_path / "calls.log"
    folder = echo_model(
        repo, "echo", warmup={"count": 2, "file": "samples.npz"}, parameters={"log": str(log)}
    )
    np.savez(folder / "samples.npz", x=np.array([[7, 8], [9, 10]], np.int64))
    echo_model(repo, "no_samples", warmup={"count": 1, "file": "missing.npz"})

    async def main() -> None:
        async with serving(repo) as server:
            assert log.read_text().splitlines() == ["warmup"] + ["process [2, 2] [7, 8, 9, 10]"] * 2
            state, reason = index(server)[("no_samples", "1")]
            assert state == "UNAVAILABLE"
            assert "warmup.file" in reason and "missing.npz" in reason

    run(main())


# -- draining and statistics --------------------------------------------------------------

GATED = """
import time
from pathlib import Path

def setup(config):
    global STARTED, GATE
    STARTED = Path(config["parameters"]["started"])
    GATE = Path(config["parameters"]["gate"])

def process(batch):
    STARTED.touch()
    deadline = time.monotonic() + 10  # never block a test run for ever
    while not GATE.exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    return {"y": batch["x"] * 10}
"""


def test_drain_finishes_requests_in_flight_and_refuses_new_ones(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    started, gate = tmp_path / "started", tmp_path / "gate"
    make_model(
        repo,
        "gated",
        "python",
        python_file(GATED),
        {**ECHO_IO, "parameters": {"started": str(started), "gate": str(gate)}},
    )

    async def main() -> None:
        server = InferenceServer(ServerSettings(repository=repo, budget=BUDGET, exit_timeout_s=5))
        await asyncio.wait_for(server.start(), WAIT)
        in_flight = [asyncio.create_task(ask(server, "gated", [[i, i]])) for i in range(1, 4)]
        for _ in range(1000):
            if started.exists():
                break
            await asyncio.sleep(0.01)
        assert started.exists()
        drain = asyncio.create_task(server.drain())
        await asyncio.sleep(0.05)
        assert not drain.done()  # waiting for the requests in flight
        assert server.draining and not server.ready and not server.model_ready("gated")
        with pytest.raises(Unavailable, match="shutting down"):
            await server.infer(x_request("gated", [[9, 9]]))
        gate.touch()
        results = await asyncio.wait_for(asyncio.gather(*in_flight), WAIT)
        assert results == [[[10 * i, 10 * i]] for i in range(1, 4)]
        await asyncio.wait_for(drain, WAIT)
        assert server.repository.loaded() == []

    run(main())


def test_model_statistics_agree_with_the_requests_sent(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    make_model(
        repo,
        "simple",
        "onnxruntime",
        onnx_file(simple_add_sub),
        {"max_batch_size": 8, "dynamic_batching": {"max_queue_delay_ms": 1}, "warmup": 2},
    )
    rng = np.random.default_rng(3)
    sizes = [int(s) for s in rng.integers(1, 4, size=30)]

    async def main() -> None:
        async with serving(repo) as server:

            async def one(n: int) -> None:
                a = np.full((n, 16), n, np.int32)
                resp = await asyncio.wait_for(server.infer(simple_request(a, a)), WAIT)
                assert resp.outputs[0].data.tolist() == (2 * a).tolist()

            await asyncio.gather(*(one(n) for n in sizes))
            bad = InferRequest("simple", [])
            with pytest.raises(InvalidInput):
                await server.infer(bad)  # refused before it reaches the scheduler
            [stats] = server.model_statistics("simple")
            assert server.model_statistics("simple", "1") == [stats]
            assert stats.success.count == len(sizes)
            assert stats.fail.count == 0
            assert stats.inference_count == sum(sizes)
            assert 1 <= stats.execution_count <= len(sizes)
            per_size = {b: bs.compute_infer.count for b, bs in stats.batches.items()}
            assert sum(per_size.values()) == stats.execution_count
            assert sum(b * n for b, n in per_size.items()) == stats.inference_count
            assert stats.queue.count == len(sizes)
            assert stats.compute_infer.count == len(sizes)  # per request, as Triton counts
            with pytest.raises(NotFound):
                server.model_statistics("nope")

    run(main())
