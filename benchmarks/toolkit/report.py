"""benchmarks/toolkit/results/latest.md from latest.json."""

from __future__ import annotations

from typing import Any


def _precision(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "### FP32 vs BF16 vs INT8 (served, one frame a request, medians)",
        "",
        "| model | metric | f32 inf/s | bf16 | int8 | int8+bf16 | int8 vs f32 | int8 vs bf16 "
        "| drop bf16 | drop int8 | drop int8+bf16 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in rows:
        r = {row["variant"]: row for row in m["rows"]}
        lines.append(
            f"| {m['model']} | {m['metric']} | {r['f32']['throughput']:.1f} | "
            f"{r['bf16']['throughput']:.1f} | {r['int8']['throughput']:.1f} | "
            f"{r['int8+bf16']['throughput']:.1f} | "
            f"{r['int8']['throughput'] / r['f32']['throughput']:.2f}x | "
            f"{r['int8+bf16']['throughput'] / r['bf16']['throughput']:.2f}x | "
            f"{r['bf16']['drop']:.3f} | {r['int8']['drop']:.3f} | {r['int8+bf16']['drop']:.3f} |"
        )
    return lines


def _tuned(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "### Tuned vs start config at the same p99 target (final rung, side by side)",
        "",
        "| model | p99 target | start config | start inf/s (p99) | tuned config | tuned inf/s "
        "(p99) | tuned/start | trials / space | minutes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = r["best_throughput"] / r["start_throughput"] if r["start_throughput"] else 0
        sp99 = f"{r['start_p99']:.1f}" if r["start_p99"] is not None else "-"
        bp99 = f"{r['best_p99']:.1f}" if r["best_p99"] is not None else "-"
        lines.append(
            f"| {r['model']} | {r['p99_ms']:g} ms | {r['start']} | "
            f"{r['start_throughput']:.1f} ({sp99}) | {r['best']} | "
            f"{r['best_throughput']:.1f} ({bp99}) | {ratio:.2f}x | "
            f"{r['trials']} / {r['space']} | {r['minutes']:.1f} |"
        )
    return lines


def _search(s: dict[str, Any]) -> list[str]:
    rp = s["replay"]
    ratio = s["search_choice_in_grid"] / s["grid_best_throughput"]
    return [
        f"### Coordinate search vs exhaustive grid ({s['model']}, p99 <= {s['p99_ms']:g} ms)",
        "",
        "| | trials | minutes | choice | its grid inf/s | of grid best |",
        "|---|---|---|---|---|---|",
        f"| grid | {s['grid_trials']} | {s['grid_seconds'] / 60:.1f} | {s['grid_best']} | "
        f"{s['grid_best_throughput']:.1f} | 100% |",
        f"| coordinate search (live) | {s['search_trials']} | {s['search_seconds'] / 60:.1f} | "
        f"{s['search_choice']} | {s['search_choice_in_grid']:.1f} | {ratio:.0%} |",
        "",
        f"Replayed on the grid's measurements from each of its {rp['starts']} configs as the "
        f"start: within 5% of the grid's best from {rp['within_5pct']} starts; median "
        f"{rp['median_trials']} trials, at most {rp['max_trials']} "
        f"(grid: {s['grid_trials']}); worst landing {rp['worst_ratio']:.0%} of the best.",
    ]


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [f"Machine: {m['cpu']}, {m['cores']} cores; commit {results.get('commit')}.", ""]
    if "precision" in results:
        lines += _precision(results["precision"]) + [""]
    if "tuned" in results:
        lines += _tuned(results["tuned"]) + [""]
    if "search" in results:
        lines += _search(results["search"]) + [""]
    return "\n".join(lines)
