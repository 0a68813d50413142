"""Video benchmark: frameserve against the loops users write, whole processes, unseen clips.

    .venv/bin/python benchmarks/video/run.py [--frames 2400] [--repeats 3] [--clips pan,detail]
        [--pipelines faces,person-mask] [--contenders frameserve,opencv-openvino,mediapipe]

For each clip (``clip.py``: 1280x720 H.264 made from scikit-image pictures, cached in
``clips/``) and pipeline, in rounds that take turns (the order rotates every round; medians
over ``--repeats`` rounds): ``frameserve video run`` as a process, the OpenCV + OpenVINO loop
(``baseline_openvino.py``) and MediaPipe's own solutions loop (``baseline_mediapipe.py``, in its
pinned venv, ``mediapipe_env.py``), each timed from spawn to exit; frameserve with the clip 4
times at once; and the clip's decode-only ceiling (``ceilings.py``). Writes
``results/latest.json`` (every run) and ``results/latest.md`` (the tables, ``report.py``).
Nothing is asserted: machines are noisy, the tables say how noisy.
"""

from __future__ import annotations

import argparse
import compileall
import datetime as dt
import importlib.metadata as metadata
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # benchmarks/common.py

import contenders as cs  # noqa: E402
import mediapipe_env  # noqa: E402
from ceilings import clip_facts, decode_ceiling  # noqa: E402
from clip import KINDS, benchmark_clip  # noqa: E402
from common import cpu_flags, cpu_model, git_commit, write_latest  # noqa: E402
from report import markdown, summarise  # noqa: E402

from frameserve.cpu import detect_cpu_budget  # noqa: E402

PIPELINES = ("faces", "person-mask")
WARMUP_FRAMES = 30
FOUR = 4


def say(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


class Bench:
    """The commands of one run and the rows they produce (one thread: this one)."""

    def __init__(self, args: argparse.Namespace, work: Path, mediapipe: Path | None) -> None:
        self.repository = args.repository.resolve()
        self.contenders = [c for c in args.contenders.split(",") if c != "mediapipe" or mediapipe]
        self.four = not args.no_four and "frameserve" in self.contenders
        self.mediapipe = mediapipe
        self.work = work
        self.rows: list[dict[str, Any]] = []

    def commands(self, pipeline: str, clip: Path) -> list[cs.Command]:
        out = self.work / "out"
        made = {
            "frameserve": lambda: cs.frameserve_command(pipeline, clip, self.repository, out),
            "opencv-openvino": lambda: cs.openvino_command(pipeline, clip, self.repository, out),
            "mediapipe": lambda: cs.mediapipe_command(self.mediapipe, pipeline, clip, out),  # type: ignore[arg-type]
        }
        commands = [made[c]() for c in self.contenders]
        if self.four:
            commands.append(cs.frameserve_command(pipeline, clip, self.repository, out, FOUR))
        return commands

    def run(self, command: cs.Command, pipeline: str, tags: dict[str, Any]) -> dict[str, Any]:
        row = {**tags, "pipeline": pipeline, "contender": command.contender}
        try:
            row |= cs.measure(command, self.work / "out")
            if command.inputs == 1:
                row["content"] = cs.content(command.results, pipeline)
        except (RuntimeError, OSError, ValueError, KeyError) as err:
            row["error"] = str(err)
            say(f"  {command.contender}: FAILED: {str(err)[:800]}")
        return row

    def round(self, r: int, clips: dict[str, Path], pipelines: list[str], cores: int) -> None:
        for kind, clip in clips.items():
            for skip in (False, True):
                d = decode_ceiling(clip, cores, skip)
                name = "decode skip_loop_filter" if skip else "decode"
                self.rows.append({"round": r, "clip": kind, "contender": name, **d})
                say(f"#{r} {kind} {name}: {d['fps']:.0f} fps, {d['cpu_ms_per_frame']:.2f} ms CPU")
            for pipeline in pipelines:
                commands = self.commands(pipeline, clip)
                k = r % len(commands)
                for command in commands[k:] + commands[:k]:  # who goes first rotates
                    row = self.run(command, pipeline, {"round": r, "clip": kind})
                    self.rows.append(row)
                    if "error" not in row:
                        say(f"#{r} {kind} {pipeline} {row['contender']}: {row['fps']:.1f} fps, "
                            f"{row['cpu_ms_per_frame']:.2f} ms CPU/frame, "
                            f"start-up {row['startup_s'] or float('nan'):.2f} s")  # fmt: skip

    def warm_up(self, clip: Path, pipelines: list[str]) -> None:
        """One short run of each contender first: caches (files, compiled models) warm."""
        for pipeline in pipelines:
            for command in self.commands(pipeline, clip):
                row = self.run(command, pipeline, {"round": "warm-up", "clip": "warm-up"})
                done = "failed" if "error" in row else "ok"
                say(f"warm-up {pipeline} {command.contender}: {done}")


def mediapipe_python(wanted: bool) -> tuple[Path | None, dict[str, str], str | None]:
    """(the venv's python, its versions, why it is skipped)."""
    if not wanted:
        return None, {}, "not asked for (--contenders)"
    try:
        env = mediapipe_env.ensure(log=say)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as err:
        say(f"mediapipe baseline skipped: {err}")
        return None, {}, f"the pinned environment could not be made: {str(err)[-600:]}"
    return env.python, env.versions, None


def versions() -> dict[str, str]:
    names = ("openvino", "opencv-python-headless", "av", "numpy", "scikit-image", "frameserve")
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def compile_bytecode() -> str:
    """Byte-compile frameserve's modules before any run, as ``pip install`` does for a wheel.

    A checkout run from source with ``PYTHONDONTWRITEBYTECODE`` set (some CI images and
    containers set it) would otherwise compile every module in every process: ~0.1-0.2 s of
    start-up that no installed copy pays, in both contenders (the loop imports frameserve's
    decoder too). Existing caches are read even with that variable set."""
    import frameserve

    package = Path(frameserve.__file__).resolve().parent
    compileall.compile_dir(package, quiet=1)
    return str(package)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=2400, help="frames per clip (default 2400)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds; medians over them")
    parser.add_argument("--clips", default=",".join(KINDS))
    parser.add_argument("--pipelines", default=",".join(PIPELINES))
    parser.add_argument("--contenders", default=",".join(cs.CONTENDERS))
    parser.add_argument("--no-four", action="store_true", help="leave out the 4-input runs")
    parser.add_argument("--repository", type=Path, default=HERE.parent.parent / "models")
    parser.add_argument("--cache", type=Path, default=HERE / "clips", help="clip cache folder")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    cores = detect_cpu_budget().cores
    pipelines = args.pipelines.split(",")
    python, mp_versions, mp_skipped = mediapipe_python("mediapipe" in args.contenders.split(","))
    clips = {}
    for kind in args.clips.split(","):
        say(f"clip {kind}: {args.frames} frames (encoded once, then cached in {args.cache})...")
        clips[kind] = benchmark_clip(kind, args.frames, args.cache)
    warm = benchmark_clip("pan", WARMUP_FRAMES, args.cache)
    compiled = compile_bytecode()
    with tempfile.TemporaryDirectory(prefix="frameserve-video-bench-") as tmp:
        bench = Bench(args, Path(tmp), python)
        bench.warm_up(warm, pipelines)
        for r in range(args.repeats):
            bench.round(r, clips, pipelines, cores)
    meta = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "bf16": sorted(cpu_flags() & {"avx512_bf16", "amx_bf16"}),
        "cores": cores,
        "frames": args.frames,
        "repeats": args.repeats,
        "commit": git_commit(HERE),
        "clips": {k: clip_facts(p) for k, p in clips.items()},
        "versions": versions(),
        "mediapipe_versions": mp_versions,
        "mediapipe_skipped": mp_skipped,
        "environment": cs.environment_note(),
        "bytecode": f"compiled before the runs: {compiled}",
    }
    summary = summarise(bench.rows, pipelines)
    data = {"meta": meta, "summary": summary, "runs": bench.rows}
    write_latest(args.out, data, markdown(summary, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
