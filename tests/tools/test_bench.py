"""``frameserve bench``: in-process and against a real server over HTTP and gRPC.

Real models (the example repository's ONNX matmul on ONNX Runtime, a small dynamic-shape
identity on OpenVINO), a real server on loopback ports, real statistics. Nothing here asserts
a speed: points are checked for shape, consistency and agreement with the server's counters.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from frameserve.cli.main import main
from frameserve.tools.bench import BenchSettings, bench_repository, bench_url, parse_shape
from frameserve.tools.example_models import make_example_repository, write_model_yaml
from frameserve.tools.loadgen import Load, percentiles

from models import identity

SHORT = {"duration_s": 0.4, "warmup_s": 0.1}
REQUIRED = {"throughput", "p50_ms", "p99_ms", "batch_size", "concurrency", "request_rate"}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bench") / "models"
    make_example_repository(root)
    identity(root / "dyn" / "1" / "model.onnx", "FP32", ["N", 3, "H", "W"])
    write_model_yaml(root / "dyn", {"backend": "openvino", "max_batch_size": 4})
    return root


def test_in_process_points_are_consistent(repo: Path) -> None:
    settings = BenchSettings(concurrency=(1, 3), batch_size=(1, 4), **SHORT)
    points = bench_repository(repo, "matmul", settings)
    assert [(p.batch_size, p.concurrency) for p in points] == [(1, 1), (1, 3), (4, 1), (4, 3)]
    for p in points:
        assert p.errors == 0 and p.client_requests > 0
        assert p.throughput == pytest.approx(p.requests_per_s * p.batch_size)
        assert 0 < p.p50_ms <= p.p90_ms <= p.p95_ms <= p.p99_ms
        # the server counted exactly what the client sent, warm-up included
        assert p.counts_agree, p
        assert p.server_inferences == p.client_requests * p.batch_size
        assert p.server_compute_ms > 0 and p.server_mean_batch >= p.batch_size


def test_open_loop_keeps_its_schedule(repo: Path) -> None:
    settings = BenchSettings(request_rate=(40.0,), duration_s=1.0, warmup_s=0.2)
    (p,) = bench_repository(repo, "matmul", settings)
    assert p.request_rate == 40.0 and p.concurrency is None
    # constant spacing: never more completions in the window than the schedule sent
    assert 0 < p.client_requests <= 40 * 1.2 + 2
    assert p.counts_agree


def test_open_dims_need_a_shape(repo: Path) -> None:
    from frameserve.errors import InvalidInput

    with pytest.raises(
        InvalidInput, match=r"--shape INPUT0: the model's input has dims \[3, -1, -1\]"
    ):
        bench_repository(repo, "dyn", BenchSettings(**SHORT))
    points = bench_repository(repo, "dyn", BenchSettings(shapes={"INPUT0": (3, 8, 5)}, **SHORT))
    assert points[0].errors == 0 and points[0].counts_agree


@pytest.mark.parametrize("scheme", ["http", "grpc"])
def test_remote_counts_agree_with_the_server(
    repo: Path, start_server: Callable[..., object], scheme: str
) -> None:
    server = start_server(repo)
    url = f"{scheme}://" + (server.http_url if scheme == "http" else server.grpc_url)  # type: ignore[attr-defined]
    settings = BenchSettings(concurrency=(2,), batch_size=(1, 2), **SHORT)
    points = bench_url(url, "convnet", settings)
    assert len(points) == 2
    for p in points:
        assert p.errors == 0 and p.counts_agree, p
        assert p.version == "1" and p.client_cpu_cores >= 0
    # the server's cumulative statistics hold every request of both points
    status, body = server.get("/v2/models/convnet/stats")  # type: ignore[attr-defined]
    stats = json.loads(body)["model_stats"][0]
    assert int(stats["inference_stats"]["success"]["count"]) >= sum(
        p.client_requests for p in points
    )


def test_cli_json_and_plot(repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plot = tmp_path / "curve.png"
    args = ["bench", "--repository", str(repo), "--model", "matmul", "--batch-size", "1", "2",
            "--concurrency", "2", "--duration", "0.3", "--warmup", "0.1", "--json",
            "--plot", str(plot)]  # fmt: skip
    assert main(args) == 0
    points = json.loads(capsys.readouterr().out)
    assert isinstance(points, list) and len(points) == 2
    for p in points:
        assert p.keys() >= REQUIRED
        assert isinstance(p["throughput"], float) and p["throughput"] > 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_table(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["bench", "--repository", str(repo), "--model", "matmul", "--duration", "0.3",
            "--warmup", "0"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "infer/s" in out and "c=1" in out and "client cpu" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "nope"], "has no model 'nope'; it has ['convnet', 'dyn', 'matmul']"),
        (["--model", "matmul", "--batch-size", "65"], "max_batch_size 64, got 65"),
        (["--model", "dyn", "--shape", "INPUT0:3,a,4"], "expected NAME:D1,D2,... with dims >= 1"),
        (["--model", "dyn", "--shape", "y:3,4,4"], "has inputs ['INPUT0'], got ['y']"),
    ],
)
def test_cli_bad_input(
    repo: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main(["bench", "--repository", str(repo), "--duration", "0.2", *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("frameserve bench: ") and message in err


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://127.0.0.1:1", "expected http://HOST:PORT or grpc://HOST:PORT, got 'ftp://"),
        ("http://127.0.0.1:9", "cannot connect"),
    ],
)
def test_cli_bad_url(capsys: pytest.CaptureFixture[str], url: str, message: str) -> None:
    assert main(["bench", "--url", url, "--model", "m", "--duration", "0.2"]) == 1
    assert message in capsys.readouterr().err


def test_argument_errors_exit_2() -> None:
    for bad in (["--concurrency", "0"], ["--request-rate", "-1"], ["--duration", "0"]):
        with pytest.raises(SystemExit) as exc:
            main(["bench", "--repository", ".", "--model", "m", *bad])
        assert exc.value.code == 2


def test_helpers() -> None:
    assert parse_shape("image:3,224,224") == ("image", (3, 224, 224))
    assert percentiles([])["p99"] == 0.0
    assert percentiles([1_000_000, 3_000_000])["p50"] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="not both"):
        Load(concurrency=1, rate=2.0)
    with pytest.raises(ValueError, match="expected >= 1"):
        Load(concurrency=0)
