"""frameserve's processes send no usage telemetry, OpenVINO's included."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import sys
from frameserve.backends import refuse_runtime_telemetry
refuse_runtime_telemetry()
import openvino
from openvino.tools.ovc import telemetry_utils
print(sys.modules["openvino_telemetry"], telemetry_utils.tm.__name__)
"""


def test_openvino_falls_back_to_its_no_op_telemetry_stub() -> None:
    # A fresh interpreter: the test process may have imported openvino already. CI is
    # cleared because OpenVINO's telemetry already turns itself off under CI=true.
    env = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"}
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=60,
        check=True,
    )  # fmt: skip
    assert out.stdout.split() == ["None", "openvino.tools.ovc.telemetry_stub"], out.stderr


def test_the_cli_refuses_it_before_it_parses_anything() -> None:
    script = (
        "import sys\n"
        "from frameserve.cli.main import main\n"
        "try:\n    main(['--version'])\nexcept SystemExit:\n    pass\n"
        "print(sys.modules['openvino_telemetry'])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "None", out.stderr
