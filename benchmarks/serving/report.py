"""The markdown tables (``latest.md``) made from a results dict; ready to paste in a README.

``python report.py results/latest.json`` renders a saved run again (to stdout).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

MIB = 2**20
SIDE_TITLES = {"frameserve": "frameserve", "triton": "Triton (PyTriton)"}


def _f(value: float | None, digits: int = 1, suffix: str = "") -> str:
    return "-" if value is None else f"{value:.{digits}f}{suffix}"


def _r(ratio: float | None) -> str:
    """A ratio with two decimals, or three significant digits when it is small."""
    if ratio is None:
        return "-"
    return f"{ratio:.2f}" if ratio >= 0.1 else f"{ratio:.2g}"


def _div(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value / MIB:.0f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines + [""]


def header(results: dict) -> list[str]:
    m, v = results["machine"], results["machine"]["versions"]
    pt, setup, plan = results["pytriton_env"], results["setup"], results["plan"]
    triton_version = next(
        (s["version"] for r in results["models"].values()
         for s in [r["summary"]["sides"]["triton"]] if s.get("version")), None,
    )  # fmt: skip
    load = plan["load"]
    return [
        "# Serving benchmark: frameserve vs raw OpenVINO vs Triton (PyTriton)",
        "",
        f"Command (from the project root): `{results['command']}`  ",
        f"Run: {results['started']}, {results.get('duration_s', 0) / 60:.1f} min; "
        f"medians over {plan['repeats']} repeat(s); ratios are medians of per-repeat ratios.",
        "",
        f"Machine: {m['nproc']} CPUs ({m['usable_cores']} usable), {m['cpu_model']}, "
        f"{m['memory_gib']} GiB, Linux {m['kernel']}, Python {m['python']}, "
        f"load average at start {', '.join(f'{x:.2f}' for x in m['loadavg_at_start'])}.  ",
        f"Versions: frameserve {v['frameserve']} ({v['frameserve_git']}), OpenVINO "
        f"{v['openvino']}, numpy {v['numpy']}, perf_analyzer {v['perf_analyzer']}, "
        f"tritonclient {v['tritonclient']}; PyTriton {pt.get('nvidia-pytriton')} with "
        f"{triton_version or 'Triton ?'}, OpenVINO {pt.get('openvino')}, numpy {pt.get('numpy')}.",
        "",
        f"All three sides: OpenVINO CPU, `{_props(setup['openvino'])}` "
        f"({setup['instances']} instances x {setup['threads_per_instance']} thread). "
        f"perf_analyzer: sync requests, one thread per in-flight request, "
        f"warm-up, then three merged {load['window_ms']} ms time windows per point, "
        "batch 1 per request, random FP32 input, binary tensors over HTTP; `grpc-shm` is gRPC "
        "with inputs and outputs in system shared memory (`--shared-memory system`).",
        "",
    ]


def _props(props: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in props.items())


def headline(results: dict) -> list[str]:
    rows = []
    for name, r in results["models"].items():
        s = r["summary"]
        for proto, ratio in s["ratios"].items():
            rows.append([
                name, proto,
                _r(ratio.get("frameserve_over_raw_batch1")),
                _r(ratio["frameserve_over_raw_reached_batch"]),
                _r(ratio["frameserve_over_triton_throughput"]),
                _r(ratio["frameserve_over_triton_p50"]),
                _r(ratio["frameserve_over_triton_p99"]),
            ])  # fmt: skip
    conc = next(iter(results["models"].values()))["summary"]["headline_concurrency"]
    head = [
        "model", "protocol", "frameserve / raw OV (batch 1)",
        "frameserve / raw OV (batch reached)", "frameserve / Triton throughput",
        "frameserve / Triton p50", "frameserve / Triton p99",
    ]  # fmt: skip
    intro = [
        f"## Headline ratios at concurrency {conc}",
        "",
        "Throughput ratios above 1 favour frameserve; latency ratios below 1 favour frameserve. "
        "Raw OpenVINO is measured at batch 1 and at the whole batch size the servers reached on "
        "average (the stricter: batching lets raw OpenVINO run a little faster too).",
        "",
    ]
    return intro + _table(head, rows)


def model_table(name: str, r: dict) -> list[str]:
    """Throughput and latency per protocol and concurrency, both servers side by side."""
    cfg, sides = r["config"], r["summary"]["sides"]
    fs, tr = sides["frameserve"]["points"], sides["triton"]["points"]
    rows = []
    for proto in sorted(set(fs) | set(tr)):
        for conc in sorted(set(fs.get(proto, {})) | set(tr.get(proto, {})), key=int):
            a, b = fs.get(proto, {}).get(conc, {}), tr.get(proto, {}).get(conc, {})
            ratio = _div(a.get("throughput"), b.get("throughput"))
            rows.append([proto, str(conc), *_cells(a), *_cells(b), _r(ratio)])
    head = [
        "protocol", "conc",
        "frameserve infer/s", "p50 ms", "p90 ms", "p99 ms", "batch",
        "Triton infer/s", "p50 ms", "p90 ms", "p99 ms", "batch", "fs/Triton",
    ]  # fmt: skip
    preferred = ", ".join(map(str, cfg["preferred_batch_sizes"])) or "-"
    intro = [
        f"### {name}: {cfg['description']}",
        "",
        f"max_batch_size {cfg['max_batch_size']}, max_queue_delay {cfg['max_queue_delay_ms']} ms,"
        f" preferred batch sizes {preferred} (same on both servers). "
        "`batch` = server-side inferences per model execution.",
        "",
    ]
    return intro + _table(head, rows)


def _cells(p: dict) -> list[str]:
    if not p:
        return ["-"] * 5
    ok = "" if p.get("runs_ok", "").split("/")[0] == p.get("runs_ok", "").split("/")[-1] else "*"
    return [
        _f(p.get("throughput")) + ok, _f(p.get("p50_ms"), 2), _f(p.get("p90_ms"), 2),
        _f(p.get("p99_ms"), 2), _f(p.get("avg_batch"), 2),
    ]  # fmt: skip


def ceilings(results: dict) -> list[str]:
    rows = []
    for name, r in results["models"].items():
        for batch, value in r["summary"]["ceiling"].items():
            rows.append([name, str(batch), _f(value)])
    intro = [
        "## Raw OpenVINO ceiling (in-process AsyncInferQueue, no server)",
        "",
        "One job per optimal infer request, the same preallocated batch again and again.",
        "",
    ]
    return intro + _table(["model", "batch", "infer/s (frames/s)"], rows)


def resources(results: dict) -> list[str]:
    rows = []
    for name, r in results["models"].items():
        for side, s in r["summary"]["sides"].items():
            rows.append([
                name, SIDE_TITLES[side], _f(s["startup_s"], 2), _mib(s["rss_idle"]),
                _mib(s["pss_idle"]), _mib(s["rss_peak"]), _mib(s["rss_idle_after_load"]),
            ])  # fmt: skip
    head = [
        "model", "server", "start -> ready s", "RSS idle MiB", "PSS idle MiB",
        "RSS peak under load MiB", "RSS idle after load MiB",
    ]  # fmt: skip
    intro = [
        "## Start-up and memory (whole server process tree)",
        "",
        "Start -> ready: process spawn until `/v2/health/ready` and the model's ready endpoint "
        "both answer 200 (model compiled and warmed up). RSS sums every process of the tree "
        "(Triton: tritonserver, one Python-backend stub per instance, the PyTriton process), so "
        "shared libraries count once per process; PSS splits shared pages.",
        "",
    ]
    return intro + _table(head, rows)


def _cpu_concurrencies(results: dict) -> list[int]:
    plan = results["plan"]
    wanted = {plan["headline_concurrency"], max(plan["concurrencies"])}
    return sorted(c for c in wanted if c in plan["concurrencies"])


def cpu(results: dict) -> list[str]:
    """Who used the 2 cores during each load point: client, server, everything else."""
    rows = []
    for name, r in results["models"].items():
        for side, s in r["summary"]["sides"].items():
            for proto, by_conc in s["points"].items():
                for conc in _cpu_concurrencies(results):
                    p = by_conc.get(conc) or by_conc.get(str(conc)) or {}
                    rows.append([
                        name, SIDE_TITLES[side], proto, str(conc), _f(p.get("client_cores"), 2),
                        _f(p.get("server_cores"), 2), _f(p.get("other_cores"), 2),
                        _f(p.get("server_cpu_ms_per_inf"), 3),
                    ])  # fmt: skip
    head = [
        "model", "server", "protocol", "conc", "perf_analyzer cores", "server cores",
        "other processes cores", "server CPU ms / inference",
    ]  # fmt: skip
    intro = [
        "## CPU: load generator, server, and the rest of the machine",
        "",
        "Cores = CPU seconds / wall seconds over the whole perf_analyzer run (warm-up included); "
        "the machine has 2. `other processes` is everything else running at the time (noise).",
        "",
    ]
    return intro + _table(head, rows)


def breakdown(results: dict) -> list[str]:
    """perf_analyzer's per-request split of the latency (client side + server statistics)."""
    keys = ["client_send_us", "network_us", "server_queue_us", "server_input_us",
            "server_infer_us", "server_output_us", "client_recv_us"]  # fmt: skip
    rows = []
    conc = results["plan"]["headline_concurrency"]
    for name, r in results["models"].items():
        for side, s in r["summary"]["sides"].items():
            for proto, by_conc in s["points"].items():
                p = by_conc.get(conc) or by_conc.get(str(conc)) or {}
                b = p.get("breakdown_us") or {}
                cells = [_f(b.get(k), 0) for k in keys]
                rows.append([name, SIDE_TITLES[side], proto, *cells, _f(p.get("p50_ms"), 2)])
    head = [
        "model", "server", "protocol", "client send", "network + server send/recv",
        "server queue", "compute input", "compute infer", "compute output", "client recv",
        "p50 ms",
    ]  # fmt: skip
    intro = [
        f"## Where the time goes at concurrency {conc} (mean microseconds per request)",
        "",
        "From perf_analyzer: client-side send/receive plus the server's own statistics "
        "(`/v2/models/{m}/stats`); queue includes the batcher's wait. perf_analyzer reads the "
        "compute columns as per-request means, which assumes a server adds a batch's duration "
        "once for every request in it (as Triton does); a server that adds it once per batch "
        "shows compute divided by the batch size, and the remainder lands in "
        "`network + server send/recv`.",
        "",
    ]
    return intro + _table(head, rows)


def problems(results: dict) -> list[str]:
    lines = []
    for name, r in results["models"].items():
        for side, starts in r["servers"].items():
            for start in starts:
                if start.get("error"):
                    lines.append(f"- {name} / {side} repeat {start['repeat']}: {start['error']}")
                for p in start["points"]:
                    if not p["ok"]:
                        lines.append(
                            f"- {name} / {side} {p['protocol']} c={p['concurrency']} "
                            f"repeat {start['repeat']}: {p['error']}"
                        )
                lines += [f"- {name} / {side}: skipped {s}" for s in start.get("skipped", [])]
    if not lines:
        return []
    return ["## Failed or skipped points", "", *lines, ""]


def render(results: dict) -> str:
    lines = header(results) + headline(results)
    lines += ["## Throughput and latency (medians; `*` = some repeats failed)", ""]
    for name, r in results["models"].items():
        lines += model_table(name, r)
    lines += ceilings(results) + resources(results) + cpu(results) + breakdown(results)
    lines += problems(results)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: report.py RESULTS.json\n")
        return 2
    sys.stdout.write(render(json.loads(Path(args[0]).read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
