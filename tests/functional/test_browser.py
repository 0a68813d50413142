"""Browser requests against a real server: a page on another site cannot change state, a
DNS-rebinding name is not answered, and non-browser clients (tritonclient, curl) work as before."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from repos import ECHO, python_model
from servers import RunningServer, ServerLauncher

CURL = shutil.which("curl")
APP = "http://app.example:3000"
EVIL = "https://evil.example"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    folder = tmp_path_factory.mktemp("browser")
    fp32 = {"datatype": "FP32", "dims": [-1]}
    config = {"max_batch_size": 8, "inputs": [{"name": "IN", **fp32}],
              "outputs": [{"name": "OUT", **fp32}], "warmup": 0}  # fmt: skip
    python_model(folder / "models", "echo", ECHO, config)
    launcher = ServerLauncher(folder)
    try:
        yield launcher.start(
            folder / "models",
            *("--model-control-mode", "explicit", "--load-model", "echo"),
            *("--allowed-origin", APP),
            *("--allowed-host", "127.0.0.1", "--allowed-host", "localhost"),
        )
    finally:
        launcher.stop_all()


def _request(
    server: RunningServer, method: str, path: str, body: bytes = b"", **headers: str
) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"http://{server.http_url}{path}",
        data=body if method != "GET" else None,
        method=method,
        headers={k.replace("_", "-"): v for k, v in headers.items()},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            raw, status = r.read(), r.status
    except urllib.error.HTTPError as err:
        raw, status = err.read(), err.code
    return status, json.loads(raw) if raw else {}


def test_a_page_on_another_site_cannot_unload_a_model(server):
    status, body = _request(server, "POST", "/v2/repository/models/echo/unload",
                            Origin=EVIL, Content_Type="text/plain")  # fmt: skip
    assert status == 403
    assert "Origin 'https://evil.example'" in body["error"]
    assert "--allowed-origin" in body["error"]
    assert server.get("/v2/models/echo/ready")[0] == 200  # nothing happened
    status, body = _request(server, "POST", "/v2/repository/models/echo/unload",
                            Sec_Fetch_Site="cross-site")  # fmt: skip
    assert status == 403 and "Sec-Fetch-Site" in body["error"]
    assert server.get("/v2/models/echo/ready")[0] == 200


def test_a_form_upload_from_another_site_is_refused_before_it_is_stored(server):
    form = b'--b\r\nContent-Disposition: form-data; name="pipeline"\r\n\r\necho\r\n--b--\r\n'
    status, body = _request(server, "POST", "/v1/jobs", form, Origin=EVIL,
                            Content_Type="multipart/form-data; boundary=b")  # fmt: skip
    assert status == 403, body
    assert not (server.log_path.parent / "state" / "uploads").exists() or not any(
        (server.log_path.parent / "state" / "uploads").iterdir()
    )


def test_own_and_allowed_origins_may_post(server):
    infer = json.dumps(
        {"inputs": [{"name": "IN", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}
    ).encode()
    own = f"http://{server.http_url}"
    for origin in (own, APP):
        status, body = _request(server, "POST", "/v2/models/echo/infer", infer,
                                Origin=origin, Sec_Fetch_Site="cross-site"
                                if origin == APP else "same-origin")  # fmt: skip
        assert status == 200, body
        assert body["outputs"][0]["data"] == [1.0, 2.0]


def test_reading_from_another_site_is_not_refused(server):
    assert _request(server, "GET", "/v2/models/echo", Origin=EVIL)[0] == 200


def test_an_unknown_host_gets_421_on_every_method(server):
    status, body = _request(server, "GET", "/v2/health/ready", Host="rebind.evil.example:80")
    assert status == 421 and "--allowed-host" in body["error"]
    local = f"localhost:{server.http_port}"
    assert _request(server, "GET", "/v2/health/ready", Host=local)[0] == 200


def test_tritonclient_and_curl_are_unaffected(server):
    data = np.ones((1, 3), np.float32)
    http = httpclient.InferenceServerClient(server.http_url)
    inp = httpclient.InferInput("IN", [1, 3], "FP32")
    inp.set_data_from_numpy(data)
    np.testing.assert_array_equal(http.infer("echo", [inp]).as_numpy("OUT"), data)
    http.unload_model("echo")
    http.load_model("echo")
    http.close()
    with grpcclient.InferenceServerClient(server.grpc_url) as grpc_client:
        ginp = grpcclient.InferInput("IN", [1, 3], "FP32")
        ginp.set_data_from_numpy(data)
        np.testing.assert_array_equal(grpc_client.infer("echo", [ginp]).as_numpy("OUT"), data)
    if CURL is None:
        return
    body = '{"inputs": [{"name": "IN", "shape": [1, 1], "datatype": "FP32", "data": [5]}]}'
    # curl -d sends Content-Type application/x-www-form-urlencoded and no Origin
    out = subprocess.run(
        [CURL, "-sS", "-d", body, f"http://{server.http_url}/v2/models/echo/infer"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    assert json.loads(out.stdout)["outputs"][0]["data"] == [5.0]
