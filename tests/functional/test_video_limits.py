"""Video limits through a real server: uploads checked before their body is received, at most
N uploads at once, subscribers per stream (SSE and gRPC), and live frames over the size limit.

Raw sockets hold an upload half sent, so the server's answer is the one it gives before the
body arrives. Waits are hang detectors only.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests
from video.media import make_clip

from frameserve.api.grpc.generated import video_streams_pb2 as vpb
from frameserve.api.grpc.generated import video_streams_pb2_grpc as vgrpc

from servers import RunningServer, ServerLauncher

WAIT = 120.0
BOUNDARY = "limitsboundary"


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("media")
    make_clip(root / "small.mp4", frames=48, size=(160, 120), gop=12, audio=False)
    make_clip(root / "big.mp4", frames=4, size=(640, 480), audio=False)
    return root


@pytest.fixture(scope="module")
def server(
    zoo_repository: Path, media: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    folder = tmp_path_factory.mktemp("video-limits")
    running = ServerLauncher(folder).start(
        zoo_repository,
        "--model-control-mode", "explicit", "--load-model", "faces",
        "--media-root", str(media), "--state-dir", str(folder / "state"),
        "--max-upload-mb", "1", "--max-concurrent-uploads", "1", "--max-subscribers", "1",
        "--max-frame-pixels", "100000", "--log-format", "text",
    )  # fmt: skip
    yield running
    assert running.terminate() == 0, running.log()


def url(server: RunningServer, path: str) -> str:
    return f"http://{server.http_url}{path}"


def wait_for(check: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + WAIT
    while not (value := check()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not reached after {WAIT}s")
        time.sleep(0.05)
    return value


def field(name: str, value: str) -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
    ).encode()


def file_start() -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="v.mp4"\r\n'
        "Content-Type: video/mp4\r\n\r\n"
    ).encode()


def half_upload(server: RunningServer, fields: dict[str, str], declared: int) -> socket.socket:
    """An upload whose fields and file header are sent, its video never."""
    sock = socket.create_connection(("127.0.0.1", server.http_port), timeout=60)
    head = (
        f"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: {declared}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\r\n"
    ).encode()
    sock.sendall(head + b"".join(field(k, v) for k, v in fields.items()) + file_start())
    return sock


def answer(sock: socket.socket) -> tuple[int, dict[str, Any]]:
    data = b""
    while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_an_upload_is_refused_before_its_video_is_received(server: RunningServer) -> None:
    with half_upload(server, {"pipeline": "no-such-pipeline"}, 500_000) as sock:
        code, body = answer(sock)  # answered while 500 kB are still to come
    assert code == 400 and "no-such-pipeline" in body["error"], body
    with half_upload(server, {"pipeline": "faces", "sample": "fps:0"}, 500_000) as sock:
        code, body = answer(sock)
    assert code == 400 and "sample" in body["error"], body
    with half_upload(server, {"pipeline": "faces"}, 5 * 2**20) as sock:
        code, body = answer(sock)  # the declared length alone is over --max-upload-mb
    assert code == 413, body
    assert server.get("/v2/health/ready")[0] == 200


def test_uploads_over_the_concurrency_limit_get_429(server: RunningServer, media: Path) -> None:
    with half_upload(server, {"pipeline": "faces"}, 500_000):
        time.sleep(0.3)  # the server is receiving it
        data = (media / "small.mp4").read_bytes()
        r = requests.post(
            url(server, "/v1/jobs"),
            data={"pipeline": "faces"},
            files={"file": ("small.mp4", data, "video/mp4")},
            timeout=60,
        )
        assert r.status_code == 429, r.text
        assert "limit is 1 (max_concurrent_uploads, --max-concurrent-uploads)" in r.json()["error"]
    # the held upload is gone (connection closed): uploads are taken again
    wait_for(
        lambda: (
            requests.post(
                url(server, "/v1/jobs"),
                data={"pipeline": "faces"},
                files={"file": ("small.mp4", data, "video/mp4")},
                timeout=60,
            ).status_code
            == 201
        ),
        "an upload to be taken again",
    )


def test_a_second_subscriber_over_the_limit_gets_429_and_resource_exhausted(
    server: RunningServer,
) -> None:
    r = requests.post(
        url(server, "/v1/streams"), json={"source": "small.mp4", "pipeline": "faces", "loop": True}
    )
    assert r.status_code == 201, r.text
    stream_id = r.json()["id"]
    try:
        with requests.get(url(server, f"/v1/streams/{stream_id}/events"), stream=True, timeout=60):
            second = requests.get(url(server, f"/v1/streams/{stream_id}/events"), timeout=60)
            assert second.status_code == 429, second.text
            assert "limit is 1 (max_subscribers, --max-subscribers)" in second.json()["error"]
            with grpc.insecure_channel(server.grpc_url) as channel:
                events = vgrpc.VideoStreamsStub(channel).Subscribe(
                    vpb.SubscribeRequest(stream_id=stream_id), timeout=60
                )
                with pytest.raises(grpc.RpcError) as err:
                    next(iter(events))
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "--max-subscribers" in (err.value.details() or "")
    finally:
        requests.delete(url(server, f"/v1/streams/{stream_id}"), timeout=60)


def test_live_frames_over_the_size_limit_stop_the_stream(server: RunningServer) -> None:
    r = requests.post(url(server, "/v1/streams"), json={"source": "big.mp4", "pipeline": "faces"})
    assert r.status_code == 201, r.text
    stream_id = r.json()["id"]

    def stopped() -> dict[str, Any] | None:
        status = requests.get(url(server, f"/v1/streams/{stream_id}"), timeout=30).json()
        return status if status["state"] == "stopped" else None

    status = wait_for(stopped, "the stream to stop")
    assert "640x480 (307200 pixels) exceeds the limit of 100000 pixels" in status["last_error"]
    assert "(max_frame_pixels, --max-frame-pixels)" in status["last_error"]
    requests.delete(url(server, f"/v1/streams/{stream_id}"), timeout=60)
