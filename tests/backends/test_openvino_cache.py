"""The converted-model cache: a zoo graph's edits (batch rewrite, fused pre-processing) are
read from saved IR the second time, with its batching check remembered, and give the same
outputs as the first load."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from frameserve.backends import BackendSettings, load_backend
from frameserve.backends import openvino as ov_backend
from frameserve.backends.openvino_cache import FOLDER, ConvertedModels
from frameserve.cpu import CpuBudget
from frameserve.serving.config import load_model_config

BUDGET = CpuBudget(2, "test")


def faces_settings(zoo_repository: Path, cache: Path | None) -> BackendSettings:
    folder = zoo_repository / "faces"
    config = load_model_config(folder / "model.yaml")
    assert config.openvino.rewrite_batch_reshapes and config.preprocess is not None
    assert config.preprocess.fuse  # both edits are in the cached graph
    return BackendSettings("faces", 1, folder / "1", config, BUDGET, True, cache_dir=cache)


def run(backend: object, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return asyncio.run(backend.infer(batch))  # type: ignore[attr-defined]


@pytest.fixture
def counted_checks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = ov_backend.check_batching

    def check(compiled: object, source: object) -> None:
        calls.append(1)
        real(compiled, source)  # type: ignore[arg-type]

    monkeypatch.setattr(ov_backend, "check_batching", check)
    return calls


def test_a_second_load_reads_the_edited_graph_and_skips_the_check(
    zoo_repository: Path, tmp_path: Path, counted_checks: list[int]
) -> None:
    first = load_backend(faces_settings(zoo_repository, tmp_path))
    entries = [p for p in (tmp_path / FOLDER).iterdir() if not p.name.startswith(".")]
    assert len(entries) == 1 and (entries[0] / "model.xml").is_file()
    assert any(p.name.startswith("batching-checked-") for p in entries[0].iterdir())
    assert counted_checks == [1]
    second = load_backend(faces_settings(zoo_repository, tmp_path))
    assert counted_checks == [1]  # remembered for the same graph and properties
    assert [p.name for p in (tmp_path / FOLDER).iterdir() if not p.name.startswith(".")] == [
        entries[0].name
    ]
    frames = np.random.default_rng(0).integers(0, 255, (3, 192, 192, 3), dtype=np.uint8)
    a, b = run(first, {"input_1": frames}), run(second, {"input_1": frames})
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    first.close()
    second.close()


def test_the_key_follows_the_file_and_the_edits(zoo_repository: Path, tmp_path: Path) -> None:
    settings = faces_settings(zoo_repository, tmp_path)
    cache = ConvertedModels(tmp_path)
    source = settings.path / "model.tflite"
    key = cache.key(source, settings.config, True)
    assert cache.key(source, settings.config, True) == key
    assert cache.key(source, settings.config, False) != key
    unfused = settings.config.model_copy(
        update={"preprocess": settings.config.preprocess.model_copy(update={"fuse": False})}
    )
    assert cache.key(source, unfused, True) != key
    changed = tmp_path / "model.tflite"
    changed.write_bytes(source.read_bytes() + b"\0")
    assert cache.key(changed, settings.config, True) != key


def test_without_a_cache_dir_nothing_is_written(
    zoo_repository: Path, tmp_path: Path, counted_checks: list[int]
) -> None:
    backend = load_backend(faces_settings(zoo_repository, None))
    backend.close()
    assert counted_checks == [1]
    assert not (tmp_path / FOLDER).exists()


def test_an_unreadable_entry_falls_back_to_the_source(
    zoo_repository: Path, tmp_path: Path, counted_checks: list[int]
) -> None:
    load_backend(faces_settings(zoo_repository, tmp_path)).close()
    [entry] = [p for p in (tmp_path / FOLDER).iterdir() if not p.name.startswith(".")]
    (entry / "model.xml").write_text("<not a model")
    backend = load_backend(faces_settings(zoo_repository, tmp_path))
    frames = np.zeros((1, 192, 192, 3), dtype=np.uint8)
    assert set(run(backend, {"input_1": frames})) == {"Identity", "Identity_1"}
    backend.close()
    assert counted_checks == [1, 1]  # the damaged entry went, its mark with it
    assert "<not a model" not in (entry / "model.xml").read_text()  # made again
