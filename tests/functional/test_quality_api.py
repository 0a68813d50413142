"""``POST /v1/models/quality/predict`` against a real server with the zoo's ``quality`` model.

The score is 100 - BRISQUE, clipped to 0..100; BRISQUE itself is checked against the reference
implementation in ``tests/zoo/test_quality.py`` (the astronaut's is 10.79 there). Bad input
gets a 400 that says what was wrong, and the server stays ready.
"""

from __future__ import annotations

import io
import json
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import skimage.data
from PIL import Image

from servers import RunningServer, ServerLauncher

ASTRONAUT = skimage.data.astronaut()
ASTRONAUT_BRISQUE = 10.794862939073454  # brisque==0.2.0's own score (tests/zoo/test_quality.py)


@pytest.fixture(scope="module")
def server(
    zoo_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    folder = tmp_path_factory.mktemp("quality")
    repo = folder / "models"
    repo.mkdir()
    shutil.copytree(zoo_repository / "quality", repo / "quality")
    running = ServerLauncher(folder).start(repo)
    yield running
    assert running.terminate() == 0, running.log()


def png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "PNG")
    return buf.getvalue()


def predict(server: RunningServer, body: bytes, content_type: str = "image/png") -> tuple[int, Any]:
    request = urllib.request.Request(
        f"http://{server.http_url}/v1/models/quality/predict",
        data=body,
        method="POST",
        headers={"Content-Type": content_type},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_the_astronaut_scores_100_minus_brisque(server: RunningServer) -> None:
    status, body = predict(server, png(ASTRONAUT))
    assert status == 200, body
    quality = body["quality"]
    assert quality["method"] == "brisque"
    assert quality["raw"] == pytest.approx(ASTRONAUT_BRISQUE, abs=0.05)
    assert quality["score"] == pytest.approx(100 - ASTRONAUT_BRISQUE, abs=0.06)


def test_blurred_noised_and_blocky_copies_score_lower(server: RunningServer) -> None:
    _, body = predict(server, png(ASTRONAUT))
    original = body["quality"]["score"]
    noise = np.random.default_rng(0).normal(0, 20, ASTRONAUT.shape)
    buf = io.BytesIO()
    Image.fromarray(ASTRONAUT).save(buf, "JPEG", quality=10)
    copies = {
        "blurred": (png(cv2.GaussianBlur(ASTRONAUT, (0, 0), 2.0)), "image/png"),
        "noised": (png(np.clip(ASTRONAUT + noise, 0, 255).astype(np.uint8)), "image/png"),
        "jpeg q10": (buf.getvalue(), "image/jpeg"),
    }
    for name, (data, content_type) in copies.items():
        status, body = predict(server, data, content_type)
        assert status == 200, (name, body)
        assert body["quality"]["score"] < original - 20, (name, body)


def test_a_flat_picture_scores_0_with_no_raw_score(server: RunningServer) -> None:
    status, body = predict(server, png(np.zeros((120, 160, 3), np.uint8)))
    assert status == 200, body
    assert body == {"quality": {"score": 0.0, "method": "brisque", "raw": None}}


def test_bad_input_is_a_clear_400_and_the_server_stays_ready(server: RunningServer) -> None:
    status, body = predict(server, b"not an image at all", "image/png")
    assert status == 400, body
    status, body = predict(server, png(ASTRONAUT[:20, :300].copy()))
    assert status == 400, body
    assert "300x20 pixels is too small for a brisque quality score" in body["error"]
    assert "at least 32 pixels a side" in body["error"]
    status, body = predict(server, png(ASTRONAUT))
    assert status == 200, body
