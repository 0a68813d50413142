"""The toolkit benchmark: precision (FP32/BF16/INT8), tuned vs start config, search vs grid.

    .venv/bin/python benchmarks/toolkit/run.py [--parts precision tuned search] [--models ...]

Works on copies of the zoo models (pulled into a temporary repository from the wheel cache);
writes benchmarks/toolkit/results/latest.{json,md}. Run it on a quiet machine: every figure is
measured side by side within one run, but two cores leave no room for other work.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import precision  # noqa: E402
import search  # noqa: E402
import texts  # noqa: E402
from common import cpu_model, git_commit, write_latest  # noqa: E402
from video.clip import make_benchmark_clip  # noqa: E402

from frameserve.backends.openvino_quantize import QuantizeSettings  # noqa: E402
from frameserve.tools.tune import TuneSettings, tune_model  # noqa: E402
from frameserve.tools.tune_report import start_and_best  # noqa: E402
from frameserve.zoo import default_cache_dir, pull  # noqa: E402

# p99 targets for "tuned vs start": a few times one request's latency on this machine
P99_MS = {"faces": 25.0, "faces-near": 20.0, "person-mask": 40.0, "text-det": 1500.0}
PRECISION_MODELS = ("faces", "faces-near", "person-mask", "text-det")
# What worked best per model (see the README): the detectors keep their score/box heads in
# float (INT8 there adds false faces); PP-OCR's DB head wants asymmetric activations.
QUANTIZE = {
    "faces": QuantizeSettings(float_head=True),
    "faces-near": QuantizeSettings(float_head=True),
    "person-mask": QuantizeSettings(),
    "text-det": QuantizeSettings(preset="mixed"),
}


def part_precision(
    zoo: Path, work: Path, clip: Path, quick: bool, models: list[str]
) -> list[dict[str, Any]]:
    pages = texts.text_images(work / "text-pages")
    out = []
    for model in models:
        calibration = pages if model == "text-det" else clip
        t0 = time.time()
        row = precision.run(
            zoo / model, work / f"precision-{model}", calibration,
            subset=40 if quick else (80 if model == "text-det" else 120),
            settings=QUANTIZE[model], repeats=1 if quick else 3,
            seconds=1.5 if quick else 4.0, concurrency=8 if model != "text-det" else 2,
        )  # fmt: skip
        print(f"precision {model}: {time.time() - t0:.0f} s", json.dumps(row["rows"]), flush=True)  # noqa: T201
        out.append(row)
    return out


def part_tuned(zoo: Path, work: Path, quick: bool) -> list[dict[str, Any]]:
    out = []
    for model, p99 in P99_MS.items():
        repo = work / f"tuned-{model}"
        shutil.copytree(zoo / model, repo / model, symlinks=True)
        settings = TuneSettings(p99_ms=p99, budget_s=45 if quick else 100, finalists=3)
        result = tune_model(repo, model, settings)
        start, best = start_and_best(result)
        out.append({
            "model": model, "p99_ms": p99, "trials": result.screened,
            "space": result.space.size, "minutes": result.seconds / 60,
            "start": start.candidate.label() if start else None,
            "start_throughput": start.throughput if start else 0.0,
            "start_p99": start.p99_ms if start else None,
            "best": best.candidate.label() if best else None,
            "best_throughput": best.throughput if best else 0.0,
            "best_p99": best.p99_ms if best else None,
        })  # fmt: skip
        print("tuned", json.dumps(out[-1]), flush=True)  # noqa: T201
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--parts", nargs="+", default=["precision", "tuned", "search"])
    parser.add_argument("--models", nargs="+", default=list(PRECISION_MODELS))
    parser.add_argument("--quick", action="store_true", help="short windows (a smoke run)")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    results: dict[str, Any] = {
        "machine": {"cpu": cpu_model(), "cores": len(os.sched_getaffinity(0))},
        "commit": git_commit(HERE),
    }
    with tempfile.TemporaryDirectory(prefix="frameserve-toolkit-") as tmp:
        work = Path(tmp)
        zoo = work / "zoo"
        pull(None, zoo, cache_dir=default_cache_dir())
        if "precision" in args.parts:
            clip = make_benchmark_clip(work / "clip.mp4", frames=240 if args.quick else 480)
            results["precision"] = part_precision(zoo, work, clip, args.quick, args.models)
        if "tuned" in args.parts:
            results["tuned"] = part_tuned(zoo, work, args.quick)
        if "search" in args.parts:
            repo = work / "search"
            shutil.copytree(zoo / "faces", repo / "faces", symlinks=True)
            results["search"] = search.run(repo, "faces", 25.0, None)
            print("search", json.dumps(results["search"]), flush=True)  # noqa: T201
    from report import markdown

    write_latest(args.out, results, markdown(results), indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
