"""The ``enhance`` pipeline's speed: ``frameserve video run --pipeline enhance`` against the same
FFmpeg filter chain in the PyAV loop a user writes by hand, side by side on one clip.

```sh
.venv/bin/python benchmarks/video/enhance.py                      # detail clip, 2400 frames
.venv/bin/python benchmarks/video/enhance.py --frames 240 --repeats 1   # a smoke check
```

The clip is the video benchmark's ``detail`` clip (``clip.py``: 1280x720 H.264 at 30 fps, strong
per-frame sensor noise, 2400 frames by default, cached in ``clips/``). Contenders, each a whole
process, alternated within each round:

- **frameserve**: ``frameserve video run CLIP --pipeline enhance --repository EMPTY --out TMP
  --profile`` (decode, the filter chain in the decoder thread, RGB for the sink, libx264 with the
  pipeline's ``video_out`` settings, the audio copied when there is one);
- **pyav-loop** (``--pyav-loop`` below): decode -> the same chain in an ``av.filter.Graph`` ->
  libx264 with the same preset and crf, frames kept in YUV from decoder to encoder (no RGB).

Reported: fps (frames / wall seconds of the process, start-up included) per contender, median
over the rounds, and their ratio. JSON and Markdown go to ``results/enhance.*``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))


def pyav_loop(clip: Path, out: Path) -> int:
    """The hand-written loop: the enhance chain and encoder settings, frames stay YUV."""
    import av
    import av.filter
    import yaml

    from frameserve.video.config import builtin_pipelines, parse_video_pipeline

    config = parse_video_pipeline(yaml.safe_load(builtin_pipelines()["enhance"]), "enhance")
    assert config.filters is not None
    frames = 0
    with av.open(str(clip)) as source, av.open(str(out), "w") as sink:
        video = source.streams.video[0]
        video.thread_type = "AUTO"
        encoder = sink.add_stream("libx264", rate=video.average_rate)
        encoder.width, encoder.height = video.codec_context.width, video.codec_context.height
        encoder.pix_fmt = "yuv420p"
        encoder.time_base = video.time_base
        spec = config.video_out
        encoder.options = {"preset": spec.preset, "crf": str(spec.crf)}
        graph = av.filter.Graph()
        nodes = [graph.add_buffer(template=video)]
        nodes += [graph.add(step.name, step.args or None) for step in config.filters.steps]
        nodes.append(graph.add("buffersink"))
        graph.link_nodes(*nodes)
        graph.configure()

        def drain() -> int:
            n = 0
            while True:
                try:
                    filtered = graph.vpull()
                except (av.error.BlockingIOError, av.error.EOFError):
                    return n
                sink.mux(encoder.encode(filtered))
                n += 1

        for frame in source.decode(video):
            graph.vpush(frame)
            frames += drain()
        graph.vpush(None)
        frames += drain()
        sink.mux(encoder.encode(None))
    return frames


def _frameserve(clip: Path, work: Path) -> dict[str, Any]:
    repository, out = work / "models", work / "out"
    repository.mkdir(exist_ok=True)
    cmd = [
        sys.executable, "-m", "frameserve.cli.main", "video", "run", str(clip),
        "--pipeline", "enhance", "--repository", str(repository), "--out", str(out), "--profile",
    ]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
    wall = time.perf_counter() - started
    summary = json.loads(done.stdout)
    return {"frames": summary["frames"], "wall_s": wall, "run_fps": summary["fps"],
            "stages": summary["stages"]}  # fmt: skip


def _pyav(clip: Path, work: Path) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__)), "--pyav-loop", str(clip), str(work / "loop.mp4")]
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
    wall = time.perf_counter() - started
    return {"frames": int(done.stdout.strip()), "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=2400)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clip", type=Path, help="a clip of your own instead of detail")
    parser.add_argument("--cache", type=Path, default=HERE / "clips")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--pyav-loop", nargs=2, type=Path, metavar=("CLIP", "OUT"),
                        help=argparse.SUPPRESS)  # fmt: skip
    args = parser.parse_args()
    if args.pyav_loop:
        print(pyav_loop(*args.pyav_loop))  # noqa: T201
        return
    if args.clip is None:
        from clip import benchmark_clip

        args.cache.mkdir(parents=True, exist_ok=True)
        args.clip = benchmark_clip("detail", args.frames, args.cache)
    rounds: dict[str, list[dict[str, Any]]] = {"frameserve": [], "pyav-loop": []}
    for n in range(args.repeats):
        for name, contender in (("frameserve", _frameserve), ("pyav-loop", _pyav)):
            with tempfile.TemporaryDirectory() as work:
                result = contender(args.clip, Path(work))
            result["fps"] = result["frames"] / result["wall_s"]
            rounds[name].append(result)
            print(f"round {n + 1} {name}: {result['fps']:.1f} fps", file=sys.stderr)  # noqa: T201
    median = {k: statistics.median(r["fps"] for r in v) for k, v in rounds.items()}
    report = {
        "clip": Path(args.clip).name,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": _cores()},
        "median_fps": median,
        "ratio": median["frameserve"] / median["pyav-loop"],
        "rounds": rounds,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "enhance.json").write_text(json.dumps(report, indent=2) + "\n")
    table = (
        f"Clip {Path(args.clip).name}, {_cores()} cores, {args.repeats} rounds\n\n"
        "| contender | median fps |\n|---|---|\n"
        + "".join(f"| {k} | {v:.1f} |\n" for k, v in median.items())
        + f"\nframeserve / pyav-loop: {report['ratio']:.2f}x\n"
    )
    (args.out / "enhance.md").write_text(table)
    print(table)  # noqa: T201


def _cores() -> int:
    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    main()
