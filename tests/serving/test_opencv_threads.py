"""A server runs OpenCV on its own threads only: OpenCV's pool would spin beside them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = """
import sys
from pathlib import Path
import cv2
before = cv2.getNumThreads()
from frameserve.serving.server import InferenceServer, ServerSettings
InferenceServer(ServerSettings(repository=Path(sys.argv[1])))
print(before, cv2.getNumThreads())
"""


def test_a_server_turns_opencvs_own_pool_off(tmp_path: Path) -> None:
    # A fresh interpreter: OpenCV's setting is process-wide, and this one may have set it.
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True,
        timeout=60, check=True,
    )  # fmt: skip
    before, after = (int(n) for n in out.stdout.split())
    assert after == 1, out.stderr
    assert before >= 1  # OpenCV's default: a thread per core
