"""The ``fruc`` zoo model, pulled for real and run by the real Python backend.

The folder is installed by ``pull`` from frameserve's own package (no registry is reachable in
these tests, which shows that a script model needs none), its ``model.yaml`` parsed by the
server's parser, and requests go through ``ModelVersion`` (validation, scheduler, backend).
Frames are crops of ``skimage.data.astronaut()`` whose window moves by (dx, dy) pixels; the
true midpoint is the window moved by half as much.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
import yaml
from skimage import data

from frameserve.backends import BackendSettings, load_backend
from frameserve.cpu import CpuBudget
from frameserve.errors import InvalidInput, ModelExecutionError, ModelLoadError
from frameserve.serving.config import load_model_config
from frameserve.serving.model import ModelVersion
from frameserve.serving.types import InferRequest, InputTensor
from frameserve.zoo import CATALOG, is_installed, pull
from frameserve.zoo.pull import MANIFEST, script_source

NO_REGISTRY = "http://127.0.0.1:9/simple"  # discard port: any download would fail at once
BUDGET = CpuBudget(2, "test")
SIZE = 320  # crop side
ORIGIN = 64  # where the window of `previous` starts; leaves room for the shifts
BORDER = 16  # left out of PSNR: content that enters the window has no source to come from
T = TypeVar("T")


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("zoo") / "models"
    cache = tmp_path_factory.mktemp("empty-cache")
    [result] = pull(["fruc"], dest, cache_dir=cache, index_url=NO_REGISTRY)
    assert (result.name, result.status, result.path) == ("fruc", "installed", dest / "fruc")
    return dest


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    image = data.astronaut()
    assert image.shape == (512, 512, 3) and image.dtype == np.uint8
    return image


def window(image: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """The crop window moved by (dx, dy) from its origin, as a contiguous frame."""
    y, x = ORIGIN + dy, ORIGIN + dx
    return np.ascontiguousarray(image[y : y + SIZE, x : x + SIZE])


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB over the interior (BORDER pixels left out on each side)."""
    inner = (slice(BORDER, -BORDER), slice(BORDER, -BORDER))
    diff = a[inner].astype(np.float64) - b[inner].astype(np.float64)
    mse = float(np.mean(diff**2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def request(previous: np.ndarray, nxt: np.ndarray) -> InferRequest:
    return InferRequest(
        "fruc",
        [
            InputTensor("previous", "UINT8", previous.shape, previous),
            InputTensor("next", "UINT8", nxt.shape, nxt),
        ],
    )


def with_version(folder: Path, use: Callable[[ModelVersion], Awaitable[T]]) -> T:
    """Load ``folder`` as the server does (config, backend, warm-up, scheduler), use it, close."""

    async def run() -> T:
        config = load_model_config(folder / "model.yaml")
        version = await asyncio.to_thread(
            ModelVersion, "fruc", 1, config, folder / "1", BUDGET, None
        )
        try:
            await version.warmup()
            version.start()
            return await asyncio.wait_for(use(version), 60)
        finally:
            await version.close(timeout=10)

    return asyncio.run(run())


def middles(folder: Path, pairs: list[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
    """The ``middle`` output for each (previous, next) batch, one request each."""

    async def use(version: ModelVersion) -> list[np.ndarray]:
        out = []
        for previous, nxt in pairs:
            response = await version.infer(request(previous, nxt))
            [tensor] = response.outputs
            assert (tensor.name, tensor.datatype) == ("middle", "UINT8")
            out.append(tensor.data)
        return out

    return with_version(folder, use)


def test_pull_installs_the_script_from_the_package(repo: Path) -> None:
    folder = repo / "fruc"
    model = CATALOG["fruc"]
    assert model.script is not None and model.package is None
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == [
        "1/model.py",
        "SOURCE.txt",
        "model.yaml",
    ]
    assert (folder / "1" / "model.py").read_bytes() == script_source(model.script)
    note = (folder / "SOURCE.txt").read_text()
    assert "frameserve's own code" in note and "Apache-2.0" in note
    assert "frameserve/zoo/scripts/fruc.py" in note
    assert is_installed(model, repo)
    entry = json.loads((repo / MANIFEST).read_text())["models"]["fruc"]
    digest = hashlib.sha256(script_source(model.script)).hexdigest()
    assert entry == {"script": "frameserve/zoo/scripts/fruc.py", "file_sha256": digest}


def test_second_pull_is_up_to_date_and_an_edited_script_is_replaced(tmp_path: Path) -> None:
    dest, cache = tmp_path / "models", tmp_path / "cache"
    script = CATALOG["fruc"].script
    assert script is not None
    [first] = pull(["fruc"], dest, cache_dir=cache, index_url=NO_REGISTRY)
    inode = (dest / "fruc").stat().st_ino
    [again] = pull(["fruc"], dest, cache_dir=cache, index_url=NO_REGISTRY)
    assert (first.status, again.status) == ("installed", "up to date")
    assert (dest / "fruc").stat().st_ino == inode
    installed = dest / "fruc" / script.target
    installed.write_text("# edited by hand\n")
    [fixed] = pull(["fruc"], dest, cache_dir=cache, index_url=NO_REGISTRY)
    assert fixed.status == "updated"
    assert installed.read_bytes() == script_source(script)
    assert sorted(p.name for p in dest.iterdir()) == [MANIFEST, "fruc"]
    assert list(cache.iterdir()) == []  # nothing was downloaded


def test_model_yaml_declares_a_batching_python_model(repo: Path) -> None:
    config = load_model_config(repo / "fruc" / "model.yaml")
    assert config.backend == "python" and config.max_batch_size == 4
    assert config.batching_enabled and config.dynamic_batching is not None
    assert config.dynamic_batching.max_queue_delay_ms <= 5
    assert config.inputs is not None and config.outputs is not None
    tensors = [(t.name, t.datatype, t.dims) for t in [*config.inputs, *config.outputs]]
    assert tensors == [
        ("previous", "UINT8", [-1, -1, 3]),
        ("next", "UINT8", [-1, -1, 3]),
        ("middle", "UINT8", [-1, -1, 3]),
    ]
    assert config.parameters == {"flow_scale": 0.5, "preset": "fast", "threads": 1}


@pytest.mark.parametrize("dx, dy", [(8, 0), (0, -8), (8, 8), (-8, 4), (16, -6)])
def test_middle_frame_is_far_closer_to_the_truth_than_a_blend(
    repo: Path, astronaut: np.ndarray, dx: int, dy: int
) -> None:
    previous, nxt = window(astronaut, 0, 0), window(astronaut, dx, dy)
    truth = window(astronaut, dx // 2, dy // 2)
    [middle] = middles(repo / "fruc", [(previous[None], nxt[None])])
    assert middle.shape == (1, SIZE, SIZE, 3) and middle.dtype == np.uint8
    blend = ((previous.astype(np.uint16) + nxt + 1) // 2).astype(np.uint8)
    got, baseline = psnr(middle[0], truth), psnr(blend, truth)
    # Measured: 46-57 dB against 16-20 dB for the blend.
    assert got >= 35.0 and got >= baseline + 15.0, (got, baseline)


def test_a_batch_of_three_equals_three_single_calls(repo: Path, astronaut: np.ndarray) -> None:
    shifts = [(8, 0), (-4, 6), (0, 0)]
    previous = np.stack([window(astronaut, 0, 0)] * 3)
    nxt = np.stack([window(astronaut, dx, dy) for dx, dy in shifts])
    singles = [(previous[i : i + 1], nxt[i : i + 1]) for i in range(3)]
    batched, *one_by_one = middles(repo / "fruc", [(previous, nxt), *singles])
    assert batched.shape == (3, SIZE, SIZE, 3)
    for i, single in enumerate(one_by_one):
        np.testing.assert_array_equal(batched[i], single[0])
    assert not np.array_equal(batched[0], batched[1])  # each row comes from its own pair


def test_identical_frames_come_back_unchanged(repo: Path, astronaut: np.ndarray) -> None:
    frame = window(astronaut, 0, 0)
    tiny = astronaut[:1, :1].copy()  # below the flow's minimum size: a plain blend
    [middle, small] = middles(repo / "fruc", [(frame[None], frame[None]), (tiny[None],) * 2])
    assert int(np.abs(middle[0].astype(np.int16) - frame).max()) <= 1
    np.testing.assert_array_equal(small[0], tiny)


def test_bad_inputs_are_refused_with_the_name_and_both_shapes(
    repo: Path, astronaut: np.ndarray
) -> None:
    frame = window(astronaut, 0, 0)[None]
    narrower = frame[:, :, :200].copy()
    four_channels = np.concatenate([frame, frame[..., :1]], axis=3)

    async def use(version: ModelVersion) -> list[str]:
        errors = []
        for previous, nxt, kind in [
            (frame, narrower, ModelExecutionError),
            (four_channels, four_channels, InvalidInput),
        ]:
            with pytest.raises(kind) as info:
                await version.infer(request(previous, nxt))
            errors.append(str(info.value))
        return errors

    size_error, channel_error = with_version(repo / "fruc", use)
    assert "input 'next': expected the shape of 'previous' (1, 320, 320, 3)" in size_error
    assert "got (1, 320, 200, 3)" in size_error
    # The server checks the declared dims before the model sees the request.
    assert "input 'previous' expects [-1, -1, -1, 3], got [1, 320, 320, 4]" in channel_error


def test_the_script_itself_checks_channels(repo: Path, astronaut: np.ndarray) -> None:
    """Called without the server's checks (as a video pipeline might), the script still
    names the input and the shape it expected."""
    folder = repo / "fruc"
    settings = BackendSettings(
        "fruc", 1, folder / "1", load_model_config(folder / "model.yaml"), BUDGET, True
    )
    backend: Any = load_backend(settings)
    try:
        grey = astronaut[None, :64, :64, 0]
        with pytest.raises(ModelExecutionError) as info:
            asyncio.run(backend.infer({"previous": grey, "next": grey}))
        message = str(info.value)
        assert "input 'previous': expected shape (N, H, W, 3) of RGB frames" in message
        assert "got (1, 64, 64)" in message
    finally:
        backend.close()


@pytest.mark.parametrize(
    "parameters, expected",
    [
        ({"flow_scale": 2}, "parameters.flow_scale: expected a number in (0, 1], got 2"),
        ({"preset": "slow"}, "parameters.preset: expected one of ['ultrafast', 'fast', 'medium']"),
        ({"threads": 0}, "parameters.threads: expected an integer >= 1, got 0"),
        ({"scale": 1}, "parameters: expected only ['flow_scale', 'preset', 'threads']"),
    ],
)
def test_bad_parameters_fail_the_load(
    repo: Path, tmp_path: Path, parameters: dict[str, Any], expected: str
) -> None:
    folder = tmp_path / "fruc"
    shutil.copytree(repo / "fruc", folder)
    raw = yaml.safe_load((folder / "model.yaml").read_text())
    raw["parameters"] = parameters
    (folder / "model.yaml").write_text(yaml.safe_dump(raw))
    settings = BackendSettings(
        "fruc", 1, folder / "1", load_model_config(folder / "model.yaml"), BUDGET, True
    )
    with pytest.raises(ModelLoadError, match="failed during import/setup") as info:
        load_backend(settings)
    assert expected in str(info.value)
