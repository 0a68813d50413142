"""The ``quality`` zoo model (BRISQUE), pulled for real and run by the real Python backend.

Its scores are checked against the reference implementation: ``brisque==0.2.0``'s own
``BRISQUE().score`` (with libsvm-official 3.37.0, numpy 2.4.6, scipy 1.17.1, OpenCV 5.1.0,
scikit-image 0.26.0), run in a throw-away virtual environment on the pictures ``pictures()``
makes. The package calls ``float()`` on shape-(1,) arrays, which numpy 2 refuses, so its
``scale_features`` was given the same features flattened first; nothing else was changed.
Those scores are ``REFERENCE`` below. Ours use OpenCV's own bicubic resize and an exact root
for the shape parameter, so they agree to about 0.01 on the package's 0-100 scale.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import json
import math
import pickle
from collections import OrderedDict
from pathlib import Path
from types import ModuleType
from typing import Any

import cv2
import numpy as np
import pytest
from skimage import data

from frameserve.cpu import CpuBudget
from frameserve.serving.config import load_model_config
from frameserve.serving.model import ModelVersion
from frameserve.serving.types import InferRequest, InputTensor
from frameserve.zoo import CATALOG, is_installed
from frameserve.zoo.pull import MANIFEST, script_source

BUDGET = CpuBudget(2, "test")
# brisque==0.2.0's BRISQUE().score of each picture (see the module docstring).
REFERENCE = {
    "original": 10.794862939073454,
    "blurred": 64.27065728734848,
    "noised": 46.18849370865357,
    "jpeg": 56.16229010752815,
    "camera": -7.879404294309921,
    "coffee": 3.0479264284917633,
}
TOLERANCE = 0.05  # on the raw 0-100 scale


def pictures() -> dict[str, np.ndarray]:
    """The astronaut and three damaged copies, plus two more scikit-image photographs."""
    a = data.astronaut()
    rng = np.random.default_rng(0)
    noised = np.clip(a.astype(np.float64) + rng.normal(0, 20, a.shape), 0, 255).astype(np.uint8)
    ok, jpeg = cv2.imencode(
        ".jpg", cv2.cvtColor(a, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 10]
    )
    assert ok
    camera = data.camera()
    return {
        "original": a,
        "blurred": cv2.GaussianBlur(a, (0, 0), 2.0),
        "noised": noised,
        "jpeg": cv2.cvtColor(cv2.imdecode(jpeg, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB),
        "camera": np.stack([camera] * 3, axis=-1),
        "coffee": data.coffee(),
    }


@pytest.fixture(scope="module")
def folder(zoo_repository: Path) -> Path:
    return zoo_repository / "quality"


@pytest.fixture(scope="module")
def script(folder: Path) -> Any:
    """The installed model.py's ``Model``, set up on the installed parameter files."""
    module = _load(folder / "1" / "model.py")
    model = module.Model()
    model.setup({"path": str(folder / "1"), "parameters": {}})
    return model


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("quality_model_under_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def scores(folder: Path, images: list[np.ndarray]) -> list[float]:
    """``brisque`` for each picture through ModelVersion (config, backend, scheduler)."""

    async def run() -> list[float]:
        config = load_model_config(folder / "model.yaml")
        version = await asyncio.to_thread(
            ModelVersion, "quality", 1, config, folder / "1", BUDGET, None
        )
        try:
            await version.warmup()
            version.start()
            out = []
            for image in images:
                batch = image[None]
                request = InferRequest(
                    "quality", [InputTensor("image", "UINT8", batch.shape, batch)]
                )
                response = await asyncio.wait_for(version.infer(request), 60)
                [tensor] = response.outputs
                assert (tensor.name, tensor.datatype, tensor.shape) == ("brisque", "FP32", (1, 1))
                out.append(float(tensor.data[0, 0]))
            return out
        finally:
            await version.close(timeout=10)

    return asyncio.run(run())


def test_pull_installs_our_script_and_the_pinned_parameter_files(
    zoo_repository: Path, folder: Path
) -> None:
    model = CATALOG["quality"]
    assert model.script is not None and model.package is not None
    assert model.package.requirement == "brisque==0.2.0"
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert files == [
        "1/model.py", "1/normalize.pickle", "1/svm.txt", "LICENSE", "SOURCE.txt", "model.yaml",
    ]  # fmt: skip
    assert (folder / "1" / "model.py").read_bytes() == script_source(model.script)
    pins = {"1/svm.txt": model.member_sha256, **{d.target: d.sha256 for d in model.data}}
    for target, sha in pins.items():
        assert hashlib.sha256((folder / target).read_bytes()).hexdigest() == sha
    note = (folder / "SOURCE.txt").read_text()
    needed = [
        "frameserve/zoo/scripts/quality.py",
        "brisque==0.2.0",
        model.package.sha256,
        "brisque/models/svm.txt",
        "brisque/models/normalize.pickle",
        "Apache-2.0",
    ]
    assert [n for n in needed if n not in note] == []
    assert is_installed(model, zoo_repository)
    entry = json.loads((zoo_repository / MANIFEST).read_text())["models"]["quality"]
    assert entry["package"] == "brisque==0.2.0" and entry["script"].endswith("quality.py")
    assert entry["data"] == {"brisque/models/normalize.pickle": model.data[0].sha256}


def test_scores_match_the_reference_implementation(folder: Path) -> None:
    images = pictures()
    got = dict(zip(images, scores(folder, list(images.values())), strict=True))
    for name, expected in REFERENCE.items():
        assert got[name] == pytest.approx(expected, abs=TOLERANCE), name


def test_blurred_noised_and_blocky_copies_score_worse(script: Any) -> None:
    images = pictures()
    original = script.score(images["original"])
    for damaged in ("blurred", "noised", "jpeg"):
        assert script.score(images[damaged]) > original + 20, damaged


def test_a_batch_scores_each_picture_as_alone(script: Any) -> None:
    images = pictures()
    batch = np.stack([images["original"], images["blurred"], images["jpeg"]])
    out = script.process({"image": batch})["brisque"]
    assert out.shape == (3, 1) and out.dtype == np.float32
    alone = [script.score(images[k]) for k in ("original", "blurred", "jpeg")]
    np.testing.assert_allclose(out[:, 0], alone, rtol=1e-6)


def test_flat_and_tiny_pictures_have_no_score(script: Any) -> None:
    assert math.isnan(script.score(np.zeros((64, 64, 3), np.uint8)))
    assert math.isnan(script.score(np.full((64, 64, 3), 128, np.uint8)))
    assert math.isnan(script.score(data.astronaut()[:8, :8]))


def test_the_ranges_file_cannot_run_code(folder: Path, tmp_path: Path) -> None:
    module = _load(folder / "1" / "model.py")
    plain = module.load_ranges(folder / "1" / "normalize.pickle")
    assert plain[0].shape == plain[1].shape == (36,)
    evil = tmp_path / "normalize.pickle"
    evil.write_bytes(pickle.dumps(OrderedDict(min_=[0.0] * 36, max_=[1.0] * 36)))
    with pytest.raises(pickle.UnpicklingError, match="refusing collections.OrderedDict"):
        module.load_ranges(evil)


def test_a_model_file_that_is_not_an_rbf_svr_is_refused(folder: Path, tmp_path: Path) -> None:
    module = _load(folder / "1" / "model.py")
    text = (folder / "1" / "svm.txt").read_text().replace("kernel_type rbf", "kernel_type linear")
    bad = tmp_path / "svm.txt"
    bad.write_text(text)
    with pytest.raises(ValueError, match="expected an RBF-kernel SVR"):
        module.Svr.load(bad)


def test_threads_is_checked_and_gives_the_same_scores(folder: Path) -> None:
    module = _load(folder / "1" / "model.py")
    images = pictures()
    batch = np.stack([images["original"], images["noised"], images["jpeg"], images["blurred"]])
    out = {}
    for threads in (1, 3):
        model = module.Model()
        model.setup({"path": str(folder / "1"), "parameters": {"threads": threads}})
        out[threads] = model.process({"image": batch})["brisque"]
        model.finalize()
    np.testing.assert_array_equal(out[1], out[3])
    for bad in ({"threads": 0}, {"threads": True}, {"thread": 2}):
        with pytest.raises(ValueError, match="parameters"):
            module.Model().setup({"path": str(folder / "1"), "parameters": bad})
