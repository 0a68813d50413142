"""Paired A/B of whole ``frameserve video run`` processes: source trees (or the loop) side by side.

    .venv/bin/python benchmarks/video/paired.py --clip detail --pipeline faces --rounds 24 \\
        base=/tmp/base/src change=src
    git worktree add /tmp/base HEAD~1 --detach   # the tree to compare against

How the README's change table measures a change: each round runs every variant once, in
alternating order (A B, then B A), as whole processes from spawn to exit on the same clip; each
variant's wall and CPU (the child's rusage) are divided by the first variant's in the same round,
and the medians of those paired ratios are printed with the range. The host's speed drifts by
10-30% from minute to minute here; pairing within a round cancels the drift that is slower than
a round, and many rounds (12-24) the rest. A variant is ``NAME=SRC`` (``PYTHONPATH=SRC``: a
checkout's ``src`` folder, byte-compiled first as ``run.py`` does) or ``loop`` (the
opencv-openvino baseline, ``baseline_openvino.py``). ``--inputs N`` runs the clip N times in one
``video run`` (the loop always takes one input). ``NAME=SRC:FLAGS`` adds ``video run`` flags to
that variant (``change=src:--decode-threads 2``), to compare a run option on one tree.
"""

from __future__ import annotations

import argparse
import compileall
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from clip import KINDS, benchmark_clip

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


@dataclass
class Variant:
    name: str
    src: Path | None  # None: the opencv-openvino loop
    flags: tuple[str, ...] = ()  # extra ``video run`` flags
    runs: list[tuple[float, float]] = field(default_factory=list)  # (wall s, CPU s)


def parse_variant(text: str) -> Variant:
    if text == "loop":
        return Variant("loop", None)
    name, sep, rest = text.partition("=")
    src, _, flags = rest.partition(":")
    if not sep or not name or not Path(src, "frameserve").is_dir():
        raise SystemExit(
            "variant: expected NAME=SRC[:FLAGS] with SRC/frameserve a folder, or loop; "
            f"got {text!r}"
        )
    return Variant(name, Path(src).resolve(), tuple(flags.split()))


def command(v: Variant, clips: list[Path], pipeline: str, repository: Path, out: Path) -> list[str]:
    python = sys.executable
    if v.src is None:
        script = HERE / "baseline_openvino.py"
        return [
            python,
            str(script),
            str(clips[0]),
            str(repository / pipeline),
            str(out / "r.jsonl"),
        ]
    cli = Path(python).parent / "frameserve"  # the console script; PYTHONPATH picks the tree
    return [
        str(cli), "video", "run", *map(str, clips), "--pipeline", pipeline,
        "--repository", str(repository), "--out", str(out), *v.flags,
    ]  # fmt: skip


def run_once(argv: list[str], src: Path | None, out: Path) -> tuple[float, float]:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])}... failed:\n{done.stderr[-2000:]}")
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return wall, cpu


def paired(v: Variant, base: Variant) -> tuple[list[float], list[float]]:
    walls = [a[0] / b[0] for a, b in zip(v.runs, base.runs, strict=True)]
    cpus = [a[1] / b[1] for a, b in zip(v.runs, base.runs, strict=True)]
    return walls, cpus


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "variants", nargs="+", metavar="NAME=SRC[:FLAGS]|loop", help="the first is the base"
    )
    parser.add_argument("--clip", choices=KINDS, default="detail")
    parser.add_argument("--pipeline", default="faces")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--frames", type=int, default=2400)
    parser.add_argument("--inputs", type=int, default=1, help="the clip N times in one run")
    parser.add_argument("--repository", type=Path, default=ROOT / "models")
    parser.add_argument("--cache", type=Path, default=HERE / "clips")
    args = parser.parse_args()
    variants = [parse_variant(t) for t in args.variants]
    for v in variants:
        if v.src is not None:
            compileall.compile_dir(v.src / "frameserve", quiet=1)
    clip = benchmark_clip(args.clip, args.frames, args.cache)
    with tempfile.TemporaryDirectory(prefix="paired-") as tmp:
        work = Path(tmp)
        clips = [clip]
        if args.inputs > 1:  # distinct names: one results file each
            clips = [work / f"{clip.stem}-{i}.mp4" for i in range(args.inputs)]
            for link in clips:
                link.symlink_to(clip)
        for r in range(args.rounds):
            order = variants if r % 2 == 0 else variants[::-1]
            for v in order:
                argv = command(v, clips, args.pipeline, args.repository, work / "out")
                v.runs.append(run_once(argv, v.src, work / "out"))
            line = "  ".join(
                f"{v.name} {v.runs[-1][0]:.2f} s / {v.runs[-1][1]:.2f} s CPU" for v in variants
            )
            print(f"round {r}: {line}", flush=True)  # noqa: T201
    base = variants[0]
    print(f"\n{args.pipeline} on {args.clip}, {args.rounds} rounds, against {base.name}:")  # noqa: T201
    for v in variants:
        walls, cpus = paired(v, base)
        print(  # noqa: T201
            f"{v.name:>12}: wall median {statistics.median(r[0] for r in v.runs):.2f} s, "
            f"CPU {statistics.median(r[1] for r in v.runs):.2f} s | paired wall "
            f"{statistics.median(walls):.3f} ({min(walls):.3f}-{max(walls):.3f}), "
            f"CPU {statistics.median(cpus):.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
