"""Classification and per-video summary costs.

    .venv/bin/python benchmarks/video/summary_bench.py [--frames 2400] [--repeats 3]
        [--repository models] [--cache benchmarks/video/clips]

1. ``frameserve video run --pipeline classify`` (a process, spawn to exit) on the video
   benchmark's 1280x720 ``pan`` clip (``clip.py``), with the zoo's ``text-cls`` serving as the
   repository's ``classifier`` (the zoo has no general-purpose image classifier): at the
   pipeline's own sampling (``fps:2``) and on every frame (``--sample all``). Reported: input
   frames per second (decoded / wall) and processed frames per second.
2. The time ``video.summary.summarize_file`` takes for a ``--frames``-line results file of
   each result kind (lines made here as the pipelines write them: two tracked faces, top-5
   classes, moderation verdicts, quality scores with defects, three texts, 1280x720 masks), and
   for the real classes file of run 1.

Medians over ``--repeats``. Nothing is asserted; the machine's load is printed with the table.
"""

from __future__ import annotations

import argparse
import base64
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

import cv2
import numpy as np
import orjson

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # benchmarks/common.py

from clip import benchmark_clip  # noqa: E402
from common import cpu_model  # noqa: E402

from frameserve.video.summary import summarize_file  # noqa: E402

FRAMESERVE = Path(sys.executable).parent / "frameserve"


def classify_runs(args: argparse.Namespace, clip: Path, work: Path) -> list[dict[str, Any]]:
    repo = work / "models"
    shutil.copytree(args.repository / "text-cls", repo / "classifier")
    rows = []
    for label, extra in (("classify (fps:2)", []), ("classify --sample all", ["--sample", "all"])):
        runs = []
        for r in range(args.repeats):
            out = work / f"out-{len(rows)}-{r}"
            cmd = [str(FRAMESERVE), "video", "run", str(clip), "--pipeline", "classify",
                   "--repository", str(repo), "--out", str(out), "--profile", *extra]  # fmt: skip
            started = time.perf_counter()
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            wall = time.perf_counter() - started
            profile = json.loads(done.stdout)
            runs.append((wall, profile["streams"][0]["decoded"], profile["frames"], out))
        wall = statistics.median(r[0] for r in runs)
        decoded, processed = runs[0][1], runs[0][2]
        rows.append(
            {
                "run": label,
                "wall_s": round(wall, 2),
                "input_fps": round(decoded / wall, 1),
                "processed_fps": round(processed / wall, 1),
                "processed": processed,
                "results": str(runs[0][3] / f"{clip.stem}.jsonl"),
            }
        )
    return rows


def _mask_png(i: int) -> dict[str, Any]:
    mask = np.zeros((720, 1280), np.uint8)
    cv2.ellipse(mask, (400 + i % 400, 400), (180, 300), 0, 0, 360, 255, -1)
    ok, data = cv2.imencode(".png", mask)
    assert ok
    return {"png": base64.b64encode(data.tobytes()).decode(), "width": 1280, "height": 720}


def synthetic_line(kind: str, i: int, masks: list[dict[str, Any]]) -> dict[str, Any]:
    line: dict[str, Any] = {"frame": i, "pts": i / 30, "pts_ticks": i}
    box = {"box": [10.0, 20.0, 110.0, 140.0], "score": 0.9}
    if kind == "detections":
        line["detections"] = [
            {**box, "label": "face", "track_id": 1 + i // 300 + k} for k in (0, 9)
        ]
    elif kind == "classes":
        line["classes"] = [
            {"label": f"c{(i // 50 + k) % 20}", "score": 0.5 / (k + 1)} for k in range(5)
        ]
    elif kind == "moderation":
        unsafe = (i // 100) % 5 == 0
        line["detections"] = [{**box, "label": "FACE_FEMALE"}]
        labels = ["BELLY_EXPOSED"] if unsafe else []
        line["verdict"] = {"label": "unsafe" if unsafe else "safe", "labels": labels, "score": 0.7}
    elif kind == "quality":
        line["quality"] = {"score": 60 + 30 * np.sin(i / 40), "method": "brisque"}
        line["defects"] = ["black"] if i % 600 < 30 else []
    elif kind == "texts":
        texts = [f"caption {i // 90 + k}" for k in range(3)]
        line["texts"] = [{"polygon": [[0, 0]] * 4, "text": t, "score": 0.9} for t in texts]
    elif kind == "masks":
        line["mask"] = masks[i % len(masks)]
    return line


def summary_costs(args: argparse.Namespace, work: Path, real: list[Path]) -> list[dict[str, Any]]:
    masks = [_mask_png(i) for i in range(0, 400, 40)]  # ten distinct masks, reused
    files = []
    for kind in ("detections", "classes", "moderation", "quality", "texts", "masks"):
        path = work / f"{kind}.jsonl"
        with path.open("wb") as f:
            for i in range(args.frames):
                line = synthetic_line(kind, i, masks)
                f.write(orjson.dumps(line, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")
        files.append((kind, path))
    files += [(f"real: classify --sample all ({p.name})", p) for p in real]
    rows = []
    for name, path in files:
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            summarize_file(path)
            times.append(time.perf_counter() - started)
        lines = sum(1 for _ in path.open("rb"))
        rows.append(
            {
                "results": name,
                "lines": lines,
                "mb": round(path.stat().st_size / 1e6, 2),
                "ms": round(1000 * statistics.median(times), 1),
            }
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=2400)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--repository", type=Path, default=HERE.parent.parent / "models")
    parser.add_argument("--cache", type=Path, default=HERE / "clips")
    args = parser.parse_args()
    clip = benchmark_clip("pan", args.frames, args.cache)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        classify = classify_runs(args, clip, work)
        costs = summary_costs(args, work, [Path(classify[1]["results"])])
    print(f"# {cpu_model()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")  # noqa: T201
    print(f"# clip {clip.name} (1280x720), {args.frames} frames, medians of {args.repeats}")  # noqa: T201
    print("| run | wall s | input fps | processed fps |")  # noqa: T201
    print("|---|---:|---:|---:|")  # noqa: T201
    for r in classify:
        print(f"| {r['run']} | {r['wall_s']} | {r['input_fps']} | {r['processed_fps']} |")  # noqa: T201
    print("\n| summary of | lines | MB | ms |")  # noqa: T201
    print("|---|---:|---:|---:|")  # noqa: T201
    for r in costs:
        print(f"| {r['results']} | {r['lines']} | {r['mb']} | {r['ms']} |")  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
