"""Facts about the machine and the software a result was measured with."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import urllib.request
from pathlib import Path

import psutil
from common import cpu_model, git_commit


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def perf_analyzer_version(binary: Path) -> str | None:
    """The perf-analyzer wheel's version (the binary itself reports 0.0.0)."""
    wheel = binary.resolve().parent.parent.parent  # .../wheel/perf_analyzer/bin/perf_analyzer
    for info in wheel.glob("perf_analyzer-*.dist-info"):
        return info.name.removeprefix("perf_analyzer-").removesuffix(".dist-info")
    return None


def machine_facts(root: Path, perf_analyzer: Path) -> dict:
    """nproc, CPU model, memory, kernel, load, and the versions of everything measured."""
    return {
        "nproc": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "loadavg_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "versions": {
            "frameserve": _version("frameserve"),
            "frameserve_git": git_commit(root),
            "openvino": _version("openvino"),
            "numpy": _version("numpy"),
            "tritonclient": _version("tritonclient"),
            "perf_analyzer": perf_analyzer_version(perf_analyzer),
        },
    }


def server_version(http_url: str) -> str | None:
    """``name version`` from a KServe v2 server's metadata (``GET /v2``)."""
    try:
        with urllib.request.urlopen(f"http://{http_url}/v2", timeout=2) as resp:
            meta = json.loads(resp.read())
    except (OSError, ValueError):
        return None
    return f"{meta.get('name', '?')} {meta.get('version', '?')}"
