"""What ``video run`` imports before its first frame: nothing it does not use (start-up time)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from video.media import Clip

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


COLLECTOR = """
import gc, os, sys
from pathlib import Path
from frameserve.cli import main

out, parent, exit_now = Path(sys.argv.pop(1)), os.getpid(), os._exit


def noted_exit(code):  # the command's and its forked decode worker's last step
    who = "command" if os.getpid() == parent else "worker"
    with out.open("a") as f:
        f.write(f"{who} enabled={gc.isenabled()} frozen={gc.get_freeze_count() > 0}\\n")
    exit_now(code)


os._exit = noted_exit
sys.argv = ["frameserve", *sys.argv[1:]]
main.console()
"""


def test_the_console_script_collects_garbage_again_once_the_run_starts(
    pan_clip: Clip, zoo_repository: Path, tmp_path: Path
) -> None:
    """``frameserve video run`` pauses the garbage collector through its start-up (imports,
    model load) and resumes it for the run with what start-up made frozen; its forked decode
    worker, which copied the paused collector, collects again too. Seen as each process
    exits (the script patches ``os._exit``, which both call last)."""
    notes = tmp_path / "notes.txt"
    argv = [
        sys.executable, "-c", COLLECTOR, str(notes), "video", "run", str(pan_clip.path),
        "--pipeline", "faces", "--repository", str(zoo_repository), "--out", str(tmp_path / "o"),
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(notes.read_text().splitlines()) == [
        "command enabled=True frozen=True",
        "worker enabled=True frozen=True",
    ]
