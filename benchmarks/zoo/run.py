"""Zoo benchmark: the real zoo models, raw runtimes vs fused pre-processing vs the server.

    .venv/bin/python benchmarks/zoo/run.py [--quick] [--repository DIR] [--out DIR]

Pulls the zoo (``frameserve zoo pull``) into a temporary folder, or into ``--repository``,
then measures side by side in one run: (1) each model in-process on OpenVINO (f32 and bf16
hints) and ONNX Runtime, latency at batch 1 and throughput per batch size; (2) declared
pre-processing in numpy/cv2 vs fused into the OpenVINO graph; (3) image requests through a
real ``frameserve serve`` on loopback. Writes ``latest.json`` (every number) and
``latest.md`` (the tables) to ``--out``. Nothing is asserted: the tables carry the noise.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/common.py

import cv2
import openvino as ov
import report
from common import cpu_flags, cpu_model, git_commit
from fusion import FUSED_MODELS, measure_fusion
from inputs import ModelInputs, describe_source
from runtimes import (
    RuntimeSettings,
    max_abs_diff,
    measure_onnxruntime,
    measure_openvino,
    merge_rounds,
)
from serving import ZooServer, image_requests
from timing import Budget, OtherCpu, wait_for_quiet

from frameserve.cpu import detect_cpu_budget

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
RUNTIME_MODELS = ("faces", "faces-near", "person-mask", "text-det", "text-cls", "text-rec")
ONNX_MODELS = ("text-det", "text-cls", "text-rec")
SERVED_MODELS = ("faces", "faces-near", "person-mask", "text-det", "ocr")
SECTIONS = ("runtime", "fusion", "server")


def say(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--repository", type=Path, help="pull into (and measure) this folder")
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--quick", action="store_true", help="short samples, 5 requests: a smoke run")
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    p.add_argument("--models", nargs="+", help="only these models (default: all)")
    p.add_argument("--requests", type=int, default=30, help="per model, after the warm-up")
    p.add_argument("--warmup-requests", type=int, default=3)
    p.add_argument(
        "--quiet-wait", type=float, default=3.0, metavar="SECONDS",
        help="before each model, wait up to this long for other processes to go idle",
    )  # fmt: skip
    return p.parse_args(argv)


def machine_facts() -> dict:
    flags = cpu_flags()
    return {
        "cpu_model": cpu_model(),
        "nproc": os.cpu_count(),
        "cpu_budget": detect_cpu_budget().describe(),
        "cpu_bf16_flags": sorted(f for f in flags if "bf16" in f),
        "openvino_cpu_capabilities": list(
            ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        ),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_at_start": os.getloadavg(),
        "versions": {
            "frameserve": importlib.metadata.version("frameserve"),
            "frameserve_git": git_commit(ROOT),
            "openvino": importlib.metadata.version("openvino"),
            "onnxruntime": importlib.metadata.version("onnxruntime"),
            "numpy": importlib.metadata.version("numpy"),
            "opencv": cv2.__version__,
        },
    }


def pull_zoo(dest: Path) -> None:
    exe = Path(sys.executable).parent / "frameserve"
    cmd = [str(exe)] if exe.is_file() else [sys.executable, "-m", "frameserve.cli.main"]
    proc = subprocess.run(
        [*cmd, "zoo", "pull", "--dest", str(dest)], capture_output=True, text=True, timeout=600
    )
    if proc.returncode != 0:
        raise RuntimeError(f"frameserve zoo pull failed ({proc.returncode}): {proc.stderr[-800:]}")
    say(proc.stdout.strip())


def chosen(names: tuple[str, ...], only: list[str] | None) -> list[str]:
    return [n for n in names if not only or n in only]


def measured(fn, quiet_wait: float) -> dict:
    """``fn()``'s dict, after waiting for a quiet machine, with the other processes' CPU."""
    wait_for_quiet(quiet_wait)
    watch = OtherCpu()
    result = fn()
    result["other_cores"] = watch.cores()
    return result


def runtime_entry(model: ModelInputs, settings: RuntimeSettings) -> dict:
    name = model.name
    entry: dict = {
        "source": describe_source(name),
        "openvino": measure_openvino(model, settings, say),
    }
    if name in ONNX_MODELS:
        entry["onnxruntime"] = measure_onnxruntime(model, settings, say)
        ov_out, ort_out = entry["openvino"]["f32"]["outputs"], entry["onnxruntime"]["outputs"]
        entry["openvino_vs_onnxruntime"] = max_abs_diff(ov_out, ort_out)
        del entry["onnxruntime"]["outputs"]
    for precision in ("f32", "bf16"):
        del entry["openvino"][precision]["outputs"]
    return entry


def run_runtime(repository: Path, settings: RuntimeSettings, args: argparse.Namespace) -> dict:
    """Every model once per round; the rounds spread each model's samples over the run."""
    models = {n: ModelInputs.load(repository, n) for n in chosen(RUNTIME_MODELS, args.models)}
    rounds: dict[str, list[dict]] = {name: [] for name in models}
    for i in range(settings.rounds):
        for name, model in models.items():
            say(f"[runtime] round {i + 1}/{settings.rounds}: {name}")
            entry = measured(lambda m=model: runtime_entry(m, settings), args.quiet_wait)
            rounds[name].append(entry)
    return {name: merge_rounds(entries) for name, entries in rounds.items()}


def run_fusion(repository: Path, settings: RuntimeSettings, args: argparse.Namespace) -> dict:
    out = {}
    for name in chosen(FUSED_MODELS, args.models):
        say(f"[fusion] {name}")
        model = ModelInputs.load(repository, name)
        out[name] = measured(lambda m=model: measure_fusion(m, settings, say), args.quiet_wait)
    return out


def run_server(repository: Path, args: argparse.Namespace, requests: int) -> dict:
    server = ZooServer(repository, args.out / "logs" / "server.log")
    record: dict = {"models": {}}
    try:
        record["startup_s"] = server.start([m for m in SERVED_MODELS if m != "ocr"])
        record["loaded"] = server.loaded_models()
        say(f"[server] ready in {record['startup_s']:.1f} s on port {server.http_port}")
        for name in chosen(SERVED_MODELS, args.models):
            r = measured(
                lambda n=name: image_requests(server.http_port, n, requests, args.warmup_requests),
                args.quiet_wait,
            )
            record["models"][name] = r
            found = r.get("result") or r["error"]
            say(f"[server] {name}: p50 {r.get('p50_ms') or 0:.1f} ms, {found}")
    except (RuntimeError, TimeoutError, OSError) as err:
        record["error"] = str(err)
        say(f"[server] {err}")
    finally:
        record["exit_code"] = server.stop()
    return record


def command_line() -> str:
    exe, script = Path(sys.executable), Path(sys.argv[0]).resolve()
    shown = [str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p) for p in (exe, script)]
    return shlex.join([*shown, *sys.argv[1:]])


def plan_settings(quick: bool, cores: int) -> tuple[RuntimeSettings, RuntimeSettings]:
    """Sample counts and windows: (runtime, per round; fusion). Sized for ~5 min in all."""
    if quick:
        small = Budget(warmup=2, min_runs=3, max_runs=10, seconds=0.3, window_s=0.3, windows=1)
        large = Budget(warmup=1, min_runs=2, max_runs=3, seconds=0.5, window_s=1.0, windows=1)
        return RuntimeSettings(cores, small, large, 1), RuntimeSettings(cores, small, large, 1)
    runtime = RuntimeSettings(
        cores,
        Budget(warmup=3, min_runs=5, max_runs=30, seconds=0.8, window_s=0.6, windows=1),
        Budget(warmup=2, min_runs=3, max_runs=8, seconds=1.5, window_s=2.5, windows=1),
        rounds=3,
    )
    fusion = RuntimeSettings(
        cores,
        Budget(warmup=3, min_runs=5, max_runs=50, seconds=2.0),
        Budget(warmup=2, min_runs=3, max_runs=20, seconds=4.0),
    )
    return runtime, fusion


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.monotonic()
    cores = detect_cpu_budget().cores
    runtime, fusion = plan_settings(args.quick, cores)
    requests = 5 if args.quick else args.requests
    results: dict = {
        "command": command_line(),
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_facts(),
        "plan": {
            "cores": cores,
            "rounds": runtime.rounds,
            "runtime": {"budget": asdict(runtime.budget), "large": asdict(runtime.large_budget)},
            "fusion": {"budget": asdict(fusion.budget), "large": asdict(fusion.large_budget)},
            "requests": requests,
            "warmup_requests": args.warmup_requests,
        },  # fmt: skip
        "other_cores": {},
        "notes": [],
    }
    with tempfile.TemporaryDirectory(prefix="frameserve-zoo-bench-") as tmp:
        repository = args.repository or Path(tmp) / "models"
        pull_zoo(repository)
        parts = {
            "runtime": lambda: run_runtime(repository, runtime, args),
            "fusion": lambda: run_fusion(repository, fusion, args),
            "server": lambda: run_server(repository, args, requests),
        }
        for part in args.sections:
            watch = OtherCpu()
            results[part] = parts[part]()
            results["other_cores"][part] = watch.cores()
    results["duration_s"] = round(time.monotonic() - t0, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = args.out / "latest.json", args.out / "latest.md"
    json_path.write_text(report.json_text(results))
    md_path.write_text(report.render(results))
    sys.stdout.write(md_path.read_text())
    say(f"wrote {json_path} and {md_path} in {results['duration_s'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
