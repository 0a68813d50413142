"""A corpus of hostile and mistaken inputs against one real server: each gets its expected answer,
and afterwards the server is ready, is the same process and has not grown by 300 MB.

Each row is a ``Case``: where it goes (area), a name, how it is sent, the expected HTTP status or
gRPC code, and a substring the message must contain. ``test_bad_input.py`` keeps the older
focused tests (queue full, deadlines, tritonclient's own errors); this table is the place to add
a row for every new kind of bad input: other suites (keys, TLS, source policy, limits) append
their rows to ``CASES`` with the helpers in ``bad_inputs.py``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from bad_inputs import (
    SHM_PREFIX,
    Case,
    Target,
    binary_past_body,
    grpc_infer,
    grpc_load,
    grpc_raw,
    grpc_shm_x,
    grpc_subscribe,
    grpc_x,
    gzip_bomb,
    http,
    http_answer,
    infer,
    shm_grpc_size_not_the_shape,
    shm_grpc_truncated,
    shm_output_truncated,
    shm_over_cap,
    shm_size_not_the_shape,
    shm_truncated,
    shm_window_outside,
    upload,
    x,
)

from frameserve.api.grpc.generated import grpc_service_pb2 as pb

from repos import api_repository
from servers import ServerLauncher

MAX_RSS_GROWTH_KB = 300 * 1024

DEEP = x(shape=[1] * 65, data=[1.0])
SHM = "/v2/systemsharedmemory/region"
CASES: list[Case] = [
    # -- HTTP inference: JSON bodies ------------------------------------------------------------
    Case("http", "not-json", http("POST", "/v2/models/matmul/infer", b"{nope"), 400, "JSON"),
    Case("http", "json-array", http("POST", "/v2/models/matmul/infer", b"[1]"), 400, "object"),
    Case("http", "no-inputs", http("POST", "/v2/models/matmul/infer", {}), 400, "inputs"),
    Case("http", "inputs-not-list", infer({"x": 1}), 400, "inputs"),
    Case("http", "65-dims", infer([DEEP]), 400, "at most 64 dimensions"),
    Case("http", "negative-dim", infer([x(shape=[-1, 64])]), 400, "shape"),
    Case("http", "huge-shape", infer([x(shape=[2**40, 2**40])]), 413, "elements"),
    Case("http", "unknown-datatype", infer([x(datatype="FP33")]), 400, "datatype"),
    Case("http", "short-data", infer([x(data=[1.0])]), 400, "inputs[0]"),
    Case("http", "string-data", infer([x(data=["a"] * 64)]), 400, "inputs[0].data"),
    Case("http", "nested-junk-data", infer([x(data=[[{}]] * 64)]), 400, "inputs[0].data"),
    Case("http", "id-not-string", infer([x()], id=7), 400, "id"),
    Case("http", "priority-negative", infer([x()], parameters={"priority": -1}), 400, "priority"),
    Case("http", "timeout-superscript", infer([x()], parameters={"timeout": "²"}), 400, "timeout"),
    Case(
        "http",
        "header-length-superscript",
        http(
            "POST",
            "/v2/models/matmul/infer",
            {"inputs": [x()]},
            {"Inference-Header-Content-Length": "²"},
        ),
        400,
        "Inference-Header-Content-Length",
    ),
    Case(
        "http",
        "header-length-past-body",
        http("POST", "/v2/models/matmul/infer", b"{}", {"Inference-Header-Content-Length": "99"}),
        400,
        "larger than the body",
    ),
    Case("http", "binary-size-past-body", binary_past_body(), 400, "binary_data_size"),
    Case(
        "http",
        "unknown-encoding",
        http("POST", "/v2/models/matmul/infer", b"{}", {"Content-Encoding": "zstd-x"}),
        400,
        "Content-Encoding",
    ),
    Case(
        "http",
        "bad-gzip",
        http("POST", "/v2/models/matmul/infer", b"not gzip", {"Content-Encoding": "gzip"}),
        400,
        "gzip",
    ),
    Case(
        "http",
        "gzip-bomb",
        http("POST", "/v2/models/matmul/infer", gzip_bomb(), {"Content-Encoding": "gzip"}),
        413,
        "limit",
    ),
    Case(
        "http",
        "body-over-limit",
        http("POST", "/v2/models/matmul/infer", b" " * (9 * 2**20)),
        413,
        "limit",
    ),
    Case("http", "unknown-model", infer([x()], model="nope"), 404, "nope"),
    Case(
        "http",
        "version-superscript",
        http("POST", "/v2/models/matmul/versions/%C2%B2/infer", {"inputs": [x()]}),
        400,
        "model version",
    ),
    Case(
        "http",
        "unknown-version",
        http("POST", "/v2/models/matmul/versions/99/infer", {"inputs": [x()]}),
        404,
        "99",
    ),
    Case(
        "http",
        "encoded-slash",
        http("POST", "/v2/models/a%2Fb/infer", {"inputs": [x()]}),
        400,
        "'/'",
    ),
    Case("http", "unknown-output", infer([x()], outputs=[{"name": "zz"}]), 400, "zz"),
    Case(
        "http",
        "classification-text",
        infer([x()], outputs=[{"name": "y", "parameters": {"classification": "²"}}]),
        400,
        "classification",
    ),
    Case(
        "http",
        "bytes-not-strings",
        infer(
            [{"name": "IN", "datatype": "BYTES", "shape": [1, 1], "data": [5]}], model="echo_bytes"
        ),
        400,
        "data",
    ),
    Case("http", "unknown-path", http("GET", "/v2/nothing/here"), 404, "Not Found"),
    Case("http", "wrong-method", http("GET", "/v2/models/matmul/infer"), 405, "Method"),
    Case(
        "http",
        "model-raises",
        infer(
            [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [-1.0] * 4}],
            model="failing",
        ),
        500,
        "negative input",
    ),
    # -- gRPC -----------------------------------------------------------------------------------
    Case(
        "grpc",
        "garbage",
        grpc_raw("ModelInfer", b"\xff\xff\xff\xff"),
        "INVALID_ARGUMENT",
        "ModelInferRequest",
    ),
    Case(
        "grpc",
        "length-past-end",
        grpc_raw("ModelInfer", b"\x0a\x7fabc"),
        "INVALID_ARGUMENT",
        "declares",
    ),
    Case(
        "grpc",
        "group-wire-type",
        grpc_raw("ModelInfer", b"\x0b\x0c"),
        "INVALID_ARGUMENT",
        "wire types",
    ),
    Case(
        "grpc",
        "65-dims",
        grpc_infer(grpc_x([1] * 65, b"\0" * 4)),
        "INVALID_ARGUMENT",
        "at most 64 dimensions",
    ),
    Case("grpc", "negative-dim", grpc_infer(grpc_x([-1, 64], b"")), "INVALID_ARGUMENT", "dims"),
    Case(
        "grpc",
        "raw-size-mismatch",
        grpc_infer(grpc_x([1, 64], b"\0" * 7)),
        "INVALID_ARGUMENT",
        "bytes",
    ),
    Case(
        "grpc",
        "unknown-model",
        grpc_infer(grpc_x([1, 64], b"\0" * 256, "nope")),
        "NOT_FOUND",
        "nope",
    ),
    Case(
        "grpc",
        "huge-shape",
        grpc_infer(grpc_x([2**31, 2**31], b"")),
        "RESOURCE_EXHAUSTED",
        "elements",
    ),
    Case(
        "grpc",
        "metadata-unknown-model",
        grpc_raw("ModelMetadata", pb.ModelMetadataRequest(name="nope").SerializeToString()),
        "NOT_FOUND",
        "nope",
    ),
    Case(
        "grpc",
        "metadata-garbage",
        grpc_raw("ModelMetadata", b"\xff\xff"),
        "INVALID_ARGUMENT",
        "ModelMetadataRequest",
    ),
    Case(
        "grpc",
        "config-version-superscript",
        grpc_raw(
            "ModelConfig", pb.ModelConfigRequest(name="matmul", version="²").SerializeToString()
        ),
        "INVALID_ARGUMENT",
        "model version",
    ),
    Case("grpc", "cuda-shm", grpc_raw("CudaSharedMemoryRegister", b""), "UNIMPLEMENTED", "CUDA"),
    Case(
        "grpc",
        "shm-unknown-region",
        grpc_infer(grpc_shm_x("nowhere")),
        "INVALID_ARGUMENT",
        "nowhere",
    ),
    # -- repository ----------------------------------------------------------------------------
    Case(
        "repository", "load-unknown", http("POST", "/v2/repository/models/nope/load"), 404, "nope"
    ),
    Case(
        "repository",
        "load-config-not-string",
        http("POST", "/v2/repository/models/matmul/load", {"parameters": {"config": {}}}),
        400,
        "parameters.config",
    ),
    Case(
        "repository",
        "load-config-wrong-field",
        http(
            "POST",
            "/v2/repository/models/matmul/load",
            {"parameters": {"config": json.dumps({"max_batch_size": "²"})}},
        ),
        400,
        "max_batch_size",
    ),
    Case(
        "repository",
        "load-config-not-json",
        http("POST", "/v2/repository/models/matmul/load", {"parameters": {"config": "{"}}),
        400,
        "config",
    ),
    Case(
        "repository",
        "load-file-override",
        http(
            "POST",
            "/v2/repository/models/matmul/load",
            {"parameters": {"file:1/model.onnx": "AAAA"}},
        ),
        400,
        "parameters",
    ),
    Case(
        "repository",
        "unload-unknown-parameter",
        http("POST", "/v2/repository/models/matmul/unload", {"parameters": {"force": True}}),
        400,
        "unload_dependents",
    ),
    Case(
        "repository",
        "index-ready-text",
        http("POST", "/v2/repository/index", {"ready": "yes"}),
        400,
        "ready",
    ),
    Case(
        "repository",
        "load-dotdot",
        http("POST", "/v2/repository/models/../load"),
        400,
        "model name",
    ),
    Case(
        "repository",
        "load-dotdot-name",
        http("POST", "/v2/repository/models/..x/load"),
        400,
        "model name",
    ),
    Case(
        "repository",
        "grpc-file-override",
        grpc_raw("RepositoryModelLoad", grpc_load(**{"file:1/model.onnx": "x"})),
        "UNIMPLEMENTED",
        "file",
    ),
    Case(
        "repository",
        "grpc-other-repository",
        grpc_raw(
            "RepositoryIndex",
            pb.RepositoryIndexRequest(repository_name="other").SerializeToString(),
        ),
        "UNIMPLEMENTED",
        "repository_name",
    ),
    # -- shared memory -------------------------------------------------------------------------
    Case(
        "shm",
        "missing-byte-size",
        http("POST", f"{SHM}/r/register", {"key": "/k"}),
        400,
        "byte_size",
    ),
    Case(
        "shm",
        "key-outside-prefix",
        http("POST", f"{SHM}/r/register", {"key": "/other", "byte_size": 16}),
        400,
        "--shm-key-prefix",
    ),
    Case(
        "shm",
        "key-dotdot",
        http("POST", f"{SHM}/r/register", {"key": "../etc/passwd", "byte_size": 16}),
        400,
        "key",
    ),
    Case(
        "shm",
        "size-superscript",
        http("POST", f"{SHM}/r/register", {"key": f"/{SHM_PREFIX}x", "byte_size": "²"}),
        400,
        "byte_size",
    ),
    Case(
        "shm",
        "no-such-object",
        http("POST", f"{SHM}/r/register", {"key": f"/{SHM_PREFIX}absent", "byte_size": 16}),
        400,
        "no shared memory object",
    ),
    Case(
        "shm",
        "beyond-object",
        lambda t: http(
            "POST", f"{SHM}/r/register", {"key": t.shm_key, "offset": 200, "byte_size": 100}
        )(t),
        400,
        "offset + byte_size",
    ),
    Case("shm", "status-unknown", http("GET", f"{SHM}/nope/status"), 404, "nope"),
    Case("shm", "truncated-input", shm_truncated, 400, "'shrunk'"),
    Case("shm", "truncated-output", shm_output_truncated, 400, "'out'"),
    Case("shm", "truncated-grpc", shm_grpc_truncated, "INVALID_ARGUMENT", "'g'"),
    Case("shm", "over-cap", shm_over_cap, 400, "--max-shm-regions"),
    Case("shm", "window-outside-region", shm_window_outside, 400, "region 'small' of 64 bytes"),
    Case("shm", "size-not-the-shape", shm_size_not_the_shape, 400, "needs 256 bytes, got 128"),
    Case(
        "shm",
        "grpc-size-not-the-shape",
        shm_grpc_size_not_the_shape,
        "INVALID_ARGUMENT",
        "expected 256 bytes",
    ),
    Case("shm", "cuda", http("POST", "/v2/cudasharedmemory/region/r/register", {}), 400, "CUDA"),
    # -- images --------------------------------------------------------------------------------
    Case(
        "image",
        "wrong-content-type",
        http("POST", "/v1/models/matmul/predict", b"x", {"Content-Type": "text/plain"}),
        400,
        "Content-Type",
    ),
    Case(
        "image",
        "max-results-superscript",
        http(
            "POST",
            "/v1/models/matmul/predict?max_results=%C2%B2",
            b"x",
            {"Content-Type": "image/png"},
        ),
        400,
        "max_results",
    ),
    Case(
        "image",
        "threshold-out-of-range",
        http(
            "POST",
            "/v1/models/matmul/predict?score_threshold=2",
            b"x",
            {"Content-Type": "image/png"},
        ),
        400,
        "score_threshold",
    ),
    Case(
        "image",
        "unknown-query",
        http("POST", "/v1/models/matmul/predict?evil=1", b"x", {"Content-Type": "image/png"}),
        400,
        "query",
    ),
    Case(
        "image",
        "unknown-model",
        http("POST", "/v1/models/nope/predict", b"x", {"Content-Type": "image/png"}),
        404,
        "nope",
    ),
    # -- jobs ----------------------------------------------------------------------------------
    Case(
        "job",
        "not-json",
        http("POST", "/v1/jobs", b"{", {"Content-Type": "application/json"}),
        400,
        "JSON",
    ),
    Case("job", "no-input", http("POST", "/v1/jobs", {"pipeline": "faces"}), 400, "input"),
    Case(
        "job",
        "fps-over-zero",
        http("POST", "/v1/jobs", {"pipeline": "faces", "input": "a.mp4", "sample": "fps:1/0"}),
        400,
        "fps",
    ),
    # (paths in job inputs: test_video_api.py, which has the zoo's pipelines' models)
    Case(
        "job",
        "missing-model",
        http("POST", "/v1/jobs", {"pipeline": "faces", "input": "a.mp4"}),
        400,
        "needs model",
    ),
    Case(
        "job",
        "pipeline-too-long",
        http("POST", "/v1/jobs", {"pipeline": "p" * 300, "input": "a.mp4"}),
        400,
        "pipeline",
    ),
    Case(
        "job",
        "input-not-string",
        http("POST", "/v1/jobs", {"pipeline": "faces", "input": ["a"]}),
        400,
        "input",
    ),
    Case(
        "job",
        "unknown-field",
        http("POST", "/v1/jobs", {"pipeline": "faces", "input": "a.mp4", "x": 1}),
        400,
        "x",
    ),
    Case("job", "unknown-id", http("GET", "/v1/jobs/deadbeef"), 404, "deadbeef"),
    Case("job", "bad-state-filter", http("GET", "/v1/jobs?state=dancing"), 400, "state"),
    Case(
        "job",
        "text-body",
        http("POST", "/v1/jobs", b"hi", {"Content-Type": "text/plain"}),
        400,
        "Content-Type",
    ),
    # -- uploads -------------------------------------------------------------------------------
    Case("upload", "no-file-field", upload({"pipeline": "faces"}, {}), 400, "file"),
    Case(
        "upload",
        "over-limit",
        upload({"pipeline": "faces"}, {"file": b"\0" * (2 * 2**20)}),
        413,
        "limit",
    ),
    Case(
        "upload",
        "fps-over-zero",
        upload({"pipeline": "faces", "sample": "fps:1/0"}, {"file": b"\0" * 64}),
        400,
        "fps",
    ),
    # -- streams -------------------------------------------------------------------------------
    Case("stream", "no-source", http("POST", "/v1/streams", {"pipeline": "faces"}), 400, "source"),
    Case(
        "stream",
        "listen-option",
        http("POST", "/v1/streams", {"source": "tcp://127.0.0.1:9?listen=1", "pipeline": "faces"}),
        400,
        "listen",
    ),
    Case(
        "stream",
        "fps-over-zero",
        http(
            "POST", "/v1/streams", {"source": "clip.mp4", "pipeline": "faces", "sample": "fps:1/0"}
        ),
        400,
        "fps",
    ),
    Case(
        "stream",
        "inflight-zero",
        http("POST", "/v1/streams", {"source": "clip.mp4", "pipeline": "faces", "max_inflight": 0}),
        400,
        "max_inflight",
    ),
    Case(
        "stream",
        "max-fps-superscript",
        http("POST", "/v1/streams", {"source": "clip.mp4", "pipeline": "faces", "max_fps": "²"}),
        400,
        "max_fps",
    ),
    Case("stream", "unknown-id", http("GET", "/v1/streams/nope"), 404, "nope"),
    Case("stream", "unknown-id-delete", http("DELETE", "/v1/streams/nope"), 404, "nope"),
    Case("stream", "grpc-subscribe-unknown", grpc_subscribe("nope"), "NOT_FOUND", "nope"),
    Case("stream", "grpc-subscribe-empty", grpc_subscribe(""), "INVALID_ARGUMENT", "stream_id"),
]


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


@dataclass
class Corpus:
    target: Target
    pid: int
    rss_start_kb: int


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Corpus]:
    folder = tmp_path_factory.mktemp("corpus")
    repo = api_repository(folder / "models")
    launcher = ServerLauncher(folder)
    server = launcher.start(
        repo,
        *("--max-request-mb", "8", "--max-elements", "1000000", "--max-upload-mb", "1"),
        *("--model-control-mode", "explicit", "--load-model", "*"),
        *("--shm-key-prefix", SHM_PREFIX, "--max-shm-regions", "3", "--access-log"),
        *("--media-root", str(folder / "media"), "--state-dir", str(folder / "state")),
    )
    channel = grpc.insecure_channel(server.grpc_url)
    try:
        target = Target(server, channel, "")
        yield Corpus(target, server.proc.pid, rss_kb(server.proc.pid))
        assert server.terminate() == 0, server.log()
    finally:
        channel.close()
        launcher.stop_all()


@pytest.fixture
def target(corpus: Corpus) -> Iterator[Target]:
    """The corpus's target with a fresh 256-byte shared-memory object; regions unregistered
    and the object removed after the case."""
    key = f"/{SHM_PREFIX}{uuid.uuid4().hex[:12]}"
    path = Path("/dev/shm") / key.lstrip("/")
    path.write_bytes(bytes(np.ones(64, np.float32).data))
    corpus.target.shm_key = key
    try:
        yield corpus.target
    finally:
        path.unlink(missing_ok=True)  # first: the object must not outlive a failed case
        http_answer(corpus.target.server, "POST", "/v2/systemsharedmemory/unregister", b"", {})


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, corpus: Corpus, target: Target) -> None:
    status, message = case.send(target)
    assert (status, case.says in message) == (case.status, True), message
    server = target.server
    assert server.proc.poll() is None, server.log()
    assert server.get("/v2/health/ready")[0] == 200
    assert (
        http_answer(
            server, "POST", "/v2/models/matmul/infer", json.dumps({"inputs": [x()]}).encode(), {}
        )[0]
        == 200
    )
    assert rss_kb(corpus.pid) - corpus.rss_start_kb < MAX_RSS_GROWTH_KB


def test_the_corpus_covers_every_area() -> None:
    areas = {c.area for c in CASES}
    assert {"http", "grpc", "repository", "shm", "image", "job", "upload", "stream"} <= areas
    assert len(CASES) >= 60
    assert len({c.id for c in CASES}) == len(CASES), "case ids must be unique"


def test_no_client_answer_names_an_absolute_path(corpus: Corpus, target: Target) -> None:
    """Messages name what the client sent, never where the server keeps things."""
    folder = str(target.server.repository.parent)
    for case in CASES:
        if case.area in ("shm",):  # these register regions; run above with fresh objects
            continue
        _, message = case.send(target)
        assert folder not in message and "/dev/shm" not in message, (case.id, message)


def test_access_log_has_a_json_line_per_request_with_its_id(corpus: Corpus) -> None:
    """The corpus server runs with --access-log; its stderr is a file, so lines are JSON."""
    server = corpus.target.server
    status, _ = http_answer(server, "GET", "/v2/models/nope", b"", {"X-Request-ID": "corpus-log-1"})
    assert status == 404
    grpc_raw("ModelInfer", b"\xff")(corpus.target)
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    access = [e for e in lines if e.get("logger") == "frameserve.access"]
    mine = [e for e in access if e.get("request_id") == "corpus-log-1"]
    assert mine and mine[0]["status"] == 404 and mine[0]["path"] == "/v2/models/nope", mine
    assert mine[0]["method"] == "GET" and mine[0]["peer"].startswith("127.0.0.1:")
    assert any(
        e["protocol"] == "grpc" and e["status"] == "INVALID_ARGUMENT" and e["request_id"]
        for e in access
    )
