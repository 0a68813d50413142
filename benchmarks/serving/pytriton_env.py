"""The PyTriton comparison server's own virtual environment, created on first use.

``nvidia-pytriton`` 0.7.0 needs numpy<2 while frameserve runs on numpy 2, so Triton gets
``benchmarks/serving/.venv-pytriton`` with every version pinned in
``requirements-pytriton.txt``. A stamp holding the requirements' sha256 makes re-runs a no-op
and re-installs when the pins change.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from common import ensure_venv, run_checked  # benchmarks/ is on sys.path (run.py)

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


def ensure(venv: Path = VENV, log=sys.stderr.write) -> PyTritonEnv:  # type: ignore[no-untyped-def]
    """Create or update the venv when the pins changed; describe it."""
    python = ensure_venv(venv, REQUIREMENTS, "PyTriton", log, INSTALL_TIMEOUT_S)
    probe = (
        "import sysconfig, json, importlib.metadata as m;"
        "print(json.dumps([sysconfig.get_config_var('LIBDIR'),"
        "{p: m.version(p) for p in ('nvidia-pytriton', 'openvino', 'numpy', 'tritonclient')}]))"
    )
    libdir, versions = json.loads(run_checked([str(python), "-c", probe], 60))
    return PyTritonEnv(python, libdir, versions)
