"""What ``video run`` imports before its first frame: nothing it does not use (start-up time)."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import sys
import frameserve.backends.openvino, frameserve.serving.local, frameserve.video.config
import frameserve.video.run
print(" ".join(sorted(m for m in sys.argv[1:] if m in sys.modules)))
"""
# image decoding, ONNX metadata, the Hungarian solver, the HTTP/gRPC front ends, push clients,
# Triton config.pbtxt parsing (protobuf)
NOT_NEEDED = (
    "PIL", "onnx", "scipy", "aiohttp", "starlette", "grpc", "aiomqtt", "tqdm", "google.protobuf",
)  # fmt: skip


def test_a_video_run_imports_none_of_the_libraries_it_does_not_use() -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, *NOT_NEEDED], capture_output=True, text=True,
        timeout=120, check=True,
    )  # fmt: skip
    assert out.stdout.strip() == "", f"imported before the first frame: {out.stdout.strip()}"


PLAN = """
import sys
import frameserve.cli.video, frameserve.video.ahead, frameserve.video.plan, frameserve.video.warm
print(" ".join(sorted(m for m in sys.argv[1:] if m in sys.modules)))
"""
# the server and the run: imported after the decode workers are forked (``video.plan``)
SERVER = ("frameserve.serving.local", "frameserve.video.run", "frameserve.video.pump", "openvino")


def test_inputs_are_planned_without_the_servers_modules() -> None:
    """``video run`` plans its inputs and forks their workers before it imports the server:
    the workers decode sooner (~0.13 s) and carry none of it."""
    out = subprocess.run(
        [sys.executable, "-c", PLAN, *SERVER], capture_output=True, text=True, timeout=120,
        check=True,
    )  # fmt: skip
    assert out.stdout.strip() == "", f"imported to plan the inputs: {out.stdout.strip()}"
