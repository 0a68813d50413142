"""Triton's quick-start repository served unchanged: ``densenet_onnx`` with its config.pbtxt as
Triton's documentation writes it (``reshape`` on the input and the output, ``format``,
``label_filename``), a 1000-line label file and a small ONNX model with densenet's tensor names
and shapes. Driven by tritonclient over HTTP and gRPC with the image shape [3,224,224], the
classification extension (``class_count=3``) included. The newer form of the same example
(``max_batch_size: 1``, an output reshape only) is served next to it, so reshape is exercised
with and without a batch dimension.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from models import densenet_like
from servers import RunningServer, ServerLauncher

# docs/examples/model_repository/densenet_onnx/config.pbtxt in Triton's server repository
DENSENET = """name: "densenet_onnx"
platform: "onnxruntime_onnx"
max_batch_size : 0
input [
  {
    name: "data_0"
    data_type: TYPE_FP32
    format: FORMAT_NCHW
    dims: [ 3, 224, 224 ]
    reshape { shape: [ 1, 3, 224, 224 ] }
  }
]
output [
  {
    name: "fc6_1"
    data_type: TYPE_FP32
    dims: [ 1000 ]
    reshape { shape: [ 1, 1000, 1, 1 ] }
    label_filename: "densenet_labels.txt"
  }
]
"""

# The same file in later Triton releases (the model file has a batch dimension), renamed
DENSENET_BATCHED = """name: "densenet_batched"
platform: "onnxruntime_onnx"
max_batch_size : 1
input [
  {
    name: "data_0"
    data_type: TYPE_FP32
    format: FORMAT_NCHW
    dims: [ 3, 224, 224 ]
  }
]
output [
  {
    name: "fc6_1"
    data_type: TYPE_FP32
    dims: [ 1000 ]
    reshape { shape: [ 1000, 1, 1 ] }
    label_filename: "densenet_labels.txt"
  }
]
"""

LABELS = [f"CLASS_{i:03d}" for i in range(1000)]


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("quickstart") / "models"
    for name, text, batch in (
        ("densenet_onnx", DENSENET, 1),
        ("densenet_batched", DENSENET_BATCHED, "N"),
    ):
        densenet_like(repo / name / "1" / "model.onnx", batch=batch)
        (repo / name / "config.pbtxt").write_text(text)
        (repo / name / "densenet_labels.txt").write_text("\n".join(LABELS) + "\n")
    return repo


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[RunningServer]:
    loads = ("--load-model", "densenet_onnx", "--load-model", "densenet_batched")
    running = ServerLauncher(repo.parent).start(repo, "--model-control-mode", "explicit", *loads)
    yield running
    assert running.terminate() == 0, running.log()


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(0).random((3, 224, 224), dtype=np.float32)


def expected_scores(repo: Path, image: np.ndarray) -> np.ndarray:
    """What the model file itself gives, run directly in its own shapes."""
    session = ort.InferenceSession(str(repo / "densenet_onnx" / "1" / "model.onnx"))
    (out,) = session.run(["fc6_1"], {"data_0": image.reshape(1, 3, 224, 224)})
    assert out.shape == (1, 1000, 1, 1)
    return np.asarray(out).reshape(1000)


def triton_top3(scores: np.ndarray) -> list[bytes]:
    order = np.argsort(-scores, kind="stable")[:3]
    return [f"{scores[i]:f}:{i}:{LABELS[i]}".encode() for i in order]


@pytest.mark.parametrize("client", [httpclient, grpcclient], ids=["http", "grpc"])
def test_quickstart_densenet_infers_and_classifies(
    server: RunningServer, repo: Path, image: np.ndarray, client
) -> None:
    url = server.http_url if client is httpclient else server.grpc_url
    triton = client.InferenceServerClient(url)
    tensor = client.InferInput("data_0", [3, 224, 224], "FP32")
    tensor.set_data_from_numpy(image)
    scores = expected_scores(repo, image)

    result = triton.infer("densenet_onnx", [tensor])
    assert result.as_numpy("fc6_1").shape == (1000,)
    np.testing.assert_allclose(result.as_numpy("fc6_1"), scores, rtol=1e-5, atol=1e-5)

    top = client.InferRequestedOutput("fc6_1", class_count=3)
    classes = triton.infer("densenet_onnx", [tensor], outputs=[top]).as_numpy("fc6_1")
    assert classes.shape == (3,)
    assert list(classes) == triton_top3(scores)

    # The batched form: [1,3,224,224] in, [1,1000] out, classes [1,3]
    batched = client.InferInput("data_0", [1, 3, 224, 224], "FP32")
    batched.set_data_from_numpy(image[None])
    result = triton.infer("densenet_batched", [batched])
    np.testing.assert_allclose(result.as_numpy("fc6_1")[0], scores, rtol=1e-5, atol=1e-5)
    classes = triton.infer("densenet_batched", [batched], outputs=[top]).as_numpy("fc6_1")
    assert classes.shape == (1, 3) and list(classes[0]) == triton_top3(scores)


def test_metadata_and_config_show_what_clients_send(server: RunningServer) -> None:
    http = httpclient.InferenceServerClient(server.http_url)
    meta = http.get_model_metadata("densenet_onnx")
    assert meta["inputs"] == [{"name": "data_0", "datatype": "FP32", "shape": [3, 224, 224]}]
    assert meta["outputs"] == [{"name": "fc6_1", "datatype": "FP32", "shape": [1000]}]
    config = http.get_model_config("densenet_onnx")
    (data,) = config["input"]
    (fc,) = config["output"]
    assert data["dims"] == [3, 224, 224] and data["reshape"] == {"shape": [1, 3, 224, 224]}
    assert data["format"] == "FORMAT_NCHW"
    assert fc["dims"] == [1000] and fc["reshape"] == {"shape": [1, 1000, 1, 1]}
    assert fc["label_filename"] == "densenet_labels.txt"
    grpc_config = grpcclient.InferenceServerClient(server.grpc_url).get_model_config(
        "densenet_onnx"
    )
    assert list(grpc_config.config.output[0].reshape.shape) == [1, 1000, 1, 1]


def test_config_round_trips_through_load(server: RunningServer) -> None:
    http = httpclient.InferenceServerClient(server.http_url)
    before = http.get_model_config("densenet_onnx")
    http.load_model("densenet_onnx", config=json.dumps(before))
    assert http.get_model_config("densenet_onnx") == before


def test_a_request_in_the_model_files_shape_is_refused(server: RunningServer) -> None:
    http = httpclient.InferenceServerClient(server.http_url)
    tensor = httpclient.InferInput("data_0", [1, 3, 224, 224], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 3, 224, 224), np.float32))
    with pytest.raises(Exception, match=r"expects \[3, 224, 224\], got \[1, 3, 224, 224\]"):
        http.infer("densenet_onnx", [tensor])
