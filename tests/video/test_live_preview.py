"""A live stream's preview state: who watches, what the worker is told, pictures to JPEGs and
to HLS. In-process: a real event loop, a real HLS encoder (PyAV, libx264, FFmpeg's hls muxer)
writing into a temp folder, read back with PyAV."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import skimage.data

from frameserve.errors import QueueFull
from frameserve.processing.results import Detections
from frameserve.video.live.hls import HlsEncoder, HlsSettings, Timeline
from frameserve.video.live.preview import (
    KEPT_PICTURES,
    OFF,
    PictureGate,
    PreviewPicture,
    PreviewRequest,
    PreviewSettings,
    StreamPreview,
)
from frameserve.video.overlay import OverlayStyle


def test_picture_gate_keeps_the_rate_on_average() -> None:
    gate = PictureGate(5.0)
    taken = [t / 25 for t in range(250) if gate.due(t / 25)]  # 10 s of 25 fps
    assert len(taken) == 50
    assert not PictureGate(0.0).due(1.0)


def test_timeline_is_strictly_increasing_even_when_the_clock_goes_back() -> None:
    line = Timeline(fps=10.0)
    seconds = [Fraction(100), Fraction(100.1), Fraction(100.1), Fraction(100.25), Fraction(3)]
    pts = [line.pts(s) for s in seconds]
    assert pts[:2] == [0, 9000]
    assert pts[2] == 9000 + 9000  # repeated time: one picture interval after the last
    assert pts[3] > pts[2]
    assert pts[4] == pts[3] + 9000  # a reconnect restarted the source's clock
    assert line.pts(Fraction(3.5)) == pts[4] + 45000  # and real time goes on from there


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def picture() -> PreviewPicture:
    small = cv2.resize(skimage.data.astronaut(), (256, 256), interpolation=cv2.INTER_AREA)
    return PreviewPicture(np.ascontiguousarray(small), (512, 512))


FACE = Detections(np.array([[174.0, 68.0, 278.0, 172.0]]), np.array([0.9]), ["face"])


def test_watchers_turn_pictures_on_and_off(loop: asyncio.AbstractEventLoop) -> None:
    settings = PreviewSettings(fps=4.0, width=320, max_connections=2, ttl_s=5.0)
    preview = StreamPreview("s1", settings, loop, OverlayStyle())
    assert preview.request() == OFF
    token = preview.open_connection(width=160)
    assert preview.request() == PreviewRequest(4.0, 160)
    other = preview.open_connection(width=10_000)  # never above the server's width
    assert preview.request() == PreviewRequest(4.0, 320)
    with pytest.raises(QueueFull, match="--preview-max-connections"):
        preview.open_connection(width=320)
    preview.close_connection(token)
    preview.close_connection(other)
    assert preview.request() == OFF
    preview.touch()  # a .jpg request: on for ttl_s
    now = time.monotonic()
    assert preview.request(now) == PreviewRequest(4.0, 320)
    assert preview.request(now + 6.0) == OFF
    assert preview.status().watchers == 1


def test_pictures_become_jpegs_on_the_loop_only_while_watched(
    loop: asyncio.AbstractEventLoop,
) -> None:
    preview = StreamPreview("s1", PreviewSettings(fps=100.0), loop, OverlayStyle())
    preview.keep(1, picture())
    preview.render(1, Fraction(0), FACE)  # nobody watches: nothing drawn or encoded
    assert preview.status().jpeg_frames == 0
    token = preview.open_connection(width=640)
    for index in range(2, 2 + KEPT_PICTURES + 5):
        preview.keep(index, picture())
    assert len(preview._pictures) == KEPT_PICTURES  # bounded: the oldest went
    preview.render(2 + KEPT_PICTURES + 4, Fraction(1), FACE)  # the newest; older ones go
    assert not preview._pictures
    loop.run_until_complete(asyncio.sleep(0))  # the sink's call_soon_threadsafe
    data, seq = preview.latest()
    assert seq == 1 and data is not None and data[:2] == b"\xff\xd8"
    status = preview.status()
    assert (status.pictures, status.jpeg_frames, status.mjpeg) == (KEPT_PICTURES + 6, 1, 1)
    assert status.picture_bytes == (KEPT_PICTURES + 6) * 256 * 256 * 3
    preview.close_connection(token)
    preview.close()
    loop.run_until_complete(asyncio.sleep(0))
    assert preview.ended


def test_hls_encoder_writes_a_playlist_that_plays_and_removes_its_folder(tmp_path: Path) -> None:
    settings = HlsSettings(fps=10.0, segment_s=0.5, list_size=4, idle_s=30.0)
    encoder = HlsEncoder(settings, tmp_path / "hls", "test", width=256)
    encoder.start()
    try:
        image = picture().image
        for i in range(30):  # 3 s of pictures at a variable rate, each taken before the next
            moved = np.ascontiguousarray(np.roll(image, i * 4, axis=1))
            encoder.offer(moved, Fraction(7 + i, 10) + Fraction(i % 3, 100), (512, 512))
            deadline = time.monotonic() + 30
            while encoder.frames <= i and time.monotonic() < deadline:
                time.sleep(0.01)
        assert encoder.frames == 30
        playlist = encoder.file("index.m3u8")
        assert playlist is not None
        assert encoder.file("../index.m3u8") is None and encoder.file("x.ts") is None
        frames = []
        # a live playlist: it never ends by itself, and FFmpeg's probe would wait for its 5 s
        # default analysis (more segments) where 1.5 s are there
        options = {"live_start_index": "0", "analyzeduration": "500000"}
        with av.open(str(playlist), options=options) as container:
            for frame in container.decode(video=0):
                frames.append(frame)
                if len(frames) == 10:
                    break
        assert len(frames) == 10 and (frames[0].width, frames[0].height) == (256, 256)
        pts = [f.pts for f in frames]
        assert all(b > a for a, b in zip(pts, pts[1:], strict=False)), pts
    finally:
        encoder.stop()
    assert encoder.ended and not encoder.folder.exists()


def test_hls_encoder_stops_when_nobody_asks(tmp_path: Path) -> None:
    encoder = HlsEncoder(HlsSettings(idle_s=0.2), tmp_path, "test")
    encoder.start()
    deadline = time.monotonic() + 10
    while not encoder.ended and time.monotonic() < deadline:
        time.sleep(0.05)
    assert encoder.ended  # stopped by itself: nobody asked
    encoder.stop()  # only waits for its thread: ``ended`` is set before the folder goes
    assert not encoder.folder.exists()
