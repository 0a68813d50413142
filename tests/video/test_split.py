"""A second decoder (``video.split``): the input's last pieces, keyframe to keyframe, decoded by
a second worker while the first stops where they start; every frame comes once, with the index
and the pixels a single decoder gives it, and the run's results are the same line for line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from multiprocessing.connection import Pipe
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from frameserve.processing.transform import Preprocessor
from frameserve.serving.config import load_model_config
from frameserve.serving.local import LocalServer
from frameserve.video import warm
from frameserve.video.config import load_video_pipeline
from frameserve.video.decode import VideoSource, probe
from frameserve.video.frames import Sampling, SeekPoint
from frameserve.video.prepare import Group
from frameserve.video.ring import RingWriter
from frameserve.video.run import RunOptions, VideoRun
from frameserve.video.split import (
    MOST_FRAMES,
    Piece,
    SecondDecoder,
    claimable,
    pieces_of,
    scan_pieces,
    second_spec,
)
from frameserve.video.worker import DecodeWorker, Until, WorkerDied, WorkerSpec, input_spec
from video.media import Clip, make_clip

pytestmark = pytest.mark.timeout(120)

FRAMESERVE = Path(sys.executable).parent / "frameserve"


@pytest.fixture(scope="module")
def reordered(clip_dir: Path) -> Clip:
    """96 frames, a keyframe every 24th, two B-frames: decode order is not presentation order."""
    return make_clip(clip_dir / "split-gop24-b2.mp4", frames=96, gop=24, bframes=2, audio=False)


# -- pieces ------------------------------------------------------------------------------------
def test_pieces_start_at_keyframes_with_the_index_a_decode_from_the_start_gives() -> None:
    # decode order of I P B B, presentation 0..14; keyframes at positions 0, 7 and 11
    packets = [0, 3, 1, 2, 6, 4, 5, 7, 10, 8, 9, 11, 14, 12, 13]
    assert pieces_of(packets, {0, 7, 11}) == [
        Piece(SeekPoint(7, 7), 11, 4),
        Piece(SeekPoint(11, 11), None, 4),
    ]


def test_a_keyframe_with_leading_pictures_starts_no_piece() -> None:
    """An open GOP: packets after the keyframe shown before it need the GOP before."""
    packets = [0, 3, 1, 2, 8, 6, 7, 11, 9, 10, 12]
    assert pieces_of(packets, {0, 4, 10}) == [Piece(SeekPoint(12, 10), None, 1)]
    assert pieces_of([0, 5, 1, 4, 6], {0, 3}) == []  # a packet before it is shown after it


def test_no_pieces_without_distinct_timestamps_or_keyframes() -> None:
    assert pieces_of([0, 1, 1, 2], {0, 2}) == []
    assert pieces_of([0, 1, 2, 3], {0}) == []
    assert pieces_of([], set()) == []


def test_pieces_too_large_to_wait_in_memory_end_what_may_be_taken() -> None:
    """Taken from the end with no gap: nothing before a piece over the limit."""
    small = [Piece(SeekPoint(k, k), k + 10, 10) for k in (10, 20, 40)]
    big = Piece(SeekPoint(30, 30), 40, MOST_FRAMES + 1)
    assert claimable([small[0], small[1], big, small[2]]) == [small[2]]
    assert claimable(small) == small
    assert claimable([small[0], big]) == []


def test_scan_finds_every_closed_gop_of_a_file(reordered: Clip) -> None:
    pieces = scan_pieces(reordered.path)
    starts = [i for i in reordered.keyframes if i > 0]
    assert [p.start.index for p in pieces] == starts == [24, 48, 72]
    assert [p.start.pts for p in pieces] == [reordered.pts[i] for i in starts]
    assert [p.end_pts for p in pieces] == [reordered.pts[48], reordered.pts[72], None]
    assert [p.frames for p in pieces] == [24, 24, 24]


def test_a_container_without_an_index_is_not_split(reordered: Clip, tmp_path: Path) -> None:
    ts = tmp_path / "copy.ts"
    with av.open(str(reordered.path)) as src, av.open(str(ts), "w", format="mpegts") as out:
        stream = out.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    assert scan_pieces(ts) == []


# -- the first worker's answers ---------------------------------------------------------------
def test_the_first_worker_agrees_to_stop_only_before_what_it_has_not_taken() -> None:
    server, child = Pipe()
    until = Until(child, RingWriter(child, 1024))
    server.send(("until", 30))
    assert not until.reached(10)
    assert server.recv() == ("until", 30, True)
    assert not until.reached(20)
    server.send(("until", 15))  # it took 20 already
    assert not until.reached(29)
    assert server.recv() == ("until", 15, False)
    assert until.reached(30)
    assert until.stop_at == 30


# -- both workers, read as a run reads them -------------------------------------------------
def _specs(clip: Clip, repository: Path) -> tuple[WorkerSpec, WorkerSpec]:
    config = load_model_config(repository / "faces" / "model.yaml")
    assert config.preprocess is not None
    pre = Preprocessor(config.preprocess, config.preprocess.fuse)
    source = VideoSource(clip.path, 0, Sampling.parse("all"), 1)
    first = input_spec(source, pre, group=4, full=False, where="test", defects=None, cores=(),
                       split=True)  # fmt: skip
    return first, second_spec(first, ())


class Piecewise:
    """A piece's frames as the second decoder delivers them (the run puts them in a pump)."""

    def __init__(self, frames: int) -> None:
        self.room, self.frames, self.ended = frames, [], False
        self.pictures: dict[int, np.ndarray] = {}

    def take(self, group: Group) -> None:
        assert group.tensor is not None
        for k, p in enumerate(group.frames):
            self.frames.append(p.frame.index)
            self.pictures[p.frame.index] = group.tensor[k].copy()

    def end(self) -> None:
        self.ended = True


def _pictures(worker: DecodeWorker, stop: threading.Event, pace_s: float = 0.0) -> dict[int, Any]:
    pictures = {}
    for group in worker.groups(stop):
        assert group.tensor is not None
        for k, p in enumerate(group.frames):
            pictures[p.frame.index] = group.tensor[k].copy()
        time.sleep(pace_s)
    return pictures


def test_two_workers_give_every_frame_once_with_a_single_decoders_pixels(
    reordered: Clip, zoo_repository: Path
) -> None:
    first_spec, spec = _specs(reordered, zoo_repository)
    stop = threading.Event()
    pieces: list[Piecewise] = []

    def pump(frames: int) -> Piecewise:
        pieces.append(Piecewise(frames))
        return pieces[-1]

    # the run's pumps stand-in: what the second worker delivers, piece by piece
    second = SecondDecoder(spec, "second", None, pump, lambda to, group: to.take(group))
    reader = threading.Thread(target=second.run, args=(stop,))
    reader.start()
    first = DecodeWorker(first_spec, "first")
    # Its ring holds 3 groups of 4: it cannot be past frame 16 when it answers the first ask.
    assert second.scanned.wait(30)
    second.attach(first)
    try:
        ours = _pictures(first, stop, pace_s=0.02)
        second.first_ended(first.stats.cores)
    finally:
        first.close()
    reader.join(30)
    assert not reader.is_alive()

    theirs = [i for piece in sorted(pieces, key=lambda p: p.frames[0]) for i in piece.frames]
    assert pieces and all(p.ended for p in pieces)
    assert sorted(ours) == list(range(len(ours)))  # the first worker's frames: a prefix
    assert list(ours) + theirs == list(range(reordered.frames))  # each frame once, in order
    assert second.frames == len(theirs)
    assert first.stats.kept + second.stats.kept == reordered.frames
    assert first.stats.decoded + second.stats.decoded == reordered.frames

    whole = DecodeWorker(replace(first_spec, split=False), "whole")
    try:
        single = _pictures(whole, stop)
    finally:
        whole.close()
    for piece in pieces:
        for index, picture in piece.pictures.items():
            assert np.array_equal(picture, single[index]), f"frame {index}"


def test_a_second_worker_that_dies_fails_its_reader(reordered: Clip, zoo_repository: Path) -> None:
    _, spec = _specs(reordered, zoo_repository)
    second = SecondDecoder(spec, "second", None, Piecewise, lambda to, group: to.take(group))
    failed: list[BaseException] = []

    def read() -> None:
        try:
            second.run(threading.Event())
        except BaseException as err:  # noqa: BLE001 - the test looks at it
            failed.append(err)

    reader = threading.Thread(target=read)
    reader.start()
    assert second.scanned.wait(30)  # it waits for its first piece now
    pid = second.worker.process.pid
    assert pid is not None
    os.kill(pid, signal.SIGSEGV)
    reader.join(30)
    assert len(failed) == 1 and isinstance(failed[0], WorkerDied)
    assert "SIGSEGV" in str(failed[0])


# -- whole runs --------------------------------------------------------------------------------
def _run(local: LocalServer, repository: Path, clip: Clip, out: Path, **options: Any) -> Any:
    name, config = load_video_pipeline("faces", repository)
    workers = warm.start(2 if options.get("second_cores") else 1)
    video = VideoRun(local, name, config, [clip.path], RunOptions(out=out, decode_threads=1,
                     **options), infos=[probe(clip.path)], warm=workers)  # fmt: skip
    try:
        return video.run()
    finally:
        for w in workers:
            w.close()


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_run_with_a_second_decoder_writes_what_one_decoder_writes(
    video_server: LocalServer, zoo_repository: Path, reordered: Clip, tmp_path: Path
) -> None:
    cores = tuple(sorted(os.sched_getaffinity(0)))
    two = _run(video_server, zoo_repository, reordered, tmp_path / "two", second_cores=cores)
    one = _run(video_server, zoo_repository, reordered, tmp_path / "one")
    name = f"{reordered.path.stem}.jsonl"
    assert lines(tmp_path / "two" / name) == lines(tmp_path / "one" / name)
    stream = two.streams[0]
    assert stream.decoded == stream.processed == stream.written == reordered.frames
    assert 0 <= stream.to_json()["second_decoder_frames"] <= reordered.frames - 24
    assert one.streams[0].second_decoder_frames == 0


def test_a_second_decoder_that_cannot_start_leaves_one_decoder(
    video_server: LocalServer, zoo_repository: Path, reordered: Clip, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """No shared memory or process to spare for it (made to fail here: the OS would not on
    this machine): the run decodes the input in one worker and says so."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("frameserve.video.run.SecondDecoder", refuse)
    cores = tuple(sorted(os.sched_getaffinity(0)))
    summary = _run(video_server, zoo_repository, reordered, tmp_path / "one", second_cores=cores)
    stream = summary.streams[0]
    assert stream.written == stream.processed == reordered.frames
    assert stream.second_decoder_frames == 0
    assert "no second decoder" in caplog.text


def test_a_sampling_that_carries_state_has_no_second_decoder(
    video_server: LocalServer, zoo_repository: Path, reordered: Clip, tmp_path: Path
) -> None:
    cores = tuple(sorted(os.sched_getaffinity(0)))
    summary = _run(video_server, zoo_repository, reordered, tmp_path / "fps",
                   second_cores=cores, sample=Sampling.parse("fps:6"))  # fmt: skip
    assert summary.streams[0].second_decoder_frames == 0


def test_video_run_on_720p_with_and_without_a_second_decoder(
    zoo_repository: Path, clip_dir: Path, tmp_path: Path
) -> None:
    """The command as users run it (forked workers, bound decoder, idle priority): the same
    lines and summary; ``--no-second-decoder`` turns it off."""
    clip = make_clip(clip_dir / "split-720p.mp4", frames=240, size=(1280, 720), gop=30,
                     bframes=2, audio=False)  # fmt: skip

    def video_run(out: Path, *flags: str) -> dict[str, Any]:
        done = subprocess.run(
            [str(FRAMESERVE), "video", "run", str(clip.path), "--pipeline", "faces",
             "--repository", str(zoo_repository), "--out", str(out), "--profile", *flags],
            capture_output=True, text=True, timeout=90, check=True,
        )  # fmt: skip
        return json.loads(done.stdout)["streams"][0]  # type: ignore[no-any-return]

    two = video_run(tmp_path / "two")
    one = video_run(tmp_path / "one", "--no-second-decoder")
    name = f"{clip.path.stem}"
    assert lines(tmp_path / "two" / f"{name}.jsonl") == lines(tmp_path / "one" / f"{name}.jsonl")
    summaries = [(tmp_path / d / f"{name}.summary.json").read_text() for d in ("two", "one")]
    assert summaries[0] == summaries[1]
    assert two["decoded"] == two["processed"] == one["decoded"] == clip.frames
    assert one["second_decoder_frames"] == 0
    assert 0 <= two["second_decoder_frames"] <= clip.frames - 30
