"""The applications' models and pipelines: latency, throughput and fps, on this machine.

    .venv/bin/python benchmarks/apps/run.py [--frames 2400] [--repeats 3] [--repository models]

1. Each application model (``nsfw``, ``quality``, ``example-script``) in-process with
   ``frameserve bench``: latency at batch 1 (one request at a time), then the best throughput
   over batch sizes up to the model's ``max_batch_size`` at two requests in flight
   (inferences per second), at the precision the zoo serves it (the runtime's fastest: bf16
   on CPUs with bf16 instructions).
2. Each application pipeline on the video benchmark's 1280x720 ``pan`` clip (``video/clip.py``,
   ``--frames`` frames, 30 fps): ``frameserve video run`` as a process, spawn to exit, at the
   pipeline's own sampling, with ``--video-out`` for the transformations (``enhance``).
   ``classify`` runs the zoo's ``text-cls`` as the repository's ``classifier`` (the zoo has no
   general-purpose image classifier). Reported: input frames per second (the clip's frames /
   wall), processed frames per second and the real-time factor.

Medians over ``--repeats`` rounds, the pipelines taking turns. Nothing is asserted. Writes
``results/latest.json`` and ``results/latest.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # benchmarks/common.py
sys.path.insert(0, str(HERE.parent / "video"))  # clip.py

from clip import FPS, benchmark_clip  # noqa: E402
from common import cpu_model, git_commit, write_latest  # noqa: E402

FRAMESERVE = Path(sys.executable).parent / "frameserve"
MODELS = {  # model -> (--shape for inputs it leaves open, batch sizes up to its max_batch_size)
    "nsfw": ([], ["1", "4", "8"]),
    "quality": (["--shape", "image:432,768,3"], ["1", "2", "4"]),
    "example-script": ([], ["1", "4", "8"]),
}
PIPELINES = {  # pipeline -> extra video run arguments
    "moderation": [],
    "classify": [],
    "quality": [],
    "enhance": ["--video-out"],
    "example-script": [],
}


def say(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def bench_model(
    repository: Path, model: str, shape: list[str], batches: list[str]
) -> dict[str, Any]:
    """Latency at batch 1 and the best throughput of a small batch sweep."""
    base = [str(FRAMESERVE), "bench", "--repository", str(repository), "--model", model,
            "--duration", "5", "--warmup", "1", "--json", *shape]  # fmt: skip
    one = json.loads(
        subprocess.run(
            [*base, "--batch-size", "1", "--concurrency", "1"],
            capture_output=True, text=True, check=True,
        ).stdout
    )[0]  # fmt: skip
    sweep = json.loads(
        subprocess.run(
            [*base, "--batch-size", *batches, "--concurrency", "2"],
            capture_output=True, text=True, check=True,
        ).stdout
    )  # fmt: skip
    best = max(sweep, key=lambda p: p["throughput"])
    return {"model": model, "batch1": one, "best": best}


def run_pipeline(
    pipeline: str, clip: Path, repository: Path, out: Path, extra: list[str]
) -> dict[str, Any]:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [str(FRAMESERVE), "video", "run", str(clip), "--pipeline", pipeline,
           "--repository", str(repository), "--out", str(out), "--profile", *extra]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - started
    summary = json.loads(done.stdout)
    stream = summary["streams"][0]
    return {
        "pipeline": pipeline,
        "wall_s": wall,
        "decoded": stream["decoded"],
        "processed": stream["processed"],
        "input_fps": stream["decoded"] / wall,
        "processed_fps": stream["processed"] / wall,
        "realtime": stream["decoded"] / FPS / wall,
    }


def repository_with_classifier(source: Path, work: Path) -> Path:
    """A copy of the zoo's models plus ``classifier`` (a copy of ``text-cls``): the server
    refuses model folders that resolve outside its repository, so links would not do."""
    repo = work / "models"
    repo.mkdir()
    for entry in source.iterdir():
        if entry.is_dir():
            shutil.copytree(entry, repo / entry.name)
    shutil.copytree(source / "text-cls", repo / "classifier")
    return repo


def medians(rows: list[dict[str, Any]], key: str) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for name in dict.fromkeys(r[key] for r in rows):
        mine = [r for r in rows if r[key] == name]
        out[name] = {
            k: statistics.median(r[k] for r in mine)
            for k in mine[0]
            if isinstance(mine[0][k], int | float)
        }
    return out


def markdown(models: list[dict[str, Any]], pipelines: dict[str, dict[str, float]],
             meta: dict[str, Any]) -> str:  # fmt: skip
    lines = [
        f"# Applications benchmark ({meta['date']}, commit {meta['commit']})",
        "",
        f"{meta['cpu']}, {meta['cores']} cores; {meta['frames']}-frame 1280x720 `pan` clip; "
        f"medians of {meta['repeats']} rounds.",
        "",
        "| model | batch 1 p50 ms | batch 1 p99 ms | batch 1 inf/s | best inf/s | at batch |",
        "|---|---|---|---|---|---|",
    ]
    for m in models:
        one, best = m["batch1"], m["best"]
        lines.append(
            f"| {m['model']} | {one['p50_ms']:.1f} | {one['p99_ms']:.1f} | "
            f"{one['throughput']:.1f} | {best['throughput']:.1f} | {best['batch_size']} |"
        )
    lines += [
        "",
        "| pipeline | wall s | input fps | processed fps | frames processed | x real time |",
        "|---|---|---|---|---|---|",
    ]
    for name, p in pipelines.items():
        lines.append(
            f"| {name} | {p['wall_s']:.2f} | {p['input_fps']:.1f} | {p['processed_fps']:.1f} | "
            f"{p['processed']:.0f} of {p['decoded']:.0f} | {p['realtime']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=2400)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--repository", type=Path, default=HERE.parent.parent / "models")
    parser.add_argument("--cache", type=Path, default=HERE.parent / "video" / "clips")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    clip = benchmark_clip("pan", args.frames, args.cache)
    models = []
    for model, (shape, batches) in MODELS.items():
        say(f"bench {model}...")
        models.append(bench_model(args.repository.resolve(), model, shape, batches))
    rows = []
    with tempfile.TemporaryDirectory(prefix="frameserve-apps-bench-") as tmp:
        work = Path(tmp)
        repo = repository_with_classifier(args.repository.resolve(), work)
        for r in range(args.repeats):
            for pipeline, extra in PIPELINES.items():
                say(f"round {r + 1}: {pipeline}...")
                rows.append(run_pipeline(pipeline, clip, repo, work / "out", extra))
    meta = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cores": len(os.sched_getaffinity(0)),
        "frames": args.frames,
        "repeats": args.repeats,
        "commit": git_commit(HERE),
    }
    pipelines = medians(rows, "pipeline")
    data = {"meta": meta, "models": models, "pipelines": pipelines, "runs": rows}
    write_latest(args.out, data, markdown(models, pipelines, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
