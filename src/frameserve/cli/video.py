"""``frameserve video run``: argument parsing and the terminal (progress bar, profile)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from frameserve.cli.args import add_model_cache, model_cache_dir, positive_int


def add_video(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    video = sub.add_parser("video", help="run video pipelines over files")
    vsub = video.add_subparsers(dest="video_command", required=True)
    p = vsub.add_parser(
        "run",
        help="run a pipeline over video files in this process (no server needed)",
        description="Decode -> sample -> pre-process -> batched inference -> track -> "
        "results (OUT/<stem>.jsonl), the per-video summary (OUT/<stem>.summary.json, as the "
        "pipeline's summary: block says), mask tracks and re-encoded video.",
    )
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="video files")
    p.add_argument("--pipeline", required=True, metavar="NAME|FILE",
                   help="built-in (faces, person-mask, ocr, classify, moderation, quality, "
                        "enhance, fruc), a pipeline or model of the repository, or a pipeline "
                        "YAML file")  # fmt: skip
    p.add_argument("--repository", type=Path, default=Path("models"), help="default: ./models")
    p.add_argument("--out", type=Path, default=Path("out"), help="default: ./out")
    p.add_argument("--sample", default=None, metavar="all|every:N|fps:F|keyframes",
                   help="which frames to run (default: the pipeline's)")  # fmt: skip
    p.add_argument("--video-out", action="store_true",
                   help="also write OUT/<stem>.mp4 with overlays (H.264, audio kept)")  # fmt: skip
    p.add_argument("--mask-track", action="store_true",
                   help="also write OUT/<stem>.masks.jsonl (polygons per frame)")  # fmt: skip
    p.add_argument("--decode-threads", type=positive_int, default=0, metavar="N",
                   help="FFmpeg threads per input (default: the core budget)")  # fmt: skip
    p.add_argument("--inflight", type=positive_int, default=0, metavar="N",
                   help="frames in flight per input (default: 2 x max_batch_size x instances "
                        "/ inputs); frameserve tune --pipeline picks both")  # fmt: skip
    p.add_argument("--profile", action="store_true",
                   help="print the summary and stage profile as JSON on stdout (script "
                        "models are asked for their own stage times)")  # fmt: skip
    p.add_argument("--params", default=None, metavar="JSON|@FILE",
                   help="a JSON object for the pipeline's script models, given to their "
                        "configure() once per input (docs/scripts.md)")  # fmt: skip
    add_model_cache(p)
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="warning")


def run_video(args: argparse.Namespace) -> int:
    from frameserve.cli import logs
    from frameserve.errors import FrameserveError
    from frameserve.serving.local import LocalServer
    from frameserve.serving.server import ServerSettings
    from frameserve.video.config import load_video_pipeline
    from frameserve.video.decode import probe
    from frameserve.video.frames import Sampling
    from frameserve.video.params import read_params
    from frameserve.video.run import RunOptions, VideoRun, describe_input

    logs.configure(args.log_level, "text")
    try:
        name, config = load_video_pipeline(args.pipeline, args.repository)
        sample = Sampling.parse(args.sample) if args.sample else None
        params = read_params(args.params) if args.params is not None else None
        infos = [probe(p) for p in args.inputs]  # a file that is not a video fails first
        options = RunOptions(
            args.out, sample, args.video_out, args.mask_track, args.inflight, args.decode_threads,
            params=params, profiling=args.profile,
        )  # fmt: skip
        settings = ServerSettings(
            repository=args.repository,
            model_control_mode="explicit",
            load_models=tuple(config.models),
            model_cache_dir=model_cache_dir(args),
        )
        for info in infos:
            print(describe_input(info), file=sys.stderr)  # noqa: T201
        with LocalServer(settings) as local:
            run = VideoRun(local, name, config, args.inputs, options)
            if not sys.stderr.isatty():  # no bar to draw: tqdm is not even imported
                summary = run.run()
            else:
                from tqdm import tqdm

                with tqdm(
                    total=run.expected_frames() or None,
                    unit="frame",
                    desc=name,
                    file=sys.stderr,
                    dynamic_ncols=True,
                ) as bar:
                    summary = run.run(bar.update)
    except FrameserveError as err:
        print(f"frameserve video run: {err}", file=sys.stderr)  # noqa: T201
        return 130 if "interrupted" in err.message else 1
    except KeyboardInterrupt:
        print("frameserve video run: interrupted", file=sys.stderr)  # noqa: T201
        return 130
    print(  # noqa: T201
        f"{summary.frames} frames in {summary.wall_s:.2f} s ({summary.fps:.1f} fps); "
        f"outputs in {args.out}",
        file=sys.stderr,
    )
    for stream in summary.streams:
        if stream.corrupt_skipped:
            skipped = stream.corrupt_skipped
            print(f"{stream.input}: skipped {skipped} corrupt frame(s)", file=sys.stderr)  # noqa: T201  # noqa: T201
    print(summary.profile.table(), file=sys.stderr)  # noqa: T201
    if args.profile:
        print(json.dumps(summary.to_json(), indent=2))  # noqa: T201
    return 0
