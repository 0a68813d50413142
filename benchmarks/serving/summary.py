"""Medians over repeats and the side-by-side ratios, from the raw per-repeat records.

Ratios are paired: each is computed within one repeat (both sides measured minutes apart on
the same machine state), and the median of those per-repeat ratios is reported.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable

SIDES = ("frameserve", "triton")
POINT_FIELDS = ("throughput", "p50_ms", "p90_ms", "p99_ms", "avg_batch")


def median(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.median(kept) if kept else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def points_of(model_result: dict, side: str) -> list[dict]:
    """Every load point of one side, each tagged with its repeat."""
    out = []
    for start in model_result["servers"][side]:
        out.extend({**p, "repeat": start["repeat"]} for p in start["points"])
    return out


def _derived(point: dict) -> dict:
    """Cores used by client, server and others; server CPU per inference."""
    wall = point.get("wall_s") or 0.0
    out: dict[str, float | None] = {}
    for key in ("client", "server", "other"):
        cpu = point.get(f"{key}_cpu_s")
        out[f"{key}_cores"] = cpu / wall if cpu is not None and wall else None
    thr = point.get("throughput")
    server_cores = out["server_cores"]
    out["server_cpu_ms_per_inf"] = 1000 * server_cores / thr if server_cores and thr else None
    return out


def point_medians(points: list[dict]) -> dict:
    """Median of each measured field over the repeats of one (protocol, concurrency)."""
    ok = [p for p in points if p["ok"]]
    derived = [_derived(p) for p in points]
    result = {f: median(p[f] for p in ok) for f in POINT_FIELDS}
    for key in derived[0] if derived else ():
        result[key] = median(d[key] for d in derived)
    result["rss_peak"] = median(p.get("server_rss_peak") for p in points)
    result["runs_ok"] = f"{len(ok)}/{len(points)}"
    keys = {k for p in ok for k in (p.get("breakdown_us") or {})}
    result["breakdown_us"] = {k: median(p["breakdown_us"].get(k) for p in ok) for k in keys}
    return result


def side_medians(model_result: dict, side: str) -> dict:
    """{protocol: {concurrency: medians}} plus start-up and idle memory medians."""
    grouped: dict[tuple[str, int], list[dict]] = {}
    for p in points_of(model_result, side):
        grouped.setdefault((p["protocol"], p["concurrency"]), []).append(p)
    table: dict[str, dict[int, dict]] = {}
    for (proto, conc), pts in sorted(grouped.items()):
        table.setdefault(proto, {})[conc] = point_medians(pts)
    starts = model_result["servers"][side]
    return {
        "points": table,
        "startup_s": median(s.get("startup_s") for s in starts),
        "rss_idle": median(s.get("rss_idle") for s in starts),
        "pss_idle": median(s.get("pss_idle") for s in starts),
        "rss_idle_after_load": median(s.get("rss_idle_after_load") for s in starts),
        "rss_peak": max(
            (p.get("rss_peak") or 0 for t in table.values() for p in t.values()), default=None
        ),  # fmt: skip
        "errors": [s["error"] for s in starts if s.get("error")],
        "version": next((s["version"] for s in starts if s.get("version")), None),
    }


def ceiling_medians(model_result: dict) -> dict[int, float | None]:
    by_batch: dict[int, list[float]] = {}
    for run in model_result["ceiling"]:
        by_batch.setdefault(run["batch"], []).append(run.get("infer_per_sec"))
    return {b: median(v) for b, v in sorted(by_batch.items())}


def reached_batch(avg_batch: float | None, max_batch_size: int) -> int | None:
    """The whole batch size nearest to the average a server reached."""
    if avg_batch is None:
        return None
    return min(max(1, round(avg_batch)), max_batch_size)


def _point(model_result: dict, side: str, repeat: int, proto: str, conc: int) -> dict:
    for start in model_result["servers"][side]:
        if start["repeat"] != repeat:
            continue
        for p in start["points"]:
            if p["protocol"] == proto and p["concurrency"] == conc and p["ok"]:
                return p
    return {}


def paired_ratios(model_result: dict, protocol: str, conc: int) -> dict[str, float | None]:
    """Per-repeat ratios at one concurrency, then their medians."""
    ceiling = {(c["repeat"], c["batch"]): c.get("infer_per_sec") for c in model_result["ceiling"]}
    max_batch = model_result["config"]["max_batch_size"]
    repeats = sorted({s["repeat"] for s in model_result["servers"]["frameserve"]})
    ratios: dict[str, list[float | None]] = {}
    for r in repeats:
        fs = _point(model_result, "frameserve", r, protocol, conc)
        tr = _point(model_result, "triton", r, protocol, conc)
        at = reached_batch(fs.get("avg_batch"), max_batch)
        pairs = {
            "frameserve_over_raw_batch1": (fs.get("throughput"), ceiling.get((r, 1))),
            "frameserve_over_raw_reached_batch": (fs.get("throughput"), ceiling.get((r, at))),
            "frameserve_over_triton_throughput": (fs.get("throughput"), tr.get("throughput")),
            "frameserve_over_triton_p99": (fs.get("p99_ms"), tr.get("p99_ms")),
            "frameserve_over_triton_p50": (fs.get("p50_ms"), tr.get("p50_ms")),
        }
        for key, (a, b) in pairs.items():
            ratios.setdefault(key, []).append(_ratio(a, b))
    return {key: median(values) for key, values in ratios.items()}


def summarize(model_result: dict, protocols: Iterable[str], headline_conc: int) -> dict:
    """Medians per side, ceilings by batch and the headline ratios for one model."""
    return {
        "sides": {side: side_medians(model_result, side) for side in SIDES},
        "ceiling": ceiling_medians(model_result),
        "ratios": {p: paired_ratios(model_result, p, headline_conc) for p in protocols},
        "headline_concurrency": headline_conc,
    }
