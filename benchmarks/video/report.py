"""Medians of the video benchmark's runs, and the Markdown tables of ``results/latest.md``."""

from __future__ import annotations

import statistics
from typing import Any

from contenders import BASELINES

TARGET = 1.8
FOUR = "frameserve x4"


def _median(values: list[Any]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _medians(rows: list[dict[str, Any]], decode_fps: float | None) -> dict[str, Any]:
    fps = _median([r["fps"] for r in rows])
    out = {
        "runs": len(rows),
        "fps": fps,
        "fps_runs": [round(r["fps"], 2) for r in rows],
        "cpu_ms_per_frame": _median([r["cpu_ms_per_frame"] for r in rows]),
        "startup_s": _median([r.get("startup_s") for r in rows]),
        "content": _median([r.get("content") for r in rows]),
        "of_decode": fps / decode_fps if fps and decode_fps else None,
    }
    if "stages_ms_per_frame" in rows[0]:
        stages = rows[0]["stages_ms_per_frame"]
        out["stages_ms_per_frame"] = {
            s: _median([r["stages_ms_per_frame"][s] for r in rows]) for s in stages
        }
        out["stages_measure"] = rows[0]["stages_measure"]
        out["startup_outside_run_s"] = _median([r["startup_outside_run_s"] for r in rows])
        out["run_fps"] = _median([r["run_fps"] for r in rows])
        models = rows[0]["mean_batch"]
        out["mean_batch"] = {m: _median([r["mean_batch"].get(m) for r in rows]) for m in models}
    return out


def _per_round(rows: list[dict[str, Any]], ours: str, theirs: tuple[str, ...]) -> list[float]:
    """``ours`` fps / the best of ``theirs`` in the same round: ratios measured side by side."""
    ratios = []
    for r in sorted({row["round"] for row in rows}):
        fps = {row["contender"]: row["fps"] for row in rows if row["round"] == r}
        best = max((fps[c] for c in theirs if c in fps), default=None)
        if ours in fps and best:
            ratios.append(fps[ours] / best)
    return ratios


def summarise(rows: list[dict[str, Any]], pipelines: list[str]) -> dict[str, Any]:
    """Medians per clip, per pipeline and contender; ratios; the decode ceilings; errors."""
    timed = [r for r in rows if isinstance(r["round"], int) and "error" not in r]
    clips = list(dict.fromkeys(r["clip"] for r in timed))
    decode: dict[str, dict[str, Any]] = {}
    cells = []
    for clip in clips:
        mine = [r for r in timed if r["clip"] == clip]
        decode[clip] = {
            name: _medians([r for r in mine if r["contender"] == name], None)
            for name in ("decode", "decode skip_loop_filter")
            if any(r["contender"] == name for r in mine)
        }
        ceiling = decode[clip].get("decode", {}).get("fps")
        for pipeline in pipelines:
            runs = [r for r in mine if r.get("pipeline") == pipeline]
            names = list(dict.fromkeys(r["contender"] for r in runs))
            per = {n: _medians([r for r in runs if r["contender"] == n], ceiling) for n in names}
            cells.append(_cell(clip, pipeline, per, runs))
    errors = [
        {k: r.get(k) for k in ("round", "clip", "pipeline", "contender", "error")}
        for r in rows
        if "error" in r
    ]
    return {"decode": decode, "cells": cells, "errors": errors}


def _cell(clip: str, pipeline: str, per: dict[str, Any], runs: list[dict]) -> dict[str, Any]:
    baselines = {c: per[c]["fps"] for c in BASELINES if c in per}
    faster = max(baselines, key=lambda c: baselines[c]) if baselines else None
    fs = per.get("frameserve", {}).get("fps")
    rounds = _per_round(runs, "frameserve", BASELINES)
    four = per.get(FOUR, {}).get("fps")
    return {
        "clip": clip,
        "pipeline": pipeline,
        "contenders": per,
        "faster_baseline": faster,
        "ratio": fs / baselines[faster] if fs and faster else None,
        "ratio_per_round": [round(x, 3) for x in rounds],
        "four_vs_one": four / fs if four and fs else None,
        "four_vs_one_per_round": [round(x, 3) for x in _per_round(runs, FOUR, ("frameserve",))],
    }


def _f(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def _span(values: list[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}x" if values else "-"


def _found(pipeline: str, share: float | None) -> str:
    if share is None:
        return "-"
    return f"face on {share:.0%} of frames" if pipeline == "faces" else f"mask {share:.0%} of area"


def markdown(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    clips = ", ".join(
        f"`{k}` ({c['frames']} frames {c['width']}x{c['height']}, {_f(c['mbps'], '.1f')} Mbit/s)"
        for k, c in meta["clips"].items()
    )
    v, mp = meta["versions"], meta["mediapipe_versions"]
    lines = [
        f"Machine: {meta['cpu']}, {meta['cores']} cores (bf16: "
        f"{', '.join(meta['bf16']) or 'no'}); clips: {clips}; H.264 30 fps; medians of "
        f"{meta['repeats']} round(s), order rotating; commit {meta['commit']}; {meta['date']}.",
        f"OpenVINO {v['openvino']}, OpenCV {v['opencv-python-headless']}, PyAV {v['av']}; "
        + (
            f"MediaPipe {mp['mediapipe']} (its own venv: numpy {mp['numpy']}, OpenCV "
            f"{mp['opencv-contrib-python']})."
            if mp
            else f"**MediaPipe skipped**: {meta['mediapipe_skipped']}."
        ),
        "",
        *_headline(summary),
        "",
        *_contenders(summary),
        "",
        *_decode(summary),
        "",
        *_stages(summary),
        "",
        *_four(summary),
    ]
    if summary["errors"]:
        lines += ["", "Failed runs (not in the medians):", ""]
        lines += [
            f"- round {e['round']}, {e['clip']} {e['pipeline']} {e['contender']}: "
            f"{(e['error'] or '').splitlines()[0][:300]}"
            for e in summary["errors"]
        ]
    return "\n".join(lines) + "\n"


def _headline(summary: dict[str, Any]) -> list[str]:
    lines = [
        "Whole processes, spawn to exit (start-up included); fps = frames / process wall.",
        "",
        "| clip | pipeline | frameserve fps | opencv-openvino fps | mediapipe fps "
        f"| frameserve / faster baseline (target {TARGET}x) | per round |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in summary["cells"]:
        fps = {n: _f(c["contenders"].get(n, {}).get("fps"), ".1f") for n in
               ("frameserve", *BASELINES)}  # fmt: skip
        ratio = c["ratio"]
        versus = f" vs {c['faster_baseline']}" if c["faster_baseline"] else ""
        lines.append(
            f"| {c['clip']} | {c['pipeline']} | {fps['frameserve']} | {fps['opencv-openvino']} | "
            f"{fps['mediapipe']} | **{_f(ratio, '.2f', 'x')}**{versus} | "
            f"{_span(c['ratio_per_round'])} |"
        )
    return lines


def _contenders(summary: dict[str, Any]) -> list[str]:
    lines = [
        "Each contender: fps as a share of the clip's decode-only ceiling, CPU per frame "
        "(children's rusage / frames), start-up (spawn to first result line), what it found.",
        "",
        "| clip | pipeline | contender | fps (runs) | of decode ceiling | CPU ms/frame "
        "| start-up s | found |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in summary["cells"]:
        for name, m in c["contenders"].items():
            if name == FOUR:
                continue
            runs = ", ".join(f"{x:.0f}" for x in m["fps_runs"])
            lines.append(
                f"| {c['clip']} | {c['pipeline']} | {name} | {_f(m['fps'], '.1f')} ({runs}) | "
                f"{_f(m['of_decode'], '.0%')} | {_f(m['cpu_ms_per_frame'], '.2f')} | "
                f"{_f(m['startup_s'], '.2f')} | {_found(c['pipeline'], m['content'])} |"
            )
    return lines


def _decode(summary: dict[str, Any]) -> list[str]:
    lines = [
        "Decode-only ceiling (PyAV, thread_type AUTO, thread_count = cores, frames left in "
        "YUV), and with skip_loop_filter=all for reference:",
        "",
        "| clip | decode fps | CPU ms/frame | skip_loop_filter fps | CPU ms/frame |",
        "|---|---|---|---|---|",
    ]
    for clip, d in summary["decode"].items():
        plain, skip = d.get("decode", {}), d.get("decode skip_loop_filter", {})
        lines.append(
            f"| {clip} | {_f(plain.get('fps'), '.0f')} | {_f(plain.get('cpu_ms_per_frame'), '.2f')}"
            f" | {_f(skip.get('fps'), '.0f')} | {_f(skip.get('cpu_ms_per_frame'), '.2f')} |"
        )
    return lines


def _stages(summary: dict[str, Any]) -> list[str]:
    cells = [c for c in summary["cells"] if "stages_ms_per_frame" in c["contenders"].get(
        "frameserve", {})]  # fmt: skip
    if not cells:
        return []
    first = cells[0]["contenders"]["frameserve"]
    stages = [  # stages no cell used (encode: no video written) are left out
        s
        for s in first["stages_ms_per_frame"]
        if any(c["contenders"]["frameserve"]["stages_ms_per_frame"][s] for c in cells)
    ]
    lines = [
        f"frameserve's stages from `--profile`, ms per frame ({first['stages_measure']} time "
        "each stage was busy, as the profile reports it: stages overlap, inference counts each "
        "batch once, queue wait is each frame's wait in the scheduler, not work); start-up two "
        "ways: spawn to first JSON line, and process wall minus the run's own `wall_s` "
        "(imports, model compilation, teardown).",
        "",
        "| clip | pipeline | " + " | ".join(stages) + " | mean batch | first line s "
        "| wall - run s | run fps |",
        "|---|---|" + "---|" * (len(stages) + 4),
    ]
    for c in cells:
        m = c["contenders"]["frameserve"]
        ms = " | ".join(_f(m["stages_ms_per_frame"][s], ".2f") for s in stages)
        batch = ", ".join(f"{_f(b, '.1f')}" for b in m["mean_batch"].values()) or "-"
        lines.append(
            f"| {c['clip']} | {c['pipeline']} | {ms} | {batch} | {_f(m['startup_s'], '.2f')} | "
            f"{_f(m['startup_outside_run_s'], '.2f')} | {_f(m['run_fps'], '.1f')} |"
        )
    return lines


def _four(summary: dict[str, Any]) -> list[str]:
    cells = [c for c in summary["cells"] if c["four_vs_one"] is not None]
    if not cells:
        return []
    lines = [
        "frameserve with the same clip 4 times in one process against once (aggregate fps):",
        "",
        "| clip | pipeline | 1 input fps | 4 inputs fps | 4 vs 1 | per round |",
        "|---|---|---|---|---|---|",
    ]
    for c in cells:
        one, four = c["contenders"]["frameserve"]["fps"], c["contenders"][FOUR]["fps"]
        lines.append(
            f"| {c['clip']} | {c['pipeline']} | {one:.1f} | {four:.1f} | "
            f"{c['four_vs_one']:.2f}x | {_span(c['four_vs_one_per_round'])} |"
        )
    return lines
