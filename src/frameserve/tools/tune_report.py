"""What ``frameserve tune`` leaves behind: the chosen settings written into ``model.yaml`` (the
old file kept as a backup), a markdown report, every trial as JSON and a Pareto plot.

``model.yaml`` is edited as text, not re-dumped: the keys the tuner owns are taken out and
written again in one marked block at the end, so the user's comments and every other key stay
as they were. The result is parsed with the server's own validation before it replaces the
file, atomically.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from frameserve.errors import ConfigError, MissingExtra
from frameserve.serving.config import parse_model_config
from frameserve.tools.plots import plot_pareto
from frameserve.tools.tune import Trial, TuneResult
from frameserve.tools.tune_space import apply

log = logging.getLogger(__name__)

TUNED_KEYS = (
    "instances",
    "threads",
    "performance_hint",
    "precision",
    "max_batch_size",
    "dynamic_batching",
    "version_policy",
)
MARK = "# tuned by frameserve tune"
_TOP_KEY = re.compile(r"^([A-Za-z_][\w-]*)\s*:")


@dataclass(frozen=True)
class Written:
    config: Path
    backup: Path | None
    report: Path
    trials: Path
    plot: Path | None  # None: matplotlib (the toolkit extra) is not installed


def tuned_settings(base: dict[str, Any], best: Trial, versions: list[int]) -> dict[str, Any]:
    """The tuned keys' new values; the version policy only changes when it must."""
    merged = apply(base, best.candidate)
    out = {k: merged[k] for k in TUNED_KEYS if k in merged and k != "version_policy"}
    if best.candidate.batch == 0:
        out.pop("dynamic_batching", None)
    chosen = best.candidate.precision.version
    current = parse_model_config(base, "model.yaml").version_policy.select(versions)
    if not current or max(current) != chosen:
        out["version_policy"] = {"specific": [chosen]}
    return out


def rewrite_config(text: str, settings: dict[str, Any], header: str) -> str:
    """``text`` without the top-level blocks of ``settings``' keys, plus one marked block."""
    kept: list[str] = []
    skipping = False
    for line in text.splitlines():
        if line.startswith(MARK):
            continue
        m = _TOP_KEY.match(line)
        if m:
            skipping = m.group(1) in settings
        elif line and not line[0].isspace() and not line.startswith("#"):
            skipping = False
        if not skipping:
            kept.append(line)
    while kept and not kept[-1].strip():
        kept.pop()
    block = []
    for key, value in settings.items():
        if isinstance(value, dict):
            block.append(f"{key}:")
            block += [f"  {k}: {_flow(v)}" for k, v in value.items()]
        else:
            block.append(f"{key}: {_flow(value)}")
    return "\n".join([*kept, "", f"{MARK}: {header}", *block]) + "\n"


def _flow(value: Any) -> str:
    """One YAML value on one line (JSON is YAML; plain words stay unquoted)."""
    if isinstance(value, str) and value.isidentifier():
        return value
    return json.dumps(value)


def write_config(folder: Path, settings: dict[str, Any], header: str) -> tuple[Path, Path]:
    """Back up ``model.yaml``, then replace it atomically with the tuned one (validated first)."""
    path = folder / "model.yaml"
    text = path.read_text(encoding="utf-8")
    new_text = rewrite_config(text, settings, header)
    parsed = parse_model_config(yaml.safe_load(new_text), str(path))
    for key, value in settings.items():
        if key != "version_policy" and not _matches(getattr(parsed, key), value):
            raise ConfigError(f"{path}: tuned {key} did not round-trip: {value!r}")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    backup = folder / f"model.yaml.{stamp}.bak"
    shutil.copy2(path, backup)
    tmp = folder / ".model.yaml.tuning"
    tmp.write_text(new_text, encoding="utf-8")
    os.replace(tmp, path)
    return path, backup


def _matches(parsed: Any, value: Any) -> bool:
    if isinstance(value, dict):
        return all(_matches(getattr(parsed, k), v) for k, v in value.items())
    return bool(parsed == value)


def pareto_front(points: list[tuple[float, float]]) -> set[int]:
    """Indices of the (p99, throughput) points no other point beats on both."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = set(), -1.0
    for i in order:
        if points[i][1] > best:
            front.add(i)
            best = points[i][1]
    return front


def write_report(result: TuneResult, folder: Path, written: Path | None) -> Written:
    """report.md, trials.json and pareto.png in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    trials_path = folder / "trials.json"
    trials_path.write_text(
        json.dumps([t.to_json() for t in result.trials], indent=1), encoding="utf-8"
    )
    ops = [(t, p) for t in result.trials if t.rung == "screen" for p in t.points]
    coords = [(p.p99_ms, p.throughput) for _, p in ops]
    front = pareto_front(coords)
    labelled = [
        (p.p99_ms, p.throughput, i in front, f"{t.candidate.label()} c{p.concurrency}")
        for i, (t, p) in enumerate(ops)
    ]
    try:
        plot: Path | None = plot_pareto(
            labelled,
            folder / "pareto.png",
            f"{result.model}: every trial's operating points",
            result.settings.p99_ms,
        )
    except MissingExtra as err:
        log.warning("no Pareto plot: %s", err)
        plot = None
    report = folder / "report.md"
    report.write_text(markdown(result, written), encoding="utf-8")
    return Written(written or Path(), None, report, trials_path, plot)


def start_and_best(result: TuneResult) -> tuple[Trial | None, Trial | None]:
    """The start config's and the winner's final-rung trials (measured side by side)."""
    finals = [t for t in result.trials if t.rung == "final"]
    start = next((t for t in finals if t.candidate == result.start), None)
    return start, result.best


def markdown(result: TuneResult, written: Path | None) -> str:
    lines = [f"# frameserve tune: {result.model}", "", *summary(result, written)]
    lines += ["", "| config | rung | inferences/s | p99 ms | p50 ms | concurrency | meets target |",
              "|---|---|---|---|---|---|---|"]  # fmt: skip
    for t in sorted(result.trials, key=lambda t: (t.rung != "final", -t.score[0], -t.score[1])):
        lines.append(
            f"| {t.candidate.label()} | {t.rung} | {t.throughput:.1f} | {t.p99_ms:.2f} | "
            f"{t.p50_ms:.2f} | {t.concurrency} | {'yes' if t.feasible else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def summary(result: TuneResult, written: Path | None) -> list[str]:
    """The report's bullet points: target, space, cost, the winner against the start."""
    s, space = result.settings, result.space
    start, best = start_and_best(result)
    lines = [
        f"- target: p99 <= {s.p99_ms:g} ms; search: {s.search}; budget {s.budget_s / 60:g} min, "
        f"used {result.seconds / 60:.1f} min",
        f"- space: precision {[p.label() for p in space.precisions]}, layout (instances x "
        f"threads) {list(space.layouts)}, batch {list(space.batches)}, queue delay ms "
        f"{list(space.delays)}: {space.size} configs; screened {result.screened}",
    ]
    if best is not None and best.feasible:
        lines.append(f"- chosen: **{best.candidate.label()}**: {best.throughput:.1f} inferences/s, "
                     f"p99 {best.p99_ms:.2f} ms at concurrency {best.concurrency}")  # fmt: skip
        if start is not None and start.feasible and start.throughput > 0:
            ratio = best.throughput / start.throughput
            lines.append(
                f"- start ({start.candidate.label()}): {start.throughput:.1f} inferences/s, "
                f"p99 {start.p99_ms:.2f} ms: tuned/start = {ratio:.2f}x"
            )
    else:
        lines.append("- no configuration met the target; nothing was written")
    lines.append(f"- model.yaml: {'written: ' + str(written) if written else 'not written'}")
    return lines
