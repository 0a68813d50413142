"""The markdown tables (``latest.md``) made from a results dict; ready to paste in a README.

``python benchmarks/zoo/report.py benchmarks/zoo/results/latest.json`` renders a saved run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

STEP_TITLES = {
    "decode": "decode",
    "preprocess": "preprocess",
    "infer": "infer",
    "postprocess": "postprocess",
    "http_and_queue": "HTTP + queue",
}


def _f(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _ms(value: float | None) -> str:
    """Milliseconds with 2 decimals below 10, 1 above."""
    if value is None:
        return "-"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or not b else f"{a / b:.2f}x"


def _diff(d: dict | None) -> str:
    return "-" if not d else f"{d['max_abs']:.2g} (of {d['max_ref']:.2g})"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows] + [""]


def header(results: dict) -> list[str]:
    m, v = results["machine"], results["machine"]["versions"]
    bf16 = "BF16" in m["openvino_cpu_capabilities"]
    return [
        "# Zoo benchmark: runtimes, fused pre-processing, image requests",
        "",
        f"Command (from the project root): `{results['command']}`  ",
        f"Run: {results['started']}, {results.get('duration_s', 0) / 60:.1f} min.",
        "",
        f"Machine: {m['cpu_model']}, {m['nproc']} CPUs, core budget {m['cpu_budget']}; "
        f"Linux {m['kernel']}, Python {m['python']}.  ",
        f"Versions: frameserve {v['frameserve']} ({v['frameserve_git']}), OpenVINO "
        f"{v['openvino']}, ONNX Runtime {v['onnxruntime']}, numpy {v['numpy']}, "
        f"OpenCV {v['opencv']}.  ",
        f"bf16: the CPU flags say {', '.join(m['cpu_bf16_flags']) or 'no bf16 instructions'}; "
        f"OpenVINO's CPU capabilities {'include' if bf16 else 'do not include'} BF16.",
        "",
    ]


def runtime_section(results: dict) -> list[str]:
    runtime = results.get("runtime") or {}
    if not runtime:
        return []
    lat_rows, tp_rows, used = [], [], set()
    for name, r in runtime.items():
        ov, ort = r["openvino"], r.get("onnxruntime")
        f32, bf16 = ov["f32"]["latency"]["p50_ms"], ov["bf16"]["latency"]["p50_ms"]
        ort_ms = ort["latency"]["p50_ms"] if ort else None
        lat_rows.append([
            f"`{name}`", f"`{ov['input_shape']}`", _ms(f32), _ms(bf16), _ms(ort_ms),
            _ratio(f32, bf16), _ratio(ort_ms, f32), _diff(ov.get("bf16_vs_f32")),
            _diff(r.get("openvino_vs_onnxruntime")), _f(r.get("other_cores"), 2),
        ])  # fmt: skip
        for precision in ("f32", "bf16"):
            for kind in ("latency", "throughput"):
                used.add(f"{precision} -> {ov[precision][kind]['precision_used']}")
        sides = [(f"OpenVINO {p}", ov[p]["throughput"]) for p in ("f32", "bf16")]
        sides += [("ONNX Runtime", ort["throughput"])] if ort else []
        for side, tp in sides:
            per = {int(b): x["per_s"] for b, x in tp["per_batch"].items()}
            best = max(per, key=lambda b: per[b])
            cells = [_f(per.get(b)) for b in (1, 2, 4, 8)]
            tp_rows.append([f"`{name}`", side, *cells, f"{per[best]:.1f} (batch {best})",
                            _ratio(per[best], per[1])])  # fmt: skip
    plan = results["plan"]
    small, large, rounds = plan["runtime"]["budget"], plan["runtime"]["large"], plan["rounds"]
    return [
        "## Runtime per model, in-process",
        "",
        f"Real inputs from the declared pre-processing. Every model is measured in {rounds} "
        "round(s), round-robin over the models, so a burst of load on the machine hits one "
        "round, not one model. Latency: batch 1, synchronous `infer`; the median over rounds of "
        f"each round's median of up to {small['max_runs']} runs ({large['max_runs']} for "
        f"`text-det`); OpenVINO with the LATENCY hint and {plan['cores']} threads, ONNX Runtime "
        f"one session with `intra_op_num_threads` {plan['cores']}. ms:",
        "",
        *_table(
            [
                "model",
                "input",
                "OpenVINO f32",
                "OpenVINO bf16",
                "ONNX Runtime f32",
                "bf16 speed-up",
                "ORT / OV f32",
                "max abs diff bf16 vs f32",
                "max abs diff ORT vs OV f32",
                "other CPU",
            ],
            lat_rows,
        ),  # fmt: skip
        f"Throughput, images/s: the median of {rounds * small['windows']} windows of "
        f"{small['window_s']} s ({large['window_s']} s for `text-det`), one per round. "
        "OpenVINO with the THROUGHPUT hint and an "
        "AsyncInferQueue of its optimal number of requests; ONNX Runtime with one 1-thread "
        "session per core, each driven by its own thread. `text-det` does not batch here: "
        "2 requests of batch 1 in flight (column 1).",
        "",
        *_table(
            ["model", "runtime", "batch 1", "2", "4", "8", "best", "best / batch 1"], tp_rows
        ),  # fmt: skip
        f"Precision OpenVINO reported (`INFERENCE_PRECISION_HINT` asked -> used): "
        f"{', '.join(sorted(used))}.",
        "",
    ]


def fusion_section(results: dict) -> list[str]:
    fusion = results.get("fusion") or {}
    if not fusion:
        return []
    rows = []
    for name, r in fusion.items():
        p, f = r["plain"], r["fused"]
        rows.append([
            f"`{name}`", f"`{p['tensor']}`", _ms(p["pre_ms"]), _ms(p["infer_ms"]),
            _ms(p["total_ms"]), f"`{f['tensor']}`", _ms(f["pre_ms"]), _ms(f["infer_ms"]),
            _ms(f["total_ms"]), f"{r['speedup']:.2f}x", _diff(r["outputs_diff"]),
            _f(r.get("other_cores"), 2),
        ])  # fmt: skip
    return [
        "## Pre-processing: numpy/cv2 vs fused into the OpenVINO graph",
        "",
        "Per image (the source image above), OpenVINO f32, LATENCY hint, medians over "
        f"{min(r['runs'] for r in fusion.values())}+ alternating runs. Not fused: "
        "`Preprocessor(spec)([image])` then infer the float tensor. Fused: "
        "`Preprocessor(spec).resize_image(image)` + `np.stack` (uint8 NHWC RGB), then infer "
        "through `fuse_preprocessing` (PrePostProcessor). ms:",
        "",
        *_table(
            [
                "model",
                "not fused: tensor",
                "pre",
                "infer",
                "total",
                "fused: tensor",
                "resize",
                "infer",
                "total",
                "speed-up",
                "max abs diff of outputs",
                "other CPU",
            ],
            rows,
        ),  # fmt: skip
    ]


def server_section(results: dict) -> list[str]:
    server = results.get("server") or {}
    if not server:
        return []
    rows = []
    for name, r in server.get("models", {}).items():
        if not r.get("n"):
            failed = r.get("error") or "no result"
            empty = ["-"] * (2 + len(STEP_TITLES))
            rows.append([f"`{name}`", r.get("content_type", "-"), *empty, failed, "-"])
            continue
        cells = [f"{_ms(s['ms'])} ({s['share'] * 100:.0f}%)" for s in
                 (r["steps"][k] for k in STEP_TITLES)]  # fmt: skip
        kib = r["image_bytes"] / 1024
        image = f"{r['content_type'].split('/')[1].upper()} {kib:.0f} KiB"
        rows.append([f"`{name}`", image, _ms(r["p50_ms"]), _ms(r["p90_ms"]), *cells,
                     r.get("result", ""), _f(r.get("other_cores"), 2)])  # fmt: skip
    plan = results["plan"]
    return [
        "## Image requests end to end (`POST /v1/models/{model}/predict`, loopback)",
        "",
        f"One `frameserve serve` with the whole zoo (ready in {_f(server.get('startup_s'))} s); "
        f"per model {plan['requests']} sequential requests after {plan['warmup_requests']} "
        "warm-up, one keep-alive connection. Client latency in ms; each step is the median ms "
        "from `Server-Timing` and, in brackets, its median share of the client latency; "
        "HTTP + queue is the rest (client, HTTP, event loop, scheduler queue).",
        "",
        *_table(
            ["model", "image", "p50", "p90", *STEP_TITLES.values(), "result", "other CPU"], rows
        ),  # fmt: skip
        *loaded_lines(server),
    ]


def loaded_lines(server: dict) -> list[str]:
    """How the server compiled each model, from its log, grouped when they are alike."""
    loaded = server.get("loaded") or {}
    if not loaded:
        return []
    groups: dict[str, list[str]] = {}
    for name, desc in loaded.items():
        groups.setdefault(desc, []).append(f"`{name}`")
    parts = [f"{', '.join(names)}: `{desc}`" for desc, names in groups.items()]
    return [f"The server compiled (from its log): {'; '.join(parts)}.", ""]


def noise_section(results: dict) -> list[str]:
    noise = results.get("other_cores") or {}
    if not noise:
        return []
    parts = ", ".join(f"{k} {v:.2f}" for k, v in noise.items())
    return [
        '"other CPU": cores that other processes on the machine used meanwhile (average; '
        f"this benchmark and its server excluded). Per part: {parts}.",
        "",
    ]


def json_text(results: dict) -> str:
    return json.dumps(results, indent=1, default=str) + "\n"


def render(results: dict) -> str:
    lines = header(results)
    for section in (runtime_section, fusion_section, server_section, noise_section):
        lines += section(results)
    lines += [f"Notes: {n}" for n in results.get("notes", [])]
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(render(json.loads(Path(sys.argv[1]).read_text())))
