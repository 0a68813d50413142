"""``frameserve quantize``: argument parsing; the work is in ``frameserve.tools.quantize``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

_DESCRIPTION = (
    "INT8 post-training quantization (NNCF) of an OpenVINO model of the repository. Calibration "
    "frames go through the model's declared pre-processing; held-out frames then run through "
    "the served source version and the INT8 version, and the task's metric compares them "
    "(detections and text regions: one-to-one IoU agreement, polygons for text; masks: mask "
    "IoU; text: exact match; classes: top-1). The new version folder is written only when the "
    "drop is within --max-drop; otherwise the command exits 1 and writes nothing."
)
# tools.calibration's rule (not imported here: it pulls in PyAV for every command)
_SPLIT = (
    "how many frames calibrate (default 300, as NNCF). Frames are read evenly spread over the "
    "source and every k-th of them is held out for the check: max(20, N/4) frames "
    "(k = 5 for N >= 80); a source with fewer frames than N plus those has 20%% of its frames "
    "held out and the rest calibrate"
)


def add_quantize(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "quantize",
        help="INT8 version of an OpenVINO model, kept only within an accuracy drop",
        description=_DESCRIPTION,
    )
    p.add_argument("--repository", type=Path, default=Path("models"), help="default: ./models")
    p.add_argument("--model", required=True, metavar="NAME")
    p.add_argument("--version", type=int, default=None, metavar="V",
                   help="source version (default: the newest one the model serves)")  # fmt: skip
    p.add_argument("--calibration", type=Path, required=True, metavar="DIR|VIDEO",
                   help="a folder of images or a video file")  # fmt: skip
    p.add_argument("--subset", type=int, default=300, metavar="N", help=_SPLIT)
    p.add_argument("--max-drop", type=float, default=0.01, metavar="D",
                   help="largest absolute drop of the metric, 0..1 (default 0.01)")  # fmt: skip
    p.add_argument("--out-version", type=int, default=None, metavar="V",
                   help="version number to write (default: the next free one)")  # fmt: skip
    p.add_argument("--preset", choices=["performance", "mixed"], default="performance",
                   help="NNCF preset; mixed quantizes activations asymmetrically")  # fmt: skip
    p.add_argument("--accurate-bias-correction", action="store_true",
                   help="NNCF's slower layer-by-layer bias correction")  # fmt: skip
    p.add_argument("--float-head", action="store_true",
                   help="keep the last weighted layer before each output in float")  # fmt: skip
    p.add_argument("--ignore", action="append", default=[], metavar="REGEX",
                   help="nodes whose name matches stay in float; repeatable")  # fmt: skip
    p.add_argument("--ignore-type", action="append", default=[], metavar="OP",
                   help="ops of this OpenVINO type stay in float; repeatable")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--verbose", action="store_true", help="show NNCF's and the server's logs")


def run_quantize(args: argparse.Namespace) -> int:
    from frameserve.errors import FrameserveError
    from frameserve.extras import require

    try:
        require("nncf", "toolkit", "frameserve quantize")
    except FrameserveError as err:
        print(f"frameserve quantize: {err}", file=sys.stderr)  # noqa: T201
        return 1
    from frameserve.backends.openvino_quantize import QuantizeSettings
    from frameserve.cli import logs
    from frameserve.tools.quantize import QuantizeOptions, quantize

    logs.configure("info" if args.verbose else "warning", "text")
    try:
        options = QuantizeOptions(
            repository=args.repository,
            model=args.model,
            calibration=args.calibration,
            version=args.version,
            subset=args.subset,
            max_drop=args.max_drop,
            out_version=args.out_version,
            settings=QuantizeSettings(
                preset=args.preset,
                fast_bias_correction=not args.accurate_bias_correction,
                ignored_patterns=tuple(args.ignore),
                ignored_types=tuple(args.ignore_type),
                float_head=args.float_head,
                verbose=args.verbose,
            ),
        )
        report = quantize(options)
    except FrameserveError as err:
        print(f"frameserve quantize: {err}", file=sys.stderr)  # noqa: T201
        return 1
    except KeyboardInterrupt:
        print("frameserve quantize: interrupted; nothing written", file=sys.stderr)  # noqa: T201
        return 130
    if args.json:
        print(json.dumps(report.to_json(), indent=2))  # noqa: T201
    else:
        print(report.describe())  # noqa: T201
    if not report.passed:
        print(  # noqa: T201
            f"frameserve quantize: {report.metric}: drop {report.drop:.4f} exceeds --max-drop "
            f"{report.max_drop}; nothing written",
            file=sys.stderr,
        )
        return 1
    return 0
