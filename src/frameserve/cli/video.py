"""``frameserve video run``: argument parsing and the terminal (progress bar, profile)."""

from __future__ import annotations

import argparse
import gc
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from frameserve.cli.args import add_model_cache, model_cache_dir, positive_int

if TYPE_CHECKING:
    from frameserve.cpu import CpuBudget
    from frameserve.video.config import VideoPipelineConfig
    from frameserve.video.plan import RunOptions
    from frameserve.video.warm import WarmWorker


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
                   help="FFmpeg threads per input (default: half the core budget shared by "
                        "the inputs, at least 1; the budget with filters:)")  # fmt: skip
    p.add_argument("--pin-decoders", action=argparse.BooleanOptionalAction, default=True,
                   help="bind each input's decode worker to a core of its own when the core "
                        "budget has one to spare beside inference (default: on)")  # fmt: skip
    p.add_argument("--second-decoder", action=argparse.BooleanOptionalAction, default=True,
                   help="one input whose decode worker has a core of its own: a second decode "
                        "worker decodes its last pieces (keyframe to keyframe) when the "
                        "inference cores would otherwise idle; the results are the same "
                        "(default: on)")  # fmt: skip
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
    add_ray_run(p)
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="warning")


def add_ray_run(p: argparse.ArgumentParser) -> None:
    """``--ray``: this process coordinates a Ray cluster that runs the chunks."""
    g = p.add_argument_group("Ray scale-out (docs/scale-out.md)")
    g.add_argument("--ray", default=None, metavar="auto|HOST:PORT",
                   help="run the inputs' chunks on this Ray cluster, this process coordinating; "
                        "every node needs frameserve[ray] and the repository at the same "
                        "path")  # fmt: skip
    g.add_argument("--ray-auth-token-file", type=Path, default=None, metavar="FILE",
                   help="the cluster's auth token (default: Ray's, ~/.ray/auth_token or "
                        "RAY_AUTH_TOKEN)")  # fmt: skip
    g.add_argument("--ray-chunk-seconds", type=float, default=10.0, metavar="S",
                   help="the least video per chunk (cut at keyframes)")  # fmt: skip


def _run_on_ray(args: argparse.Namespace, name: str, config: object, sample: object,
                params: object) -> int:  # fmt: skip
    """``video run --ray``: the cluster makes each input's results (and summary)."""
    from frameserve.scale.cluster import RaySettings
    from frameserve.scale.files import FileJob, run_files
    from frameserve.video.run import RunOptions
    from frameserve.video.streams import plan_outputs

    settings = RaySettings(args.ray, args.ray_auth_token_file, chunk_seconds=args.ray_chunk_seconds)
    if args.mask_track:
        print("frameserve video run: --ray: --mask-track is not distributed; "  # noqa: T201
              "run it without --ray", file=sys.stderr)  # fmt: skip
        return 2
    options = RunOptions(args.out, video_out=args.video_out)
    outputs = plan_outputs(args.inputs, options, config)  # type: ignore[arg-type]
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = [FileJob(p, o.jsonl, o.summary, o.video)
            for p, o in zip(args.inputs, outputs, strict=True)]  # fmt: skip
    results = run_files(settings, name, config, jobs, args.out, args.repository, sample, params)  # type: ignore[arg-type]
    for r in results:
        lost = f", {r.workers_lost} worker(s) lost and replaced" if r.workers_lost else ""
        print(f"{r.input}: {r.frames} frames in {r.chunks} chunks, {r.wall_s:.2f} s{lost}",  # noqa: T201
              file=sys.stderr)  # fmt: skip
    return 0


def run_video(args: argparse.Namespace) -> int:
    from frameserve.video import warm

    # Decode workers are forked once the inputs are planned, with the libraries this process
    # imported by then; where it cannot fork, they are spawned now, to import theirs while
    # this process imports the runtime and loads the models. The run ends those it does not
    # use (video.warm).
    wanted = 0 if args.ray is not None or args.video_out else len(args.inputs)
    workers = [] if warm.can_fork() else warm.start(wanted)
    try:
        return _run_video(args, workers, wanted)
    finally:
        for worker in workers:
            worker.close()


def resume_collector() -> None:
    """The garbage collector back on, where the console script paused it for the start-up
    (``cli.main.console``), with what start-up made frozen: the modules and models last as
    long as the process, and no later pass walks them. A caller that did not pause it (tests,
    ``main``) is left as it was."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def _warm_count(workers: list[WarmWorker], wanted: int) -> int:
    """Warm workers the run will have: those started, or those it forks after planning."""
    from frameserve.video.warm import MAX_INPUTS

    return len(workers) if workers or wanted > MAX_INPUTS else wanted


def _decoder_cores(
    args: argparse.Namespace, config: VideoPipelineConfig, options: RunOptions, workers: int
) -> tuple[RunOptions, CpuBudget]:
    """Each warm worker on cores of its own when the budget has one to spare beside inference
    (``cpu.decoder_cores``), and the models sized for the cores left; else as asked."""
    from frameserve.cpu import decoder_cores, detect_cpu_budget
    from frameserve.video.decode import default_decode_threads
    from frameserve.video.plan import decodes_in_workers

    budget = detect_cpu_budget()
    inputs = len(args.inputs)
    threads = args.decode_threads or default_decode_threads(
        budget.cores, inputs, config.filters is not None
    )
    options = replace(options, decode_threads=threads)
    if not (args.pin_decoders and workers == inputs and decodes_in_workers(config, options)):
        return options, budget
    cores = decoder_cores(inputs, threads, budget.cores)
    if not cores:
        return options, budget
    left = budget.without_cores(cores, "for the decode workers")
    options = replace(options, decoder_cores=tuple(cores))
    if args.second_decoder and inputs == 1 and left.cpus:  # video.split, where it applies
        from frameserve.video.plan import run_sampling, splits

        second = replace(options, second_cores=left.cpus)
        if splits(config, second, run_sampling(args.pipeline, config, second)):
            options = second
    return options, left


def _run_video(args: argparse.Namespace, workers: list[WarmWorker], wanted: int) -> int:
    """The run; ``workers``: the warm workers started so far, to which those it starts are
    added (the caller ends them)."""
    from frameserve.cli import logs
    from frameserve.errors import FrameserveError
    from frameserve.video.config import load_video_pipeline
    from frameserve.video.decode import probe
    from frameserve.video.frames import Sampling
    from frameserve.video.params import read_params
    from frameserve.video.plan import RunOptions

    logs.configure(args.log_level, "text")
    try:
        name, config = load_video_pipeline(args.pipeline, args.repository)
        sample = Sampling.parse(args.sample) if args.sample else None
        params = read_params(args.params) if args.params is not None else None
        infos = [probe(p) for p in args.inputs]  # a file that is not a video fails first
        if args.ray is not None:
            return _run_on_ray(args, name, config, sample, params)
        options = RunOptions(
            args.out, sample, args.video_out, args.mask_track, args.inflight, args.decode_threads,
            params=params, profiling=args.profile,
        )  # fmt: skip
        options, budget = _decoder_cores(args, config, options, _warm_count(workers, wanted))
        if workers:  # spawned at the start (no fork here): none for a second decoder
            options = replace(options, second_cores=())
        if wanted:  # they decode while the models load (video.ahead)
            from frameserve.processing.transform import opencv_on_caller_threads
            from frameserve.video import warm
            from frameserve.video.ahead import decode_ahead, plan_ahead

            # As the server sets it anyway; here before planning samples a probe picture, so
            # that OpenCV starts no pool of threads: this process stays one that may fork.
            opencv_on_caller_threads()
            specs = plan_ahead(name, config, args.inputs, infos, options, args.repository)
            if not workers:  # and one for a second decoder (video.split)
                count = wanted + (1 if options.second_cores else 0)
                workers.extend(warm.start(count, fork=warm.can_fork()))
            decode_ahead(workers, specs)
        # The server's modules only now: the workers were forked without them (video.plan).
        from frameserve.serving.local import LocalServer
        from frameserve.serving.server import ServerSettings
        from frameserve.video.run import VideoRun
        from frameserve.video.streams import describe_input

        settings = ServerSettings(
            repository=args.repository,
            model_control_mode="explicit",
            load_models=tuple(config.models),
            model_cache_dir=model_cache_dir(args),
            budget=budget,
        )
        for info in infos:
            print(describe_input(info), file=sys.stderr)  # noqa: T201
        with LocalServer(settings) as local:
            run = VideoRun(local, name, config, args.inputs, options, infos=infos, warm=workers)
            resume_collector()
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
