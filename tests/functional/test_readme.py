"""The README's quick start runs as written against a server on the example repository."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from frameserve.tools.example_models import make_example_repository

README = Path(__file__).resolve().parents[2] / "README.md"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(), flags=re.S)


@pytest.fixture(scope="module")
def example_server(tmp_path_factory):
    from servers import ServerLauncher

    folder = tmp_path_factory.mktemp("readme")
    make_example_repository(folder / "models")
    launcher = ServerLauncher(folder)
    yield launcher.start(folder / "models")
    launcher.stop_all()


def test_python_quick_start(example_server, capsys):
    code = next(b for b in _blocks("python") if "tritonclient" in b)
    code = code.replace("127.0.0.1:8001", example_server.grpc_url)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - our own README
    assert namespace["logits"].shape == (2, 1000)


def test_curl_quick_start(example_server):
    shell = "\n".join(b for b in _blocks("sh") if b.startswith("curl"))
    commands = re.findall(r"^curl .*?(?=^curl |\Z)", shell, flags=re.S | re.M)
    assert len(commands) == 3, commands
    outputs = []
    for command in commands:
        argv = shlex.split(
            command.replace("localhost:8000", example_server.http_url), comments=True
        )
        run = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        assert run.returncode == 0, run.stderr
        outputs.append(run.stdout)
    assert outputs[0].strip() == "200"
    assert json.loads(outputs[1])["name"] == "matmul"
    assert json.loads(outputs[2])["outputs"][0]["shape"] == [1, 64]


@pytest.fixture(scope="module")
def zoo_server(zoo_repository, tmp_path_factory):
    from servers import ServerLauncher

    launcher = ServerLauncher(tmp_path_factory.mktemp("readme-zoo"))
    yield launcher.start(zoo_repository)
    launcher.stop_all()


def test_image_quick_start(zoo_server, tmp_path):
    block = next(b for b in _blocks("sh") if b.startswith("# two test images"))
    script = block.replace("localhost:8000", zoo_server.http_url).replace(
        ".venv/bin/python", sys.executable
    )
    run = subprocess.run(
        ["bash", "-e", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    docs, text, decoder = [], run.stdout.strip(), json.JSONDecoder()
    while text:  # curl prints each answer without a newline
        doc, end = decoder.raw_decode(text)
        docs.append(doc)
        text = text[end:].strip()
    faces, near, mask, ocr = docs
    assert len(faces["detections"]) == len(near["detections"]) == 1
    assert (mask["mask"]["width"], mask["mask"]["height"]) == (512, 512)
    assert ocr["texts"][0]["text"] == "Region-based segmentation"


def test_image_quick_start_python(zoo_server, tmp_path, monkeypatch):
    from PIL import Image
    from skimage import data

    Image.fromarray(data.page()).save(tmp_path / "page.png")
    monkeypatch.chdir(tmp_path)
    code = next(b for b in _blocks("python") if '"ocr"' in b)
    code = code.replace("127.0.0.1:8001", zoo_server.grpc_url)
    exec(compile(code, "README.md", "exec"), {})  # noqa: S102 - our own README
