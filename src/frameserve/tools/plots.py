"""PNG charts for bench and tune (matplotlib, off-screen)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from frameserve.extras import require


def _pyplot() -> Any:
    matplotlib = require("matplotlib", "toolkit", "plots")
    matplotlib.use("Agg")  # no display: always render to files
    import matplotlib.pyplot as plt

    return plt


def swept_parameter(points: Sequence[Any]) -> tuple[str, str | None]:
    """(x, series): the parameter with the most values on x, another one as separate lines."""
    names = ["batch_size", "concurrency", "request_rate"]
    counts = {n: len({getattr(p, n) for p in points if getattr(p, n) is not None}) for n in names}
    x = max(names, key=lambda n: counts[n])
    others = [n for n in names if n != x and counts[n] > 1]
    return x, (others[0] if others else None)


def plot_bench(points: Sequence[Any], path: Path, title: str) -> Path:
    """Throughput (left axis) and p50/p99 latency (right axis) against the swept parameter."""
    plt = _pyplot()
    x_name, series_name = swept_parameter(points)
    groups: dict[Any, list[Any]] = {}
    for p in points:
        if getattr(p, x_name) is None:
            continue
        key = getattr(p, series_name) if series_name else None
        groups.setdefault(key, []).append(p)
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    lat = ax.twinx()
    for i, (key, group) in enumerate(sorted(groups.items(), key=lambda kv: str(kv[0]))):
        group.sort(key=lambda p: getattr(p, x_name))
        xs = [getattr(p, x_name) for p in group]
        label = f"{series_name}={key}" if series_name else ""
        color = f"C{i}"
        ax.plot(xs, [p.throughput for p in group], "o-", color=color, label=f"throughput {label}")
        lat.plot(xs, [p.p50_ms for p in group], "s--", color=color, alpha=0.6, label=f"p50 {label}")
        lat.plot(xs, [p.p99_ms for p in group], "^:", color=color, alpha=0.6, label=f"p99 {label}")
    ax.set_xlabel(x_name.replace("_", " "))
    ax.set_ylabel("throughput (inferences/s)")
    lat.set_ylabel("latency (ms)")
    ax.set_ylim(bottom=0)
    lat.set_ylim(bottom=0)
    handles = ax.get_legend_handles_labels()[0] + lat.get_legend_handles_labels()[0]
    ax.legend(handles, [str(h.get_label()) for h in handles], fontsize=7, loc="upper left")
    return _save(plt, fig, ax, path, title)


def plot_pareto(
    trials: Sequence[tuple[float, float, bool, str]], path: Path, title: str, target_ms: float
) -> Path:
    """Each trial as (p99 ms, throughput, on the Pareto front, label); the target as a line."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    xs = [t[0] for t in trials]
    ys = [t[1] for t in trials]
    ax.scatter(xs, ys, s=18, color="0.6", label="trials")
    front = sorted((t for t in trials if t[2]), key=lambda t: t[0])
    if front:
        ax.plot(
            [t[0] for t in front], [t[1] for t in front], "o-", color="C0", label="Pareto front"
        )
        for t in front:
            ax.annotate(t[3], (t[0], t[1]), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.axvline(target_ms, color="C3", linestyle="--", label=f"p99 target {target_ms:g} ms")
    ax.set_xlabel("p99 latency (ms)")
    ax.set_ylabel("throughput (inferences/s)")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    return _save(plt, fig, ax, path, title)


def _save(plt: Any, fig: Any, ax: Any, path: Path, title: str) -> Path:
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
