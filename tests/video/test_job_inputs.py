"""Job inputs: FFmpeg opens them with the file protocol and demuxers that read nothing else
(playlists, concat lists and SDP files are refused with 400 naming the format), and a cancel
ends a job's FFmpeg child even while it blocks."""

from __future__ import annotations

import http.server
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from frameserve.errors import InvalidInput, VideoError
from frameserve.serving.local import LocalServer
from frameserve.video.inputs import check_file_format
from frameserve.video.jobs import JobQueue, JobSettings, JobSpec
from video.blocking_probe import FIFO_NAME, blocking_probe
from video.media import make_clip

CANCEL_S = 2.0  # the bound for a cancel to end the job's FFmpeg work


class _Recorder(http.server.BaseHTTPRequestHandler):
    """A loopback HTTP server that only records: any request is a failure of the test."""

    requests: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.requests.append(self.path)
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[str]]]:
    """``(base URL, requests seen)`` of a loopback HTTP server."""
    seen: list[str] = []
    handler = type("Handler", (_Recorder,), {"requests": seen})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="recorder", daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", seen
    server.shutdown()
    server.server_close()


def playlists(root: Path, base: str) -> dict[str, str]:
    """Files that would make FFmpeg open other files or URLs: name -> the format named."""
    make_clip(root / "a.mp4", frames=8, size=(64, 48))
    hls = f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\n{base}/seg.ts\n#EXTINF:1,\na.mp4\n"
    (root / "list.m3u8").write_text(hls + "#EXT-X-ENDLIST\n")
    (root / "disguised.mp4").write_text("\ufeff" + hls, encoding="utf-8")  # a UTF-8 BOM first
    (root / "list.ffconcat").write_text(f"ffconcat version 1.0\nfile 'a.mp4'\nfile '{base}/x'\n")
    (root / "concat.txt").write_text(f"file 'a.mp4'\nfile '{base}/y.mp4'\n")
    (root / "session.sdp").write_text("v=0\no=- 0 0 IN IP4 127.0.0.1\nm=video 5004 RTP/AVP 96\n")
    (root / "manifest.mpd").write_text(f'<?xml version="1.0"?><MPD><BaseURL>{base}/</BaseURL>')
    return {
        "list.m3u8": "hls", "disguised.mp4": "hls", "list.ffconcat": "concat",
        "concat.txt": "concat", "session.sdp": "sdp", "manifest.mpd": "dash",
    }  # fmt: skip


def test_playlists_and_lists_are_refused_naming_their_format(
    tmp_path: Path, recorder: tuple[str, list[str]]
) -> None:
    base, seen = recorder
    for name, kind in playlists(tmp_path, base).items():
        with pytest.raises(VideoError, match=f"its format is {kind}") as caught:
            check_file_format(tmp_path / name, name)
        assert isinstance(caught.value, InvalidInput)  # 400
    check_file_format(tmp_path / "a.mp4", "a.mp4")  # a video passes
    assert seen == []


# -- through the job queue ----------------------------------------------------------------------
@pytest.fixture
def media(tmp_path: Path) -> Path:
    root = tmp_path / "media"
    root.mkdir()
    return root


@pytest.fixture
def jobs(video_server: LocalServer, media: Path, tmp_path: Path) -> Iterator[JobQueue]:
    queue = JobQueue(video_server, JobSettings(state_dir=tmp_path / "state", media_root=media))
    queue.start()
    yield queue
    queue.close(10.0)


def test_a_job_over_a_playlist_is_refused_at_submit(
    jobs: JobQueue, media: Path, recorder: tuple[str, list[str]]
) -> None:
    base, seen = recorder
    for name, kind in playlists(media, base).items():
        with pytest.raises(VideoError, match=f"input '{name}': its format is {kind}"):
            jobs.submit(JobSpec(pipeline="faces", input=name))
    assert jobs.list() == []
    assert seen == []


def _alive(what: Callable[[], bool], timeout_s: float, message: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not what():
        if time.monotonic() > deadline:
            raise AssertionError(message)
        time.sleep(0.01)


def test_a_cancel_kills_a_job_blocked_in_ffmpeg(
    jobs: JobQueue, media: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job's header probe blocks inside FFmpeg (``blocking_probe``); deleting the job ends
    its child and its thread within ``CANCEL_S``, not after the probe's own timeout."""
    make_clip(media / "clip.mp4", frames=8, size=(64, 48))
    os.mkfifo(media / FIFO_NAME)
    monkeypatch.setattr("frameserve.video.run.probe", blocking_probe)
    record = jobs.submit(JobSpec(pipeline="faces", input="clip.mp4"))

    def probes() -> list[multiprocessing.Process]:
        return [p for p in multiprocessing.active_children() if p.name.endswith("probe-0")]

    _alive(lambda: bool(probes()), 60.0, "the job's probe never started")
    time.sleep(0.3)  # the child is now inside FFmpeg's open() of the FIFO
    assert probes(), "the probe ended by itself: it did not block"
    assert jobs.get(record.id).state == "running"

    assert jobs.delete(record.id).state == "cancelled"
    threads = lambda: [t for t in threading.enumerate() if t.name == f"job-{record.id}"]  # noqa: E731
    _alive(lambda: not probes() and not threads(), CANCEL_S,
           f"the job's FFmpeg child or thread still ran {CANCEL_S} s after the cancel")  # fmt: skip
    assert jobs.get(record.id).state == "cancelled"
    jobs.delete(record.id)  # its thread is gone: deleting removes it at once
    assert jobs.list() == []
