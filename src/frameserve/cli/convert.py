"""``frameserve convert``: argument parsing; the work is in ``frameserve.tools.convert``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from frameserve.tools.convert import ConvertResult

# The names of backends.openvino_graph.FRONTEND_EXTENSIONS, not imported here because that
# loads OpenVINO for every command (a test keeps the two lists equal).
EXTENSIONS = ("mediapipe",)


def add_convert(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "convert",
        help="convert ONNX / TFLite / TF SavedModel / PaddlePaddle to an OpenVINO IR version",
        description="Convert SRC to OpenVINO IR (model.xml + model.bin) in "
        "REPOSITORY/MODEL/VERSION, optionally cut at named tensors, with new shapes, FP16 "
        "weights and input layouts. A new model also gets a model.yaml.",
    )
    p.add_argument("src", type=Path, metavar="SRC",
                   help=".onnx, .tflite, .pdmodel or a SavedModel folder")  # fmt: skip
    p.add_argument("--repository", type=Path, required=True, metavar="R",
                   help="the model repository (created if missing)")  # fmt: skip
    p.add_argument("--model", required=True, metavar="NAME", help="the model folder's name")
    p.add_argument("--version", default=None, metavar="V",
                   help="version number (default: the next free one; 1 if new)")  # fmt: skip
    p.add_argument("--input", action="append", default=[], metavar="NAME[SHAPE]",
                   help="an input, or a tensor to cut the graph at; SHAPE like "
                        "image[1,3,224,224], image[?,3,-1,-1] or image[1..8,3,224,224] "
                        "(? and -1: dynamic); repeat for several")  # fmt: skip
    p.add_argument("--output", action="append", default=[], metavar="NAME",
                   help="keep only these outputs (or cut at these tensors); "
                        "repeat for several")  # fmt: skip
    p.add_argument("--compress-fp16", action="store_true",
                   help="store weights in FP16 (about half the size; default: FP32)")  # fmt: skip
    p.add_argument("--layout", action="append", default=[], metavar="[NAME:]LAYOUT",
                   help="input layout stored in the IR: NCHW (every input) "
                        "or image:NHWC")  # fmt: skip
    p.add_argument("--extension", action="append", default=[], choices=EXTENSIONS,
                   help="frontend conversions for custom ops "
                        "(mediapipe: the person-mask .tflite)")  # fmt: skip


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def report(result: ConvertResult) -> list[str]:
    """The lines ``frameserve convert`` prints."""
    weights = "FP16" if result.compressed_fp16 else "FP32"
    lines = [
        f"wrote {result.path}/model.xml + model.bin ({_size(result.size_bytes)}, {weights} weights)"
    ]
    width = max((len(p.name) for p in (*result.inputs, *result.outputs)), default=0)
    for kind, ports in (("input ", result.inputs), ("output", result.outputs)):
        for p in ports:
            layout = f"  layout {p.layout}" if p.layout else ""
            lines.append(f"  {kind} {p.name:<{width}}  {p.datatype:<5} {p.shape}{layout}")
    if result.config_written:
        settings = ", ".join(f"{k}: {v}" for k, v in result.config.items())
        lines.append(f"wrote {result.config_path} ({settings})")
    else:
        lines.append(f"{result.config_path} exists: left as it is")
    served = "will be served" if result.served else "will NOT be served"
    lines.append(
        f"version {result.version} {served}: version_policy {result.policy} serves "
        f"{list(result.served_versions)}"
    )
    return lines


def run_convert(args: argparse.Namespace) -> int:
    from frameserve.errors import FrameserveError
    from frameserve.tools.convert import ConvertOptions, convert_to_ir

    options = ConvertOptions(
        src=args.src,
        repository=args.repository,
        model=args.model,
        version=args.version,
        inputs=tuple(args.input),
        outputs=tuple(args.output),
        compress_fp16=args.compress_fp16,
        layouts=tuple(args.layout),
        extensions=tuple(args.extension),
    )
    try:
        result = convert_to_ir(options)
    except FrameserveError as err:
        print(f"frameserve convert: {err}", file=sys.stderr)  # noqa: T201
        return 1
    for line in report(result):
        print(line)  # noqa: T201
    return 0
