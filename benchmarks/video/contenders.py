"""The contenders as whole processes: their command lines, and what one run of each costs.

Every run is a fresh process, timed from just before it is spawned to its exit (start-up, model
compilation and teardown included, as ``time`` would), with its CPU seconds from the children's
rusage (the contenders run one at a time, so the difference around one run is that run's).

Start-up is the time from spawning to the first result line on disk:

- the baselines write ``time.monotonic()`` right after their first line and print it on exit
  (CLOCK_MONOTONIC is one clock for every process on Linux);
- frameserve flushes each JSON line, so a thread here polls its ``.jsonl`` every 2 ms until it is
  not empty; its process wall minus the run's own ``wall_s`` is kept beside that, as a check.
"""

from __future__ import annotations

import base64
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
BASELINES = ("opencv-openvino", "mediapipe")
CONTENDERS = ("frameserve", *BASELINES)
RUN_TIMEOUT_S = 1800
POLL_S = 0.002


@dataclass(frozen=True)
class Command:
    """One contender on one clip: what to spawn and where its results go."""

    contender: str
    argv: list[str]
    results: Path  # the first (or only) JSONL file
    inputs: int = 1


def frameserve_command(
    pipeline: str, clip: Path, repository: Path, out: Path, inputs: int = 1
) -> Command:
    """``frameserve video run CLIP... --pipeline P --repository R --out OUT --profile``."""
    exe = Path(sys.executable).parent / "frameserve"
    argv = [str(exe), "video", "run", *[str(clip)] * inputs, "--pipeline", pipeline,
            "--repository", str(repository), "--out", str(out), "--profile"]  # fmt: skip
    name = "frameserve" if inputs == 1 else f"frameserve x{inputs}"
    return Command(name, argv, out / f"{clip.stem}.jsonl", inputs)


def openvino_command(pipeline: str, clip: Path, repository: Path, out: Path) -> Command:
    script = HERE / "baseline_openvino.py"
    results = out / f"{clip.stem}.jsonl"
    argv = [sys.executable, str(script), str(clip), str(repository / pipeline), str(results)]
    return Command("opencv-openvino", argv, results)


def mediapipe_command(python: Path, pipeline: str, clip: Path, out: Path) -> Command:
    script = HERE / "baseline_mediapipe.py"
    results = out / f"{clip.stem}.jsonl"
    argv = [str(python), str(script), str(clip), pipeline, str(results)]
    return Command("mediapipe", argv, results)


def measure(command: Command, out: Path) -> dict[str, Any]:
    """Spawn, wait, and describe the run: wall, CPU, start-up, frames, fps."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    poller = FirstLine(command.results) if command.contender.startswith("frameserve") else None
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with (out / "stdout.txt").open("wb") as stdout, (out / "stderr.txt").open("wb") as stderr:
        spawned = time.monotonic()
        proc = subprocess.Popen(command.argv, stdout=stdout, stderr=stderr)
        if poller is not None:
            poller.start()
        try:
            code = proc.wait(RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        wall = time.monotonic() - spawned
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if poller is not None:
        poller.stop()
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if code != 0:
        tail = (out / "stderr.txt").read_text(errors="replace")[-1500:]
        raise RuntimeError(f"{command.contender} exited with {code}: {command.argv}\n{tail}")
    report = json.loads((out / "stdout.txt").read_text())
    frames = int(report["frames"])
    row: dict[str, Any] = {
        "contender": command.contender,
        "frames": frames,
        "wall_s": wall,
        "cpu_s": cpu,
        "fps": frames / wall,
        "cpu_ms_per_frame": cpu / frames * 1000,
    }
    if poller is None:
        first = report["first_result_monotonic"]
        row["startup_s"] = first - spawned if first is not None else None
        return row
    row["startup_s"] = poller.seen - spawned if poller.seen is not None else None
    row["startup_outside_run_s"] = wall - report["wall_s"]
    row["run_fps"] = report["fps"]
    row["mean_batch"] = report.get("mean_batch_size", {})
    row["stages_ms_per_frame"], row["stages_measure"] = stage_ms(report["stages"], frames)
    return row


class FirstLine(threading.Thread):
    """Polls a file until it has a byte in it; ``seen`` is then that ``time.monotonic()``."""

    def __init__(self, path: Path) -> None:
        super().__init__(name="first-line", daemon=True)
        self.path = path
        self.seen: float | None = None
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            try:
                if self.path.stat().st_size > 0:
                    self.seen = time.monotonic()
                    return
            except FileNotFoundError:
                pass
            self._done.wait(POLL_S)

    def stop(self) -> None:
        self._done.set()
        self.join(5)


def stage_ms(stages: dict[str, dict[str, float]], frames: int) -> tuple[dict[str, float], str]:
    """Milliseconds per frame of each stage in ``--profile``: CPU when the profile has it,
    else the busy (wall) seconds it reports today; the second value says which."""
    key = "cpu_seconds" if all("cpu_seconds" in s for s in stages.values()) else "seconds"
    ms = {name: s[key] / frames * 1000 for name, s in stages.items()}
    return ms, "CPU" if key == "cpu_seconds" else "wall"


def content(results: Path, pipeline: str, every: int = 30) -> float:
    """What the results found: for faces, the share of frames with a face; for person-mask,
    the mean share of the picture covered by the mask (every ``every``-th frame)."""
    hits, total = 0.0, 0
    with results.open("rb") as lines:
        for i, line in enumerate(lines):
            if pipeline == "faces":
                hits += bool(json.loads(line).get("detections"))
                total += 1
            elif i % every == 0:
                png = base64.b64decode(json.loads(line)["mask"]["png"])
                mask = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_GRAYSCALE)
                hits += float((mask > 127).mean())
                total += 1
    return hits / total if total else 0.0


def environment_note() -> dict[str, str]:
    """Thread-count variables that would change what the contenders do, if any are set."""
    names = ("OMP_NUM_THREADS", "OPENCV_FFMPEG_THREADS", "OPENCV_FFMPEG_CAPTURE_OPTIONS")
    return {n: os.environ[n] for n in names if n in os.environ}
