"""A Triton model repository served unchanged: the layout Triton's documentation shows
(``config.pbtxt`` next to ``1/model.onnx``), and the copies Triton's Model Analyzer writes
(``<model>_config_<n>/config.pbtxt``, the message re-serialised by protobuf's text format with
instance count, max_batch_size and dynamic_batching varied), driven by tritonclient (HTTP and
gRPC) and perf_analyzer. A config returned by ``GET .../config`` loads back to the same config.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as client_mc

from models import simple_add_sub
from servers import RunningServer, ServerLauncher

PERF_ANALYZER = Path(
    os.environ.get("FRAMESERVE_PERF_ANALYZER", ".tools/perf_analyzer/perf_analyzer")
)

# As Triton's docs write it: list syntax, comments, platform rather than backend.
SIMPLE = """
# Triton's "simple" add/sub model
name: "simple"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [
  {
    name: "INPUT0"
    data_type: TYPE_INT32
    dims: [ 16 ]
  },
  {
    name: "INPUT1"
    data_type: TYPE_INT32
    dims: [ 16 ]
  }
]
output [
  {
    name: "OUTPUT0"
    data_type: TYPE_INT32
    dims: [ 16 ]
  },
  {
    name: "OUTPUT1"
    data_type: TYPE_INT32
    dims: [ 16 ]
  }
]
instance_group [ { count: 1, kind: KIND_CPU } ]
dynamic_batching { max_queue_delay_microseconds: 100 }
"""

# (instance count, max_batch_size, dynamic batching) per variant, as a Model Analyzer sweep
VARIANTS = [(1, 4, False), (2, 8, True)]


def _model_analyzer_variants(repo: Path) -> list[str]:
    """Write ``simple_config_<n>`` the way Model Analyzer does: parse the original, change
    the swept fields and the name, write it with ``text_format.MessageToString``, copy the
    version folders."""
    names = []
    for n, (count, batch, dynamic) in enumerate(VARIANTS):
        message = text_format.Parse(SIMPLE, client_mc.ModelConfig())
        name = f"simple_config_{n}"
        message.name = name
        message.max_batch_size = batch
        del message.instance_group[:]
        message.instance_group.add(count=count, kind=client_mc.ModelInstanceGroup.KIND_CPU)
        message.ClearField("dynamic_batching")
        if dynamic:
            message.dynamic_batching.SetInParent()
        folder = repo / name
        shutil.copytree(repo / "simple" / "1", folder / "1")
        (folder / "config.pbtxt").write_text(text_format.MessageToString(message))
        names.append(name)
    return names


@pytest.fixture(scope="module")
def triton_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    folder = tmp_path_factory.mktemp("triton")
    repo = folder / "models"
    simple_add_sub(repo / "simple" / "1" / "model.onnx")
    (repo / "simple" / "config.pbtxt").write_text(SIMPLE)
    names = ["simple", *_model_analyzer_variants(repo)]
    loads = [arg for name in names for arg in ("--load-model", name)]
    server = ServerLauncher(folder).start(repo, "--model-control-mode", "explicit", *loads)
    yield server
    assert server.terminate() == 0, server.log()


def _inputs(module, n: int) -> tuple[list, np.ndarray]:
    a = np.arange(16 * n, dtype=np.int32).reshape(n, 16)
    tensors = [module.InferInput(name, [n, 16], "INT32") for name in ("INPUT0", "INPUT1")]
    tensors[0].set_data_from_numpy(a)
    tensors[1].set_data_from_numpy(np.ones_like(a))
    return tensors, a


def test_tritonclient_http_and_grpc(triton_server: RunningServer) -> None:
    http = httpclient.InferenceServerClient(triton_server.http_url)
    inputs, a = _inputs(httpclient, 3)
    result = http.infer("simple", inputs)
    assert (result.as_numpy("OUTPUT0") == a + 1).all()
    assert (result.as_numpy("OUTPUT1") == a - 1).all()
    grpc = grpcclient.InferenceServerClient(triton_server.grpc_url)
    inputs, a = _inputs(grpcclient, 8)
    result = grpc.infer("simple_config_1", inputs)
    assert (result.as_numpy("OUTPUT0") == a + 1).all()
    config = grpc.get_model_config("simple_config_1").config
    assert config.max_batch_size == 8 and config.instance_group[0].count == 2
    assert config.HasField("dynamic_batching")


def test_model_analyzer_variants_keep_their_settings(triton_server: RunningServer) -> None:
    http = httpclient.InferenceServerClient(triton_server.http_url)
    for n, (count, batch, dynamic) in enumerate(VARIANTS):
        config = http.get_model_config(f"simple_config_{n}")
        assert config["max_batch_size"] == batch
        assert config["instance_group"][0]["count"] == count
        assert ("dynamic_batching" in config) == dynamic
    # simple_config_0 has max_batch_size 4: a batch of 8 is refused, naming the limit
    inputs, _ = _inputs(httpclient, 8)
    with pytest.raises(Exception, match="batch size must be within 1..4"):
        http.infer("simple_config_0", inputs)


def test_config_round_trips_through_load(triton_server: RunningServer) -> None:
    http = httpclient.InferenceServerClient(triton_server.http_url)
    before = http.get_model_config("simple_config_1")
    http.load_model("simple_config_1", config=json.dumps(before))
    assert http.get_model_config("simple_config_1") == before
    with pytest.raises(Exception, match="neither a frameserve model config .* nor Triton's"):
        http.load_model("simple_config_1", config=json.dumps({"platform": "tensorrt_plan"}))


def test_perf_analyzer_drives_the_triton_folder(triton_server: RunningServer) -> None:
    if not PERF_ANALYZER.exists():
        pytest.skip(f"perf_analyzer is not installed at {PERF_ANALYZER} (`make perf-analyzer`)")
    cmd = [
        str(PERF_ANALYZER), "-m", "simple", "-i", "grpc",
        "-u", f"127.0.0.1:{triton_server.grpc_port}",
        "--concurrency-range", "2", "--measurement-mode", "count_windows",
        "--measurement-request-count", "100", "--max-trials", "3",
        "--stability-percentage", "999",
    ]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Throughput:" in run.stdout
