"""Video benchmark: frameserve video pipelines vs a naive sequential loop, with the ceilings.

    .venv/bin/python benchmarks/video/run.py [--frames 720] [--repeats 3] [--repository models]

For each of ``faces`` and ``person-mask`` on the same 1280x720 H.264 clip, side by side in one
run (alternating, medians over ``--repeats``): frameserve's ``video run`` (in-process, JSONL
out) vs the naive loop (``naive.py``); each stage alone (``ceilings.py``) and the bound
``cores / CPU seconds per frame``; and 4 concurrent inputs vs one. Writes ``results/latest.json``
and ``results/latest.md``. Nothing is asserted: machines are noisy, the table says how noisy.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/common.py

from ceilings import decode_only, stages_alone
from clip import make_benchmark_clip
from common import cpu_model, git_commit, write_latest
from naive import naive_run

from frameserve.cpu import detect_cpu_budget
from frameserve.serving.local import LocalServer
from frameserve.serving.server import ServerSettings
from frameserve.video.config import load_video_pipeline
from frameserve.video.run import RunOptions, VideoRun

HERE = Path(__file__).resolve().parent
MODELS = ("faces", "person-mask")


def say(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def ours(local: LocalServer, pipeline: str, inputs: list[Path], out: Path) -> dict:
    name, config = load_video_pipeline(pipeline, local.server.repository.root)
    run = VideoRun(local, name, config, inputs, RunOptions(out=out))
    cpu = time.process_time()
    summary = run.run()
    cpu = time.process_time() - cpu
    return {
        "fps": summary.fps,
        "cpu_ms_per_frame": cpu / summary.frames * 1000,
        "frames": summary.frames,
        "mean_batch": summary.batches,
        "stages": summary.profile.to_json(),
    }


def median(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def bench_model(model: str, video: Path, repo: Path, repeats: int, work: Path) -> dict:
    cores = detect_cpu_budget().cores
    settings = ServerSettings(repository=repo, model_control_mode="explicit", load_models=(model,))
    track = model == "faces"
    rows_ours, rows_naive, rows_four = [], [], []
    with LocalServer(settings) as local:
        ours(local, model, [video], work / "warmup")  # first-run costs (imports, pools)
        for r in range(repeats):
            rows_ours.append(ours(local, model, [video], work / f"ours-{r}"))
            frames, wall, cpu = naive_run(video, repo / model, work / f"naive-{r}.jsonl", track)
            rows_naive.append({"fps": frames / wall, "cpu_ms_per_frame": cpu / frames * 1000})
            say(f"{model} #{r}: frameserve {rows_ours[-1]['fps']:.1f} fps, "
                f"naive {rows_naive[-1]['fps']:.1f} fps")  # fmt: skip
        for r in range(max(1, repeats - 1)):
            rows_four.append(ours(local, model, [video] * 4, work / f"four-{r}"))
            say(f"{model} 4 inputs #{r}: {rows_four[-1]['fps']:.1f} fps aggregate")
    decode, images = decode_only(video, cores)
    alone = {"decode": decode, **stages_alone(repo / model, images, cores)}
    cpu_per_frame = sum(v["cpu_ms_per_frame"] for v in alone.values()) / 1000
    bound = cores / cpu_per_frame
    fs, naive = median(rows_ours, "fps"), median(rows_naive, "fps")
    four = median(rows_four, "fps")
    return {
        "model": model,
        "frameserve_fps": fs,
        "naive_fps": naive,
        "speedup": fs / naive,
        "frameserve_cpu_ms_per_frame": median(rows_ours, "cpu_ms_per_frame"),
        "naive_cpu_ms_per_frame": median(rows_naive, "cpu_ms_per_frame"),
        "alone": alone,
        "bound_fps": bound,
        "fraction_of_bound": fs / bound,
        "four_streams_fps": four,
        "four_vs_one": four / fs,
        "runs": {"frameserve": rows_ours, "naive": rows_naive, "four_streams": rows_four},
    }


def markdown(results: list[dict], meta: dict) -> str:
    lines = [
        f"Machine: {meta['cpu']}, {meta['cores']} cores; clip: {meta['frames']} frames "
        f"1280x720 H.264; medians of {meta['repeats']} runs; commit {meta['commit']}.",
        "",
        "| pipeline | frameserve fps | naive loop fps | speed-up | CPU ms/frame (ours / naive) "
        "| bound fps | of bound | 4 inputs fps (vs 1) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['model']} | {r['frameserve_fps']:.1f} | {r['naive_fps']:.1f} | "
            f"{r['speedup']:.2f}x | {r['frameserve_cpu_ms_per_frame']:.2f} / "
            f"{r['naive_cpu_ms_per_frame']:.2f} | {r['bound_fps']:.1f} | "
            f"{r['fraction_of_bound']:.0%} | {r['four_streams_fps']:.1f} "
            f"({r['four_vs_one']:.2f}x) |"
        )
    lines += ["", "Each stage alone (throughput, and CPU ms per frame over all threads):", "",
              "| pipeline | decode + RGB | pre-processing | inference (served config) | "
              "post-processing + track + JSON |", "|---|---|---|---|---|"]  # fmt: skip
    for r in results:
        a = r["alone"]
        cells = [
            f"{a[k]['fps']:.0f} fps, {a[k]['cpu_ms_per_frame']:.2f} ms"
            for k in ("decode", "preprocess", "inference", "postprocess")
        ]
        lines.append(f"| {r['model']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=720)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--repository", type=Path, default=HERE.parent.parent / "models")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args()
    budget = detect_cpu_budget()
    with tempfile.TemporaryDirectory(prefix="frameserve-video-bench-") as tmp:
        work = Path(tmp)
        say(f"making the clip ({args.frames} frames)...")
        video = make_benchmark_clip(work / "clip.mp4", args.frames)
        results = [
            bench_model(m, video, args.repository.resolve(), args.repeats, work / m)
            for m in args.models.split(",")
        ]
    meta = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cores": budget.cores,
        "frames": args.frames,
        "repeats": args.repeats,
        "commit": git_commit(HERE),
    }
    write_latest(args.out, {"meta": meta, "results": results}, markdown(results, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
