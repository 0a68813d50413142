"""FP32 vs BF16 vs INT8 on one zoo model: served throughput and agreement with FP32.

The INT8 version comes from ``frameserve quantize`` (NNCF, calibration through the declared
pre-processing). Four variants are served side by side from one in-process server, each under
the model's own serving settings (``model.yaml``), differing only in weights and precision
hint: f32, bf16 (OpenVINO's default on a CPU with bf16), int8 (+f32 for the layers NNCF left in
float) and int8+bf16. Throughput: closed loop, one frame per request, interleaved repeats,
medians. Accuracy: the task's metric (``frameserve.tools.accuracy``) of each variant against
f32 on held-out frames.
"""

from __future__ import annotations

import shutil
import statistics
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from frameserve.backends.openvino_quantize import QuantizeSettings
from frameserve.processing.tasks import DecodeOptions
from frameserve.serving.local import LocalServer
from frameserve.serving.predict import Timings
from frameserve.serving.server import InferenceServer, ServerSettings
from frameserve.tools.accuracy import agreement
from frameserve.tools.bench import preprocess_shapes
from frameserve.tools.calibration import open_calibration, split_frames
from frameserve.tools.loadgen import Load, measure
from frameserve.tools.quantize import QuantizeOptions, quantize
from frameserve.tools.targets import LocalTarget, make_inputs

VARIANTS = {  # name -> (which version: "float" | "int8", precision hint)
    "f32": ("float", "f32"),
    "bf16": ("float", "bf16"),
    "int8": ("int8", "f32"),
    "int8+bf16": ("int8", "bf16"),
}


def variant_repository(src: Path, dest: Path, int8_version: int) -> list[str]:
    """dest/<model>-<variant>: one folder a variant, version 1 linked to the right weights."""
    raw = yaml.safe_load((src / "model.yaml").read_text())
    names = []
    for variant, (weights, hint) in VARIANTS.items():
        folder = dest / f"{src.name}-{variant.replace('+', '-')}"
        folder.mkdir(parents=True)
        version = int8_version if weights == "int8" else 1
        (folder / "1").symlink_to((src / str(version)).resolve())
        for extra in src.iterdir():  # scripts, licences: whatever model.yaml may point at
            if extra.is_file() and extra.name != "model.yaml":
                (folder / extra.name).symlink_to(extra.resolve())
        config = {**raw, "precision": hint, "version_policy": {"specific": [1]}}
        (folder / "model.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        names.append(folder.name)
    return names


async def _throughput(
    server: InferenceServer, name: str, concurrency: int, seconds: float
) -> tuple[float, float]:
    target = LocalTarget(server, name)
    info = await target.open()
    prepared = target.prepare(make_inputs(info, 1, preprocess_shapes(server, name)(info)))
    m = await measure(lambda: target.infer(prepared), Load(concurrency), seconds, 1.0)
    return m.request_rate, m.latency_ms["p99"]


async def _agreements(
    server: InferenceServer, names: list[str], frames: list[np.ndarray]
) -> dict[str, float]:
    options = DecodeOptions()
    results = {}
    for name in names:
        mv = server.repository.get(name)
        # one frame a call: frames of other sizes give other tensor sizes (text-det)
        results[name] = [
            (await server.predictor.run_model(mv, [f], options, Timings()))[0] for f in frames
        ]
    ref = results[names[0]]
    return {n: float(np.mean([agreement(a, b) for a, b in zip(ref, results[n], strict=True)]))
            for n in names}  # fmt: skip


def run(
    zoo_model: Path, work: Path, calibration: Path, subset: int, repeats: int, seconds: float,
    concurrency: int, settings: QuantizeSettings, held_out: int = 60,
) -> dict[str, Any]:  # fmt: skip
    """Quantize a copy of ``zoo_model``, then measure the four variants side by side."""
    repo = work / "quantize"
    shutil.copytree(zoo_model, repo / zoo_model.name, symlinks=True)
    options = QuantizeOptions(repo, zoo_model.name, calibration, subset=subset, max_drop=1.0,
                              settings=settings)  # fmt: skip
    report = quantize(options)
    names = variant_repository(repo / zoo_model.name, work / "variants", report.out_version)
    settings = ServerSettings(
        repository=work / "variants", model_control_mode="explicit", load_models=tuple(names)
    )
    source = open_calibration(calibration)
    held = split_frames(source.count, subset).held_out  # the frames NNCF did not see
    frames = list(islice(source.frames(held), held_out))
    runs: dict[str, list[float]] = {n: [] for n in names}
    p99s: dict[str, list[float]] = {n: [] for n in names}
    with LocalServer(settings) as local:
        agree = local.call(_agreements(local.server, names, frames))
        for _ in range(repeats):  # interleaved: drift hits every variant alike
            for n in names:
                thr, p99 = local.call(_throughput(local.server, n, concurrency, seconds))
                runs[n].append(thr)
                p99s[n].append(p99)
    base = statistics.median(runs[names[0]])
    rows = []
    for variant, n in zip(VARIANTS, names, strict=True):
        thr = statistics.median(runs[n])
        rows.append({
            "variant": variant, "throughput": thr, "vs_f32": thr / base,
            "p99_ms": statistics.median(p99s[n]), "agreement": agree[n],
            "drop": 1.0 - agree[n], "runs": runs[n],
        })  # fmt: skip
    return {
        "model": zoo_model.name, "metric": report.metric, "calibration_frames":
        report.calibration_frames, "quantize_report_drop": report.drop, "held_out": len(frames),
        "concurrency": concurrency, "rows": rows,
    }  # fmt: skip
