"""Triton's perf_analyzer drives frameserve unchanged (short, bounded runs; no speed asserted)."""

from __future__ import annotations

import csv
import os
import subprocess
from pathlib import Path

import pytest
import tritonclient.http as httpclient

PERF_ANALYZER = Path(
    os.environ.get("FRAMESERVE_PERF_ANALYZER", ".tools/perf_analyzer/perf_analyzer")
)


def _perf_analyzer() -> Path:
    if not PERF_ANALYZER.exists():
        pytest.skip(
            f"perf_analyzer is not installed at {PERF_ANALYZER}: `make perf-analyzer` installs it "
            "(scripts/install-perf-analyzer needs Debian's trixie packages from the registry)"
        )
    return PERF_ANALYZER


def _success_count(server, model: str) -> int:
    stats = httpclient.InferenceServerClient(server.http_url).get_inference_statistics(model)
    return int(stats["model_stats"][0]["inference_stats"]["success"].get("count", 0))


@pytest.mark.parametrize(
    "protocol,extra",
    [("http", []), ("grpc", []), ("grpc", ["--streaming"])],
    ids=["http-binary", "grpc", "grpc-streaming"],
)
def test_perf_analyzer_run(api_server, tmp_path, protocol, extra):
    binary = _perf_analyzer()
    port = api_server.http_port if protocol == "http" else api_server.grpc_port
    report = tmp_path / "report.csv"
    before = _success_count(api_server, "matmul")
    cmd = [
        str(binary), "-m", "matmul", "-u", f"127.0.0.1:{port}", "-i", protocol,
        "--concurrency-range", "4", "--measurement-mode", "count_windows",
        "--measurement-request-count", "200", "--max-trials", "3",
        # a compatibility check, not a measurement: any spread between windows is accepted
        "--stability-percentage", "999",
        "-f", str(report), *extra,
    ]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    rows = list(csv.DictReader(report.open()))
    assert rows and float(rows[0]["Inferences/Second"]) > 0
    # the server saw at least the requests perf_analyzer measured
    assert _success_count(api_server, "matmul") - before >= 200
    # perf_analyzer reads our statistics extension for the server-side queue/compute split
    assert "Server:" in run.stdout and "queue" in run.stdout.lower()
