"""The package as users install it: the wheel, built here, goes into a clean virtualenv from the
runtime dependencies' wheels alone (``--no-index``), then serves the README's quick start.

``make test`` downloads those wheels first (``make wheelhouse``, ``$FRAMESERVE_WHEELHOUSE``); run
alone, the test downloads them itself with pip (PyPI, or pip's cache).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from servers import ServerLauncher

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
# What the plain install must not bring: test tools, the extras, and the GUI OpenCV build.
NOT_RUNTIME = {
    "pytest", "tritonclient", "ruff", "mypy", "trackers", "opencv-python", "nncf", "matplotlib",
    "opentelemetry-sdk", "ray",
}  # fmt: skip


def _run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    run = subprocess.run(argv, capture_output=True, text=True, timeout=300, **kwargs)  # type: ignore[call-overload]
    assert run.returncode == 0, f"{argv} -> {run.returncode}\n{run.stdout}\n{run.stderr}"
    return run


def _wheelhouse() -> Path:
    folder = Path(os.environ.get("FRAMESERVE_WHEELHOUSE", ROOT / ".wheels"))
    if not (folder / ".complete").exists():
        _run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--require-hashes",
              "--only-binary=:all:", "-r", str(ROOT / "requirements-runtime.lock"),
              "-d", str(folder)])  # fmt: skip
        (folder / ".complete").touch()
    return folder


def _install_block() -> list[str]:
    """The README's install commands, one per line, comments stripped."""
    blocks = re.findall(r"```sh\n(# install the package.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) == 1, "README: one sh block starting '# install the package'"
    lines = [line.split("#", 1)[0].strip() for line in blocks[0].splitlines()]
    return [line for line in lines if line]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Run the README's install block as written, with the wheel built here and pip kept to the
    downloaded wheels; the last line (``serve``) starts a server on free ports."""
    tmp = tmp_path_factory.mktemp("wheel")
    dist = tmp / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
          "-w", str(dist), str(ROOT)])  # fmt: skip
    (wheel,) = dist.glob("frameserve-*.whl")
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    env["HOME"] = str(tmp)  # the README installs into ~/frameserve-env
    commands = _install_block()
    assert commands[0] == "make wheel", commands[0]  # done above, into a folder of the test's own
    launcher = ServerLauncher(tmp)
    server = None
    for line in commands[1:]:
        argv = [str(tmp) + a[1:] if a.startswith("~/") else a for a in shlex.split(line)]
        argv = [str(wheel) if a.startswith("dist/frameserve-") else a for a in argv]
        if argv[0] == "python3":
            argv[0] = sys.executable  # the Python 3.11 this suite runs on
        if argv[1:3] == ["install", str(wheel)]:
            argv[2:2] = ["-q", "--no-index", "--find-links", str(_wheelhouse())]
            assert Path(line.split()[2]).name == wheel.name, "README names another version"
        if argv[1:2] == ["serve"]:
            server = launcher.start(Path(tmp / argv[3]), command=tuple(argv[:2]), env=env)
            break
        _run(argv, cwd=tmp, env=env)
    assert server is not None, "the README's install block ends with frameserve serve"
    yield {"venv": tmp / "frameserve-env", "server": server, "env": env, "tmp": tmp}
    assert server.terminate() == 0, server.log()


def test_plain_install_has_the_runtime_only(installed):
    pip = installed["venv"] / "bin" / "pip"
    listed = json.loads(_run([str(pip), "list", "--format", "json"]).stdout)
    names = {p["name"].lower().replace("_", "-") for p in listed}
    assert "opencv-python-headless" in names
    assert not names & NOT_RUNTIME, sorted(names & NOT_RUNTIME)


def test_version_and_package_data(installed):
    from frameserve import __version__

    frameserve = str(installed["venv"] / "bin" / "frameserve")
    assert _run([frameserve, "--version"]).stdout.strip() == f"frameserve {__version__}"
    python = str(installed["venv"] / "bin" / "python")
    code = "import frameserve, os; print(os.path.dirname(frameserve.__file__))"
    where = _run([python, "-c", code], env=installed["env"], cwd=installed["tmp"]).stdout.strip()
    package = ROOT / "src" / "frameserve"
    data = [
        p.relative_to(package)
        for p in package.rglob("*")
        if p.is_file() and p.suffix not in {".py", ".pyc"} and "__pycache__" not in p.parts
    ]
    assert data, "the package has data files (protos, pipelines, stubs)"
    missing = [str(p) for p in data if not (Path(where) / p).is_file()]
    assert not missing, f"package data left out of the wheel: {missing}"


def test_installed_server_answers_the_quick_start(installed):
    server = installed["server"]
    status, body = server.get("/v2/models/matmul")
    assert status == 200 and json.loads(body)["name"] == "matmul"
    for line in re.findall(r"^curl .*?(?=^curl |^```)", README.read_text(), flags=re.S | re.M)[:3]:
        argv = shlex.split(line.replace("localhost:8000", server.http_url), comments=True)
        _run(argv)


def test_an_extra_feature_names_its_extra(installed):
    frameserve = str(installed["venv"] / "bin" / "frameserve")
    run = subprocess.run(
        [frameserve, "quantize", "--model", "matmul",
         "--repository", str(installed["tmp"] / "models"), "--calibration", "x.mp4"],
        capture_output=True, text=True, timeout=120, env=installed["env"],
    )  # fmt: skip
    assert run.returncode == 1, run.stderr
    assert "pip install 'frameserve[toolkit]'" in run.stderr
