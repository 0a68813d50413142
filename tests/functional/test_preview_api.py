"""Live annotated previews through a real ``frameserve serve``: MJPEG, one JPEG, and HLS.

The server runs the zoo ``faces`` pipeline on a media-root clip of the astronaut played in a
loop. The MJPEG stream is read with a real HTTP client and its JPEG parts decoded with OpenCV;
the HLS playlist is played back over HTTP with PyAV (FFmpeg's own hls demuxer). Nothing here
asserts a speed: waits are generous hang detectors.
"""

from __future__ import annotations

import http.client
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest
import requests
from video.media import make_clip

from frameserve.video.overlay import colour_for

from servers import RunningServer, ServerLauncher

WAIT = 60.0


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("media")
    make_clip(root / "clip.mp4", frames=48, size=(320, 240), gop=8, fps=24, audio=False)
    return root


@pytest.fixture(scope="module")
def server(
    zoo_repository: Path, media: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    folder = tmp_path_factory.mktemp("preview-api")
    running = ServerLauncher(folder).start(
        zoo_repository,
        "--model-control-mode", "explicit", "--load-model", "faces",
        "--media-root", str(media), "--state-dir", str(folder / "state"),
        "--log-format", "text", "--preview-fps", "8", "--preview-max-connections", "2",
        "--hls-segment", "0.5", "--hls-idle-timeout", "2", "--preview-wait", "1",
        "--allow-network", "127.0.0.0/8",  # a source nobody listens on, to retry
    )  # fmt: skip
    yield running
    assert running.terminate() == 0, running.log()
    assert not list((folder / "state" / "preview").glob("*")), "HLS folders left behind"


def url(server: RunningServer, path: str) -> str:
    return f"http://{server.http_url}{path}"


def wait_for(check: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(f"{what}: not reached after {timeout}s")


@pytest.fixture
def stream(server: RunningServer) -> Iterator[str]:
    """A running stream of the looping clip through ``faces``; detached after the test."""
    r = requests.post(
        url(server, "/v1/streams"),
        json={"source": "clip.mp4", "pipeline": "faces", "loop": True},
        timeout=30,
    )
    assert r.status_code == 201, r.text
    stream_id = r.json()["id"]
    wait_for(lambda: status(server, stream_id)["frames_out"] > 0, "the stream's first record")
    yield stream_id
    requests.delete(url(server, f"/v1/streams/{stream_id}"), timeout=60)


def status(server: RunningServer, stream_id: str) -> dict[str, Any]:
    r = requests.get(url(server, f"/v1/streams/{stream_id}"), timeout=30)
    assert r.status_code == 200, r.text
    return dict(r.json())


def read_parts(response: http.client.HTTPResponse, count: int) -> list[bytes]:
    """The first ``count`` JPEG parts of a multipart/x-mixed-replace body."""
    parts = []
    while len(parts) < count:
        line = response.fp.readline()
        assert line, "the MJPEG stream ended early"
        if line.strip() != b"--frame":
            continue
        headers = {}
        while (header := response.fp.readline().strip()) != b"":
            name, _, value = header.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        assert headers["content-type"] == "image/jpeg"
        parts.append(response.fp.read(int(headers["content-length"])))
    return parts


def decode(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "not a JPEG"
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def box_pixels(image: np.ndarray) -> int:
    """Pixels in the colour of the first tracks' boxes (the face is track #1 of each play)."""
    counts = []
    for track in range(1, 4):
        distance = np.abs(image.astype(int) - np.array(colour_for(track))).sum(axis=2)
        counts.append(int((distance < 60).sum()))
    return max(counts)


def test_nobody_watching_sends_no_pictures(server: RunningServer, stream: str) -> None:
    wait_for(lambda: status(server, stream)["frames_out"] > 20, "20 records")
    preview = status(server, stream)["preview"]
    assert preview == {
        "watchers": 0, "mjpeg": 0, "hls": False, "pictures": 0, "picture_bytes": 0,
        "jpeg_frames": 0, "hls_frames": 0,
    }  # fmt: skip


def test_mjpeg_shows_annotated_frames_and_stops_when_closed(
    server: RunningServer, stream: str, media: Path
) -> None:
    with av.open(str(media / "clip.mp4")) as clip:
        raw = max(box_pixels(f.to_ndarray(format="rgb24")) for f in clip.decode(video=0))
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=WAIT)
    try:
        conn.request("GET", f"/v1/streams/{stream}/preview.mjpeg")
        response = conn.getresponse()
        assert response.status == 200
        assert response.getheader("content-type") == "multipart/x-mixed-replace; boundary=frame"
        pictures = [decode(p) for p in read_parts(response, 4)]
        watched = status(server, stream)["preview"]
        assert watched["mjpeg"] == 1 and watched["watchers"] == 1 and watched["pictures"] > 0
    finally:
        conn.close()
    assert {p.shape for p in pictures} == {(240, 320, 3)}
    assert any(not np.array_equal(a, b) for a, b in zip(pictures, pictures[1:], strict=False))
    # the face's box and keypoints are drawn in its track's colour, absent from the clip itself
    assert all(box_pixels(p) > raw + 200 for p in pictures), (
        raw,
        [box_pixels(p) for p in pictures],
    )

    quiet = wait_for(
        lambda: (p := status(server, stream)["preview"])["watchers"] == 0 and p,
        "the watcher to leave",
    )
    assert quiet["mjpeg"] == 0
    time.sleep(0.5)  # frames in flight when the watcher left
    before = status(server, stream)["preview"]["pictures"]
    wait_for(lambda: status(server, stream)["frames_out"] > 0, "records")
    time.sleep(1.0)
    assert status(server, stream)["preview"]["pictures"] == before


def test_jpg_and_limits(server: RunningServer, stream: str) -> None:
    r = requests.get(url(server, f"/v1/streams/{stream}/preview.jpg"), timeout=WAIT)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/jpeg"
    assert decode(r.content).shape == (240, 320, 3)
    small = requests.get(
        url(server, f"/v1/streams/{stream}/preview.mjpeg?width=160&fps=2"),
        stream=True,
        timeout=WAIT,
    )
    second = requests.get(
        url(server, f"/v1/streams/{stream}/preview.mjpeg"), stream=True, timeout=WAIT
    )
    try:
        assert small.status_code == second.status_code == 200
        third = requests.get(url(server, f"/v1/streams/{stream}/preview.mjpeg"), timeout=WAIT)
        assert third.status_code == 429 and "--preview-max-connections" in third.json()["error"]
    finally:
        small.close()
        second.close()
    bad = requests.get(url(server, f"/v1/streams/{stream}/preview.mjpeg?fps=0"), timeout=WAIT)
    assert bad.status_code == 400 and "query.fps" in bad.json()["error"]
    gone = requests.get(url(server, "/v1/streams/nope/preview.jpg"), timeout=WAIT)
    assert gone.status_code == 404
    for name in ("..%2Fx", "other.ts", "index.m3u8.tmp"):
        r = requests.get(url(server, f"/v1/streams/{stream}/hls/{name}"), timeout=WAIT)
        assert r.status_code in (400, 404), (name, r.status_code)


def test_a_stream_without_pictures_answers_503_with_retry_after(server: RunningServer) -> None:
    from servers import free_port

    body = {"source": f"tcp://127.0.0.1:{free_port()}", "pipeline": "faces"}
    r = requests.post(url(server, "/v1/streams"), json=body, timeout=30)
    assert r.status_code == 201, r.text
    stream_id = r.json()["id"]
    try:
        wait_for(lambda: status(server, stream_id)["state"] == "retrying", "the stream to retry")
        r = requests.get(url(server, f"/v1/streams/{stream_id}/preview.jpg"), timeout=WAIT)
        assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1
        assert "no preview picture" in r.json()["error"] and "retrying" in r.json()["error"]
    finally:
        requests.delete(url(server, f"/v1/streams/{stream_id}"), timeout=60)


def test_hls_plays_back_and_stops_when_nobody_reads(server: RunningServer, stream: str) -> None:
    playlist = url(server, f"/v1/streams/{stream}/hls/index.m3u8")
    pts = []
    with av.open(playlist, timeout=WAIT) as container:
        for frame in container.decode(video=0):
            assert (frame.width, frame.height) == (320, 240)
            pts.append(frame.pts)
            if len(pts) == 15:
                break
    assert all(b > a for a, b in zip(pts, pts[1:], strict=False)), pts
    on = status(server, stream)["preview"]
    assert on["hls_frames"] > 0
    metrics = requests.get(url(server, "/metrics"), timeout=WAIT).text
    encoded = (
        f'frameserve_stream_preview_frames_total{{kind="hls",pipeline="faces",stream="{stream}"}}'
    )
    assert encoded in metrics
    off = wait_for(lambda: not (p := status(server, stream)["preview"])["hls"] and p, "HLS to stop")
    assert off["watchers"] == 0
    assert requests.get(playlist, timeout=WAIT).status_code == 200  # a new reader starts it again
