"""The PyTriton comparison server's own virtual environment, created on first use.

``nvidia-pytriton`` 0.7.0 needs numpy<2 while frameserve runs on numpy 2, so Triton gets
``benchmarks/serving/.venv-pytriton`` with every version pinned in
``requirements-pytriton.txt``. A stamp holding the requirements' sha256 makes re-runs a no-op
and re-installs when the pins change.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv-pytriton"
REQUIREMENTS = HERE / "requirements-pytriton.txt"
SERVER_SCRIPT = HERE / "pytriton_server.py"
INSTALL_TIMEOUT_S = 1200


@dataclass(frozen=True)
class PyTritonEnv:
    python: Path
    libdir: str  # Python's LIBDIR: tritonserver's Python backend stub loads libpython from it
    versions: dict[str, str]

    def environment(self) -> dict[str, str]:
        """Extra environment for the server process."""
        return {"LD_LIBRARY_PATH": self.libdir}


def _digest() -> str:
    return hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()


def _run(cmd: list[str], timeout: float) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-2000:]
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed ({proc.returncode}):\n{tail}")
    return proc.stdout


def ensure(venv: Path = VENV, log=sys.stderr.write) -> PyTritonEnv:  # type: ignore[no-untyped-def]
    """Create or update the venv when the pins changed; describe it."""
    python = venv / "bin" / "python"
    stamp = venv / ".requirements-sha256"
    if not (python.is_file() and stamp.is_file() and stamp.read_text().strip() == _digest()):
        log(f"creating {venv} (pinned PyTriton environment; takes a minute)\n")
        _run([sys.executable, "-m", "venv", "--clear", str(venv)], 300)
        _run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
              "-r", str(REQUIREMENTS)], INSTALL_TIMEOUT_S)  # fmt: skip
        stamp.write_text(_digest() + "\n")
    probe = (
        "import sysconfig, json, importlib.metadata as m;"
        "print(json.dumps([sysconfig.get_config_var('LIBDIR'),"
        "{p: m.version(p) for p in ('nvidia-pytriton', 'openvino', 'numpy', 'tritonclient')}]))"
    )
    libdir, versions = json.loads(_run([str(python), "-c", probe], 60))
    return PyTritonEnv(python, libdir, versions)
