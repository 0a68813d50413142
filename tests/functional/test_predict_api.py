"""Image requests against a real server on the zoo: /v1/models/{m}/predict and v2 BYTES images.

Every bad input gets a clear 4xx naming what was wrong, and the server stays up and ready.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skimage.data
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from PIL import Image

from frameserve.tools.example_models import make_example_repository

from servers import RunningServer, ServerLauncher

PIXEL_LIMIT = 2_000_000


@pytest.fixture(scope="module")
def server(
    zoo_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    folder = tmp_path_factory.mktemp("predict")
    repo = folder / "models"
    shutil.copytree(zoo_repository, repo)
    make_example_repository(repo)  # models without declared processing
    launcher = ServerLauncher(folder)
    running = launcher.start(repo, "--max-image-pixels", str(PIXEL_LIMIT), "--max-request-mb", "4")
    yield running
    assert running.terminate() == 0, running.log()


def encode(image: np.ndarray | Image.Image, fmt: str = "PNG", **kw: Any) -> bytes:
    im = image if isinstance(image, Image.Image) else Image.fromarray(image)
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def post(
    server: RunningServer, path: str, body: bytes, content_type: str = "image/png"
) -> tuple[int, dict[str, str], Any]:
    request = urllib.request.Request(
        "http://" + server.http_url + path,
        data=body,
        method="POST",
        headers={"Content-Type": content_type},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), json.loads(err.read())


def multipart(field: str, filename: str, data: bytes, content_type: str) -> tuple[bytes, str]:
    boundary = "frameserve-test-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
        f'filename="{filename}"\r\nContent-Type: {content_type}\r\n\r\n'
    ).encode()
    body = head + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


ASTRONAUT = skimage.data.astronaut()
PAGE = np.stack([skimage.data.page()] * 3, axis=-1)


# --- the happy paths ----------------------------------------------------------------------


def test_faces_predict_returns_boxes_in_source_pixels(server: RunningServer) -> None:
    status, headers, body = post(
        server, "/v1/models/faces/predict", encode(ASTRONAUT, "JPEG"), "image/jpeg"
    )
    assert status == 200, body
    [face] = body["detections"]
    x1, y1, x2, y2 = face["box"]
    assert 160 < x1 < x2 < 290 and 55 < y1 < y2 < 185  # the astronaut's face
    assert face["label"] == "face" and 0.6 <= face["score"] <= 1
    assert len(face["keypoints"]) == 6
    timing = headers["server-timing"] if "server-timing" in headers else headers["Server-Timing"]
    assert [p.split(";")[0] for p in timing.split(", ")] == [
        "decode", "preprocess", "infer", "postprocess"
    ]  # fmt: skip


def test_query_parameters_filter_detections(server: RunningServer) -> None:
    status, _, body = post(
        server, "/v1/models/faces/predict?score_threshold=0.99", encode(ASTRONAUT)
    )
    assert status == 200 and body == {"detections": []}
    status, _, body = post(server, "/v1/models/ocr/predict?max_results=2", encode(PAGE))
    assert status == 200 and len(body["texts"]) == 2


def test_mask_is_a_png_at_source_size(server: RunningServer) -> None:
    status, _, body = post(
        server, "/v1/models/person-mask/predict", encode(ASTRONAUT, "WEBP"), "image/webp"
    )
    assert status == 200
    mask = body["mask"]
    assert (mask["width"], mask["height"]) == (512, 512)
    decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(mask["png"]))))
    assert decoded.shape == (512, 512) and set(np.unique(decoded)) <= {0, 255}
    assert 0.3 < (decoded > 0).mean() < 0.8


def test_ocr_pipeline_reads_the_page_from_a_multipart_form(server: RunningServer) -> None:
    body, content_type = multipart("image", "page.png", encode(PAGE), "image/png")
    status, _, result = post(server, "/v1/models/ocr/predict", body, content_type)
    assert status == 200, result
    texts = [t["text"] for t in result["texts"]]
    assert texts[0] == "Region-based segmentation"
    assert all(len(t["polygon"]) == 4 for t in result["texts"])


def test_text_recognition_alone_and_classes(server: RunningServer) -> None:
    line = np.ascontiguousarray(PAGE[9:36, 3:296])
    status, _, body = post(server, "/v1/models/text-rec/predict", encode(line))
    assert status == 200 and body["text"] == "Region-based segmentation", body
    status, _, body = post(server, "/v1/models/text-cls/predict", encode(line))
    assert status == 200 and [c["label"] for c in body["classes"]][0] == "0"


@pytest.mark.parametrize("mode", ["L", "RGBA", "I;16", "P"])
def test_grayscale_rgba_16bit_and_palette_images_are_converted(
    server: RunningServer, mode: str
) -> None:
    image = Image.fromarray(ASTRONAUT)
    if mode == "I;16":
        image = Image.fromarray(np.asarray(image.convert("L")).astype(np.uint16) * 257)
    else:
        image = image.convert(mode)
    status, _, body = post(server, "/v1/models/faces/predict", encode(image))
    assert status == 200, body
    assert len(body["detections"]) == 1


def test_v2_infer_takes_encoded_images_as_bytes(server: RunningServer) -> None:
    client = httpclient.InferenceServerClient(server.http_url)
    data = np.array([encode(ASTRONAUT), encode(ASTRONAUT[:, :300].copy())], dtype=object)
    inp = httpclient.InferInput("input_1", [2], "BYTES")
    inp.set_data_from_numpy(data)
    result = client.infer("faces", [inp])
    assert result.as_numpy("Identity").shape == (2, 2304, 16)
    assert result.as_numpy("Identity_1").shape == (2, 2304, 1)


def test_v2_infer_on_a_pipeline_over_grpc(server: RunningServer) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    meta = client.get_model_metadata("ocr", as_json=True)
    assert meta["platform"] == "pipeline"
    assert client.is_model_ready("ocr")
    inp = grpcclient.InferInput("image", [1], "BYTES")
    inp.set_data_from_numpy(np.array([encode(PAGE)], dtype=object))
    [doc] = client.infer("ocr", [inp]).as_numpy("result")
    assert json.loads(doc)["texts"][0]["text"] == "Region-based segmentation"


# --- bad input: a clear error, nothing else breaks ---------------------------------------------


def bad(
    server: RunningServer, path: str, body: bytes, content_type: str = "image/png"
) -> tuple[int, str]:
    status, _, result = post(server, path, body, content_type)
    return status, result["error"]


def test_corrupt_truncated_and_unsupported_images(server: RunningServer) -> None:
    png = encode(ASTRONAUT)
    jpeg = encode(ASTRONAUT, "JPEG")
    corrupt = png[:200] + bytes(500) + png[700:]
    gif = encode(Image.fromarray(ASTRONAUT).convert("P"), "GIF")
    cases = {
        "truncated png": (png[: len(png) // 2], "image/png"),
        "truncated jpeg": (jpeg[: len(jpeg) // 2], "image/jpeg"),
        "corrupt png": (corrupt, "image/png"),
        "gif": (gif, "image/png"),
        "text": (b"hello, not an image", "image/jpeg"),
    }
    for name, (data, ctype) in cases.items():
        status, error = bad(server, "/v1/models/faces/predict", data, ctype)
        assert status == 400, (name, error)
        assert error.startswith("body:"), (name, error)
        assert (
            "JPEG, PNG, WebP, BMP or TIFF" in error or "corrupt" in error or "truncated" in error
        ), (name, error)


def test_empty_body_and_zero_size_image(server: RunningServer) -> None:
    status, error = bad(server, "/v1/models/faces/predict", b"")
    assert status == 400 and "empty" in error
    zero = encode(np.zeros((1, 1, 3), np.uint8))
    # a PNG header claiming 0 x 0 (the IHDR CRC is left stale: the header itself is refused)
    zero = zero[:16] + (0).to_bytes(4, "big") * 2 + zero[24:]
    status, error = bad(server, "/v1/models/faces/predict", zero)
    assert status == 400 and "PNG" in error


def test_decompression_bomb_is_refused_before_decoding(server: RunningServer) -> None:
    big = encode(Image.new("L", (2000, 1001)), optimize=True)  # 2.002 Mpx, ~2 KB on the wire
    assert len(big) < 20_000
    status, error = bad(server, "/v1/models/faces/predict", big)
    assert status == 413 and "2000 x 1001" in error and str(PIXEL_LIMIT) in error


def test_model_without_declared_processing_names_what_is_missing(server: RunningServer) -> None:
    status, error = bad(server, "/v1/models/matmul/predict", encode(ASTRONAUT))
    assert status == 400
    assert "matmul" in error and "preprocess" in error


def test_unknown_model_bad_query_and_content_type(server: RunningServer) -> None:
    status, error = bad(server, "/v1/models/nope/predict", encode(ASTRONAUT))
    assert status == 404 and "nope" in error
    status, error = bad(server, "/v1/models/faces/predict?score_threshold=2", encode(ASTRONAUT))
    assert status == 400 and "score_threshold" in error and "0..1" in error
    status, error = bad(server, "/v1/models/faces/predict?max_results=0", encode(ASTRONAUT))
    assert status == 400 and "max_results" in error
    status, error = bad(server, "/v1/models/faces/predict?colour=red", encode(ASTRONAUT))
    assert status == 400 and "colour" in error
    status, error = bad(server, "/v1/models/faces/predict", b"{}", "application/json")
    assert status == 400 and "Content-Type" in error and "image/jpeg" in error
    body, ctype = multipart("file", "a.png", encode(ASTRONAUT), "image/png")
    status, error = bad(server, "/v1/models/faces/predict", body, ctype)
    assert status == 400 and "'image'" in error


def test_body_over_the_request_limit_is_413(server: RunningServer) -> None:
    # The server answers from Content-Length alone, before any of the 6 MB is sent (a client
    # still uploading would see the connection close, as with any server that refuses early).
    host, port = server.http_url.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.putrequest("POST", "/v1/models/faces/predict")
        conn.putheader("Content-Type", "image/png")
        conn.putheader("Content-Length", "6000000")
        conn.endheaders()  # and no body
        response = conn.getresponse()
        status, reply = response.status, response.read().decode()
    finally:
        conn.close()
    assert status == 413, reply
    assert "exceeds the limit" in reply


def test_v2_bytes_input_with_a_broken_image_names_the_element(server: RunningServer) -> None:
    client = httpclient.InferenceServerClient(server.http_url)
    inp = httpclient.InferInput("input_1", [2], "BYTES")
    inp.set_data_from_numpy(np.array([encode(ASTRONAUT), b"garbage"], dtype=object))
    with pytest.raises(Exception, match=r"inputs\[0\]\[1\]"):
        client.infer("faces", [inp])


def test_server_is_still_ready_after_the_bad_requests(server: RunningServer) -> None:
    assert server.get("/v2/health/ready")[0] == 200
    status, _, body = post(server, "/v1/models/faces/predict", encode(ASTRONAUT))
    assert status == 200 and len(body["detections"]) == 1
