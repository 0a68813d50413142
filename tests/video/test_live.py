"""Live streams in process: real MPEG-TS over loopback TCP, real PyAV, the real zoo ``faces``.

Sources are played by ``live_sources.TcpSource`` at real time (or faster, for overload), from
a clip whose face boxes are known (``video.media``). Subscriptions are read on the server's own
loop (``LocalServer.submit``), as the HTTP and gRPC front ends read them. Waits are bounded by
generous limits: they catch hangs, they do not measure speed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from frameserve.errors import ConfigError, InvalidInput, NotFound, QueueFull, VideoError
from frameserve.serving.local import LocalServer
from frameserve.video.live import LiveSettings, LiveStream, LiveStreams, StreamSpec, Subscription
from frameserve.video.live.policy import SourcePolicy
from frameserve.video.live.records import LiveRecord
from frameserve.video.live.subscribe import Subscribers
from video.live_sources import TcpSource, TsStream, closed_port, mpegts_stream
from video.media import Clip, make_clip, write_not_a_video

pytestmark = pytest.mark.timeout(120)

STATUS_KEYS = {
    "id", "source", "pipeline", "state", "fps_in", "fps_out", "frames_in", "frames_out",
    "dropped", "lag_ms", "last_error", "started", "reconnects", "owner", "push",
    "preview",
}  # fmt: skip
HANG_S = 20.0  # generous limit for anything that should take a second or two


# -- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def live_clip(tmp_path_factory: pytest.TempPathFactory) -> Clip:
    """2 s at 25 fps, 320x240, a keyframe every second: the camera pans over the astronaut."""
    folder = tmp_path_factory.mktemp("live")
    return make_clip(folder / "pan.mp4", frames=50, size=(320, 240), fps=25, audio=False, gop=25)


@pytest.fixture(scope="module")
def ts(live_clip: Clip) -> TsStream:
    """The clip as MPEG-TS, 60 times in a row (two minutes of camera)."""
    return mpegts_stream(live_clip.path, repeat=60)


@pytest.fixture
def media_root(tmp_path: Path, live_clip: Clip) -> Path:
    root = tmp_path / "media"
    root.mkdir()
    (root / "clip.mp4").write_bytes(live_clip.path.read_bytes())
    return root


@pytest.fixture
def make_streams(
    video_server: LocalServer, media_root: Path
) -> Iterator[Callable[..., LiveStreams]]:
    """``make_streams(**settings)``: a registry over the module's server; closed at the end,
    and then no thread of any stream may be left."""
    made: list[LiveStreams] = []

    def make(**overrides: Any) -> LiveStreams:
        settings = {
            "media_root": media_root,
            "open_timeout_s": 3.0,
            "read_timeout_s": 3.0,
            "backoff_min_s": 0.1,
            "backoff_max_s": 0.4,
            # the test sources listen on loopback, which the source policy refuses by default
            "policy": SourcePolicy.from_flags(["127.0.0.0/8"]),
            **overrides,
        }
        streams = LiveStreams(video_server, LiveSettings(**settings))
        made.append(streams)
        return streams

    yield make
    for streams in made:
        streams.close(10.0)
    left = [t.name for t in threading.enumerate() if t.name.startswith("live-")]
    assert not left, f"threads still running after close: {left}"


# -- helpers ------------------------------------------------------------------------------------
def wait_for(what: str, predicate: Callable[[], bool], timeout_s: float = HANG_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


def subscribe(local: LocalServer, stream: LiveStream) -> Subscription:
    async def on_loop() -> Subscription:
        return stream.subscribe()

    return local.submit(on_loop()).result(5)


def take(local: LocalServer, sub: Subscription, n: int) -> list[dict[str, Any]]:
    """The next ``n`` records of ``sub`` (fewer if the stream ends), read on the loop."""

    async def read() -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        async for record in sub:
            records.append(record.to_json())  # the wire form, as clients get it
            if len(records) == n:
                break
        return records

    return local.submit(read()).result(HANG_S)


def read_all(local: LocalServer, sub: Subscription) -> Future[list[dict[str, Any]]]:
    """Read ``sub`` on the loop until its stream ends; the future holds every record."""

    async def read() -> list[dict[str, Any]]:
        return [record.to_json() async for record in sub]

    return local.submit(read())


def spec(source: str, **fields: Any) -> StreamSpec:
    return StreamSpec(source=source, **{"pipeline": "faces", **fields})


def box_iou(a: Any, b: Any) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


# -- a stream from start to end ----------------------------------------------------------------
def test_a_tcp_stream_publishes_face_records_until_detached(
    video_server: LocalServer,
    make_streams: Callable[..., LiveStreams],
    ts: TsStream,
    live_clip: Clip,
) -> None:
    streams = make_streams()
    with TcpSource(ts) as source:
        stream = streams.attach(spec(source.url))
        assert stream.state == "connecting"
        assert streams.list() == [stream] and streams.get(stream.id) is stream
        sub = subscribe(video_server, stream)
        records = take(video_server, sub, 30)
        assert stream.state == "running"
        rest = read_all(video_server, sub)
        streams.detach(stream.id)
        rest.result(HANG_S)  # the subscription ended

    assert stream.state == "stopped" and streams.list() == []
    with pytest.raises(NotFound, match=stream.id):
        streams.get(stream.id)
    truth = live_clip.face_boxes()
    frames = [r["frame"] for r in records]
    assert frames == sorted(frames) and len(set(frames)) == len(frames)
    track_ids = set()
    for r in records:
        assert r["stream"] == stream.id and 0 <= r["lag_ms"] < 5000
        assert isinstance(r["pts_ticks"], int) and r["pts"] >= float(ts.start_s)
        (face,) = r["detections"]
        expected = truth[ts.clip_frame(r["pts"])]
        assert box_iou(face["box"], expected) > 0.5, (r["frame"], face["box"], expected)
        track_ids.add(face["track_id"])
    assert len(track_ids) == 1, f"one face, one track id; got {track_ids}"

    status = stream.status().to_json()
    assert set(status) == STATUS_KEYS
    assert status["source"] == source.url and status["pipeline"] == "faces"
    assert status["frames_out"] >= 30 and status["frames_in"] >= status["frames_out"]
    assert set(status["dropped"]) == {"stale", "busy", "failed"}
    assert status["dropped"]["failed"] == 0
    assert status["lag_ms"]["p50"] is not None and status["reconnects"] == 0
    assert status["started"].endswith("Z") and status["last_error"] is None
    assert status["preview"]["pictures"] == 0  # nobody watched: the worker sent no pictures


def test_streams_attach_and_detach_while_others_run(
    video_server: LocalServer, make_streams: Callable[..., LiveStreams], ts: TsStream
) -> None:
    streams = make_streams()
    with TcpSource(ts) as source:
        first = streams.attach(spec(source.url))
        second = streams.attach(spec(source.url, sample="every:2"))
        sub = subscribe(video_server, first)
        take(video_server, sub, 10)
        halves = take(video_server, subscribe(video_server, second), 5)

        streams.detach(second.id)
        third = streams.attach(spec(source.url, max_fps=5.0))
        assert {s.id for s in streams.list()} == {first.id, third.id}
        before = first.status().to_json()["frames_out"]
        assert len(take(video_server, sub, 20)) == 20  # the first stream went on
        fifths = take(video_server, subscribe(video_server, third), 4)
        assert first.state == third.state == "running" and second.state == "stopped"
        assert first.status().to_json()["frames_out"] >= before + 20

        streams.detach(first.id)
        assert first.state == "stopped" and third.state == "running"
        streams.detach(third.id)
    assert streams.list() == []
    assert all(r["frame"] % 2 == 0 for r in halves)
    gaps = [b["pts"] - a["pts"] for a, b in zip(fifths, fifths[1:], strict=False)]
    assert all(gap > 0.19 for gap in gaps), f"max_fps 5: expected 0.2 s apart, got {gaps}"


def test_a_subscriber_that_never_reads_loses_only_its_own_records(
    video_server: LocalServer, make_streams: Callable[..., LiveStreams], ts: TsStream
) -> None:
    streams = make_streams(subscriber_queue=8)
    with TcpSource(ts) as source:
        attached = [streams.attach(spec(source.url)) for _ in range(8)]
        subs = [subscribe(video_server, s) for s in attached]
        readers = [read_all(video_server, sub) for sub in subs[1:]]  # subs[0] is never read
        wait_for(
            "every stream to publish 30 records",
            lambda: all(s.status().to_json()["frames_out"] >= 30 for s in attached),
            timeout_s=40,
        )
        assert subs[0].dropped > 0  # its buffer of 8 overflowed; the stream did not wait
        for s in attached:
            assert s.state == "running", s.status()
        for s in attached:
            streams.detach(s.id)
        received = [reader.result(HANG_S) for reader in readers]

    for s in attached:
        assert s.state == "stopped"
    for records, sub in zip(received, subs[1:], strict=True):
        assert len(records) >= 20, f"a reading subscriber got {len(records)} records"
        assert sub.dropped == 0
    assert subs[0].ended and subs[0].dropped >= attached[0].status().to_json()["frames_out"] - 8 - 1


def test_overload_drops_stale_frames_and_keeps_the_lag_bounded(
    video_server: LocalServer, make_streams: Callable[..., LiveStreams], ts: TsStream
) -> None:
    """Three sources at 20x real time (500 fps each) are more than the model can take."""
    streams = make_streams()
    with TcpSource(ts, speed=20.0) as source:
        attached = [streams.attach(spec(source.url, max_inflight=1)) for _ in range(3)]
        subs = [subscribe(video_server, s) for s in attached]
        readers = [read_all(video_server, sub) for sub in subs]
        wait_for(
            "stale frames to be dropped",
            lambda: sum(s.status().to_json()["dropped"]["stale"] for s in attached) > 20,
            timeout_s=40,
        )
        wait_for("records", lambda: all(s.status().to_json()["frames_out"] > 20 for s in attached))
        statuses = [s.status().to_json() for s in attached]
        for s in attached:
            streams.detach(s.id)
        received = [reader.result(HANG_S) for reader in readers]

    for status, records in zip(statuses, received, strict=True):
        assert status["lag_ms"]["p99"] < 5000, status  # a hang limit, not a speed claim
        assert max(r["lag_ms"] for r in records) < 5000
        assert status["dropped"]["failed"] == 0
        counted = status["frames_out"] + sum(status["dropped"].values())
        assert counted <= status["frames_in"]  # the rest were in flight


def test_a_stream_follows_its_model_through_a_reload(
    video_server: LocalServer, make_streams: Callable[..., LiveStreams], ts: TsStream
) -> None:
    """A reload retires the version a stream was built with; the stream moves to the new one."""
    streams = make_streams()
    repository = video_server.server.repository
    with TcpSource(ts) as source:
        stream = streams.attach(spec(source.url))
        sub = subscribe(video_server, stream)
        take(video_server, sub, 5)
        old = repository.get("faces")
        try:
            # The same settings as an override: a new fingerprint, so a new version object.
            video_server.call(repository.load("faces", override=old.config), timeout=60)
            assert repository.get("faces") is not old
            after = take(video_server, sub, 20)  # would wait forever on the retired version
        finally:
            video_server.call(repository.load("faces"), timeout=60)  # model.yaml again
        streams.detach(stream.id)
    assert len(after) == 20 and all(r["detections"] for r in after)
    assert stream.processor.single is not old


# -- sources that go away ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("stall", "error"),
    [
        (False, "the source ended the stream"),
        (True, "no data from the source within read_timeout_s = 0.5 s"),
    ],
    ids=["closed", "stalled"],
)
def test_a_lost_connection_is_reconnected(
    video_server: LocalServer,
    make_streams: Callable[..., LiveStreams],
    ts: TsStream,
    stall: bool,
    error: str,
) -> None:
    streams = make_streams(read_timeout_s=0.5)
    with TcpSource(ts, drop_after_s=1.5, drops=1, stall=stall) as source:
        stream = streams.attach(spec(source.url))
        states: list[str] = []

        def reconnected() -> bool:
            if not states or states[-1] != stream.state:
                states.append(stream.state)
            return stream.status().to_json()["reconnects"] >= 1 and stream.state == "running"

        wait_for("the stream to reconnect", reconnected)
        sub = subscribe(video_server, stream)
        assert len(take(video_server, sub, 5)) == 5  # records flow again
        status = stream.status().to_json()
        streams.detach(stream.id)
    assert states[0] == "connecting" and "retrying" in states and states[-1] == "running"
    assert states.index("retrying") > states.index("running")
    assert source.connections == 2 and status["reconnects"] == 1
    assert status["last_error"] == error


def test_an_unreachable_source_retries_until_detached(
    make_streams: Callable[..., LiveStreams],
) -> None:
    streams = make_streams()
    stream = streams.attach(spec(f"tcp://127.0.0.1:{closed_port()}"))  # not an attach error
    wait_for("retrying", lambda: stream.state == "retrying" and stream.last_error is not None)
    assert "Connection refused" in str(stream.last_error)
    status = stream.status().to_json()
    assert status["frames_in"] == 0 and status["reconnects"] == 0
    streams.detach(stream.id, timeout_s=HANG_S)
    assert stream.state == "stopped" and streams.list() == []


def test_a_silent_source_times_out_and_retries(make_streams: Callable[..., LiveStreams]) -> None:
    """The kernel accepts the connection (backlog); nothing is ever sent."""
    streams = make_streams(open_timeout_s=0.5)
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        stream = streams.attach(spec(f"tcp://127.0.0.1:{port}"))
        wait_for("retrying", lambda: stream.state == "retrying")
        assert stream.last_error == "no data from the source within open_timeout_s = 0.5 s"
        assert streams.get(stream.id).status().to_json()["frames_in"] == 0
        streams.detach(stream.id, timeout_s=HANG_S)
    assert stream.state == "stopped"


def test_a_protocol_this_ffmpeg_lacks_stops_the_stream(
    make_streams: Callable[..., LiveStreams],
) -> None:
    """srt is an allowed scheme, but PyAV's FFmpeg is built without libsrt: retrying cannot
    help, so the stream stops and says why."""
    streams = make_streams()
    stream = streams.attach(spec(f"srt://127.0.0.1:{closed_port()}"))
    wait_for("an error", lambda: stream.last_error is not None)
    if "Protocol not found" not in str(stream.last_error):
        pytest.skip(f"this FFmpeg opens srt URLs: {stream.last_error}")
    wait_for("stopped", lambda: stream.state == "stopped")
    assert "this server's FFmpeg cannot open srt URLs" in str(stream.last_error)
    assert streams.list() == [stream]  # listed, stopped, until detached


# -- media-root files ----------------------------------------------------------------------------
def test_a_media_root_file_plays_at_its_real_rate_and_stops(
    video_server: LocalServer, make_streams: Callable[..., LiveStreams], live_clip: Clip
) -> None:
    streams = make_streams()
    started = time.monotonic()
    stream = streams.attach(spec("clip.mp4"))
    sub = subscribe(video_server, stream)
    records = read_all(video_server, sub).result(HANG_S)  # ends with the file
    elapsed = time.monotonic() - started

    assert stream.state == "stopped" and streams.list() == [stream]  # listed until detached
    frames = [r["frame"] for r in records]
    assert frames == sorted(frames) and records
    assert [r["pts_ticks"] for r in records] == [live_clip.pts[f] for f in frames]
    # Released by pts: a 2 s clip cannot be through in much less than 2 s (a lower bound).
    assert elapsed > 0.5 * live_clip.frames / float(live_clip.fps)
    status = stream.status().to_json()
    assert status["frames_in"] == live_clip.frames and status["frames_out"] == len(records)
    # At the end every frame is accounted for: a record or a counted drop.
    assert len(records) + sum(status["dropped"].values()) == live_clip.frames
    streams.detach(stream.id)
    assert streams.list() == []


def test_a_looping_file_keeps_its_timestamps_increasing(
    video_server: LocalServer, make_streams: Callable[..., LiveStreams], live_clip: Clip
) -> None:
    streams = make_streams()
    stream = streams.attach(spec("clip.mp4", loop=True, sample="every:2"))
    sub = subscribe(video_server, stream)
    wanted = live_clip.frames // 2 + 10  # into the second play
    records = take(video_server, sub, wanted)
    streams.detach(stream.id)

    assert len(records) == wanted
    pts = [r["pts_ticks"] for r in records]
    frames = [r["frame"] for r in records]
    assert pts == sorted(pts) and len(set(pts)) == len(pts)
    assert frames == sorted(frames) and all(f % 2 == 0 for f in frames)
    period = live_clip.pts[-1] + (live_clip.pts[1] - live_clip.pts[0])
    second_play = [p for p in pts if p >= period]
    assert second_play and second_play[0] == period  # frame 0 again, one clip later
    assert all(r["detections"] for r in records)


def spawned_children() -> set[int]:
    """PIDs of this process's children started by ``spawn`` (the streams' decode workers)."""
    pids: set[int] = set()
    for task in Path("/proc/self/task").iterdir():
        try:
            pids |= {int(c) for c in (task / "children").read_text().split()}
        except OSError:
            continue  # the thread ended meanwhile
    workers = set()
    for pid in pids:
        try:
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                workers.add(pid)
        except OSError:
            continue
    return workers


def test_a_file_whose_worker_crashes_stops_with_the_reason(
    video_server: LocalServer, make_streams: Callable[..., LiveStreams], live_clip: Clip
) -> None:
    """A file that does not loop is not played again from its start when its worker dies
    (a replacement would repeat frames its subscribers saw): the stream stops with the reason."""
    streams = make_streams()
    before = spawned_children()
    stream = streams.attach(spec("clip.mp4"))
    sub = subscribe(video_server, stream)
    first = take(video_server, sub, 3)
    [pid] = spawned_children() - before
    os.kill(pid, signal.SIGSEGV)
    rest = read_all(video_server, sub).result(HANG_S)  # ends with the stream

    assert stream.state == "stopped"
    assert stream.last_error is not None and "SIGSEGV" in stream.last_error
    assert "clip.mp4" in stream.last_error
    frames = [r["frame"] for r in first + rest]
    assert frames == sorted(set(frames)) and len(frames) < live_clip.frames  # no second play
    assert stream.reconnects == 0
    assert pid not in spawned_children()


# -- what attach refuses -------------------------------------------------------------------------
def test_attach_refuses_bad_sources_and_pipelines(
    make_streams: Callable[..., LiveStreams], media_root: Path, tmp_path: Path
) -> None:
    streams = make_streams()
    outside = tmp_path / "outside.mp4"
    outside.write_bytes((media_root / "clip.mp4").read_bytes())
    (media_root / "escape.mp4").symlink_to(outside)
    write_not_a_video(media_root / "notes.mp4", "text")
    cases: list[tuple[StreamSpec, type[Exception], str]] = [
        (spec("../outside.mp4"), InvalidInput, r"source: '\.\.' is not allowed"),
        (spec(str(outside)), InvalidInput, "source: expected a path relative to the media root"),
        (spec("escape.mp4"), InvalidInput, "source: 'escape.mp4' leads outside the media root"),
        (spec("missing.mp4"), InvalidInput, "source: no such file in the media root"),
        (spec("notes.mp4"), VideoError, "not a video FFmpeg can read"),
        (spec("file:///etc/passwd"), InvalidInput, "source: expected a URL with scheme rtsp,"),
        (spec("concat:a.mp4|b.mp4"), InvalidInput, "got scheme 'concat'"),
        (spec("tcp://127.0.0.1:5000?listen=1"), InvalidInput, "does not listen"),
        (spec("tcp://127.0.0.1:5000", loop=True), InvalidInput, "loop: only files"),
        (spec("clip.mp4", pipeline="no-such"), InvalidInput, "pipeline: expected a built-in"),
        (spec("clip.mp4", pipeline="fruc"), InvalidInput, "pipeline: expected an analysis"),
        (spec("clip.mp4", pipeline="enhance"), InvalidInput, "live streams do not run FFmpeg"),
        (spec("clip.mp4", pipeline="faces-near"), ConfigError, "needs model 'faces-near'"),
    ]
    for bad, error, message in cases:
        with pytest.raises(error, match=message):
            streams.attach(bad)
    assert streams.list() == []


def spec_with(**fields: Any) -> dict[str, Any]:
    return {"source": "clip.mp4", "pipeline": "faces", **fields}


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        (spec_with(sample="every:0"), "sample"),
        (spec_with(sample="sometimes"), "sample"),
        (spec_with(max_fps=0), "max_fps"),
        (spec_with(max_fps=-2.5), "max_fps"),
        (spec_with(max_inflight=0), "max_inflight"),
        (spec_with(max_inflight=65), "max_inflight"),
        (spec_with(rate=5), "rate"),
        ({"pipeline": "faces"}, "source"),
    ],
)
def test_a_stream_spec_names_the_bad_field(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        StreamSpec.model_validate(fields)
    assert [e["loc"][0] for e in caught.value.errors()] == [field]


def test_more_than_max_streams_is_queue_full(make_streams: Callable[..., LiveStreams]) -> None:
    streams = make_streams(max_streams=2)
    url = f"tcp://127.0.0.1:{closed_port()}"
    first, _ = streams.attach(spec(url)), streams.attach(spec(url))
    with pytest.raises(QueueFull, match="max_streams: expected at most 2 live streams, 2 are"):
        streams.attach(spec(url))
    streams.detach(first.id)
    streams.attach(spec(url))  # room again
    assert len(streams.list()) == 2


# -- subscriptions -------------------------------------------------------------------------------
def test_a_full_subscription_drops_its_oldest_records_and_ends_after_the_rest() -> None:
    async def scenario() -> tuple[list[Any], int, list[Any]]:
        subscribers = Subscribers("s", size=3)
        sub = subscribers.subscribe()
        for i in range(5):
            subscribers.deliver(LiveRecord("s", i, i, Fraction(1, 25)))
        subscribers.end()
        late = subscribers.subscribe()  # after the end: ends at once
        return [r async for r in sub], sub.dropped, [r async for r in late]

    records, dropped, late = asyncio.run(scenario())
    assert [r.frame for r in records] == [2, 3, 4] and dropped == 2
    assert late == []
