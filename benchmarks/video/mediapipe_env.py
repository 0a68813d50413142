"""The MediaPipe baseline's own virtual environment, created on first use.

``mediapipe`` 0.10.21 (the wheel the zoo's ``faces`` and ``person-mask`` models come from) needs
numpy<2 and protobuf<5 while frameserve runs on numpy 2, so the baseline gets
``benchmarks/video/.venv-mediapipe`` with every version pinned in
``requirements-mediapipe.txt``. A stamp holding the requirements' sha256 makes re-runs a no-op
and re-installs when the pins change. Nothing of frameserve is installed there.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from common import ensure_venv, run_checked  # benchmarks/ is on sys.path (run.py)

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv-mediapipe"
REQUIREMENTS = HERE / "requirements-mediapipe.txt"
INSTALL_TIMEOUT_S = 1200
PACKAGES = ("mediapipe", "numpy", "protobuf", "opencv-contrib-python")


@dataclass(frozen=True)
class MediaPipeEnv:
    python: Path
    versions: dict[str, str]


def ensure(venv: Path = VENV, log=sys.stderr.write) -> MediaPipeEnv:  # type: ignore[no-untyped-def]
    """Create or update the venv when the pins changed; check that mediapipe imports."""
    python = ensure_venv(venv, REQUIREMENTS, "MediaPipe", log, INSTALL_TIMEOUT_S)
    probe = (
        "import json, importlib.metadata as m, mediapipe.python.solutions;"
        f"print(json.dumps({{p: m.version(p) for p in {PACKAGES!r}}}))"
    )
    versions = json.loads(run_checked([str(python), "-c", probe], 120).strip().splitlines()[-1])
    return MediaPipeEnv(python, versions)
