"""Stream sources and job inputs through a real ``frameserve serve`` with the default policy:
no source reaches a loopback HTTP server, the metadata address or the server itself, no source
makes the server listen, and no job input opens other files or URLs. A loopback HTTP server is
the forbidden target: it must record zero requests."""

from __future__ import annotations

import http.server
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from video.media import make_clip

from servers import RunningServer, ServerLauncher

SETTLE_S = 1.5  # how long accepted sources get to connect (and to misbehave) before the check


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[str]

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.seen.append(self.path)
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def target() -> Iterator[tuple[int, list[str]]]:
    """``(port, requests seen)`` of the forbidden loopback HTTP server."""
    seen: list[str] = []
    handler = type("Handler", (_Recorder,), {"seen": seen})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, name="target", daemon=True).start()
    yield server.server_port, seen
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory, target: tuple[int, list[str]]) -> Path:
    root = tmp_path_factory.mktemp("media")
    base = f"http://127.0.0.1:{target[0]}"
    make_clip(root / "clip.mp4", frames=8, size=(64, 48))
    (root / "list.m3u8").write_text(
        f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\n{base}/seg.ts\n#EXT-X-ENDLIST\n"
    )
    (root / "list.ffconcat").write_text(f"ffconcat version 1.0\nfile 'clip.mp4'\nfile '{base}/x'\n")
    return root


@pytest.fixture(scope="module")
def server(
    zoo_repository: Path, media: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    folder = tmp_path_factory.mktemp("source-security")
    launcher = ServerLauncher(folder)
    running = launcher.start(
        zoo_repository, "--model-control-mode", "explicit", "--load-model", "faces",
        "--media-root", str(media), "--state-dir", str(folder / "state"),
        "--log-format", "text", "--max-streams", "16",
    )  # fmt: skip
    yield running
    assert running.terminate() == 0, running.log()


def post(server: RunningServer, path: str, **body: Any) -> requests.Response:
    return requests.post(f"http://{server.http_url}{path}", json=body, timeout=30)


# -- listening sockets of the server's process tree ----------------------------------------------
def _tree(pid: int) -> list[int]:
    pids, i = [pid], 0
    while i < len(pids):
        for task in Path(f"/proc/{pids[i]}/task").glob("*"):
            try:
                pids += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
        i += 1
    return pids


def listening(pid: int) -> set[tuple[str, str]]:
    """(table, local address) of every listening TCP socket and bound UDP socket that a process
    of ``pid``'s tree holds (matched by socket inode in /proc/net/{tcp,tcp6,udp,udp6})."""
    inodes = set()
    for p in _tree(pid):
        for fd in Path(f"/proc/{p}/fd").glob("*"):
            try:
                link = os.readlink(fd)
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    found = set()
    for table in ("tcp", "tcp6", "udp", "udp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            f = line.split()
            if f[9] in inodes and (table.startswith("udp") or f[3] == "0A"):  # 0A: LISTEN
                found.add((table, f[1]))
    return found


# -- the corpus ----------------------------------------------------------------------------------
def hostile(port: int) -> list[tuple[str, str]]:
    """(source URL, what the 400 must say)."""
    refused = "which the source policy refuses"
    return [
        (f"http://127.0.0.1:{port}/", f"resolves to 127.0.0.1, {refused} (loopback)"),
        (f"http://localhost:{port}/", f"resolves to 127.0.0.1, {refused} (loopback)"),
        (f"http://2130706433:{port}/", f"resolves to 127.0.0.1, {refused} (loopback)"),
        (f"http://0x7f.1:{port}/", f"resolves to 127.0.0.1, {refused} (loopback)"),
        (f"http://017700000001:{port}/", f"resolves to 127.0.0.1, {refused} (loopback)"),
        (f"http://[::1]:{port}/", f"resolves to ::1, {refused} (loopback)"),
        (f"http://[::ffff:127.0.0.1]:{port}/", f"{refused} (loopback)"),
        (f"http://0.0.0.0:{port}/", f"{refused} (unspecified address)"),
        ("http://169.254.169.254/latest/meta-data/", f"{refused} (link-local (cloud metadata))"),
        (f"rtsp://admin:hunter2@localhost:{port}/live", f"{refused} (loopback)"),
        (f"tcp://127.0.0.1:{port}", f"{refused} (loopback)"),
        ("tcp://10.0.0.5:5000?listen=1", "it does not listen for them"),
        ("tcp://10.0.0.5:5000#?listen=1", "it does not listen for them"),
        ("tcp://10.0.0.5:5000?-listen", "it does not listen for them"),
        ("http://10.0.0.5/?listen", "it does not listen for them"),
        ("rtsp://10.0.0.5/live?rtsp_flags=listen", "it does not listen for them"),
        ("srt://10.0.0.5:9000?mode=listener", "it does not listen for them"),
        ("udp://0.0.0.0:5004", "only with --allow-udp-sources"),
        ("udp://239.1.1.1:5004", "only with --allow-udp-sources"),
        ("file:///etc/passwd", "expected a URL with scheme"),
        ("rtp://10.0.0.5:5004", "expected a URL with scheme"),
    ]


# Accepted by the policy (private ranges are allowed): they connect and fail, never listen.
ACCEPTED = ["rtsp://10.255.255.1:554/live", "http://10.255.255.1/cam.ts"]


def test_hostile_sources_are_refused_and_nothing_listens(
    server: RunningServer, target: tuple[int, list[str]]
) -> None:
    port, seen = target
    before = listening(server.proc.pid)
    own = {f":{server.http_port:04X}", f":{server.grpc_port:04X}"}
    assert own <= {address[-5:] for _, address in before}, before  # the check sees sockets
    for source, message in hostile(port):
        r = post(server, "/v1/streams", source=source, pipeline="faces")
        assert r.status_code == 400, (source, r.text)
        assert message in r.text, (source, r.text)
        assert "hunter2" not in r.text
    ids = []
    for source in ACCEPTED:
        r = post(server, "/v1/streams", source=source, pipeline="faces")
        assert r.status_code == 201, (source, r.text)
        ids.append(r.json()["id"])
    time.sleep(SETTLE_S)  # the workers connect (and time out) meanwhile
    during = listening(server.proc.pid)
    for stream_id in ids:
        requests.delete(f"http://{server.http_url}/v1/streams/{stream_id}", timeout=60)
    assert during == before, f"new listening sockets: {during - before}"
    assert listening(server.proc.pid) == before
    assert seen == [], f"the forbidden server was reached: {seen}"


def test_job_inputs_that_open_other_files_or_urls_are_refused(
    server: RunningServer, target: tuple[int, list[str]]
) -> None:
    _, seen = target
    for name, kind in (("list.m3u8", "hls"), ("list.ffconcat", "concat")):
        r = post(server, "/v1/jobs", pipeline="faces", input=name)
        assert r.status_code == 400, r.text
        assert f"its format is {kind}" in r.text, r.text
        r = post(server, "/v1/streams", source=name, pipeline="faces")
        assert r.status_code == 400 and f"its format is {kind}" in r.text, r.text
    assert seen == []
