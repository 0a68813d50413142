"""Where a bound decode worker's pictures are sampled (``video.balance``): the decision, the ring
that carries groups of either size (``video.ring``), and results that do not depend on it:
a worker that ships rows gives the tensors, and a run the lines, of one that samples itself."""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from frameserve.errors import VideoError
from frameserve.processing.transform import Preprocessor
from frameserve.serving.config import load_model_config
from frameserve.serving.local import LocalServer
from frameserve.serving.stats import VersionStats
from frameserve.video import balance, warm
from frameserve.video.balance import SamplingBalance
from frameserve.video.config import load_video_pipeline
from frameserve.video.decode import VideoSource, probe
from frameserve.video.frames import Sampling
from frameserve.video.prepare import FramePreparer
from frameserve.video.ring import RingWriter
from frameserve.video.run import RunOptions, VideoRun
from frameserve.video.worker import READ_AHEAD_FRAMES, DecodeWorker, WorkerSpec, input_spec
from video.media import Clip, make_clip

pytestmark = pytest.mark.timeout(120)
MS = 1_000_000


# -- the decision ------------------------------------------------------------------------------
def feed(
    b: SamplingBalance, windows: list[tuple[float, float]], busy: list[float] | None = None
) -> list[bool | None]:
    """Each window: (queue ms, compute ms) added over ``WINDOW`` groups, in one second of wall
    with the command's cores ``busy`` (a share; half by default); the answer at its end."""
    queue = compute = 0
    cpu = wall = 0.0
    answers = []
    assert b.update(queue, compute, cpu, wall) is None  # the first group only starts the count
    for (q, c), share in zip(windows, busy or [0.5] * len(windows), strict=True):
        for _ in range(b.WINDOW - 1):
            assert b.update(queue, compute, cpu, wall) is None
        queue, compute = queue + int(q * MS), compute + int(c * MS)
        cpu, wall = cpu + share * b.cores, wall + 1.0
        answers.append(b.update(queue, compute, cpu, wall))
    return answers


def test_rows_while_frames_do_not_wait_for_the_model() -> None:
    b = SamplingBalance()
    # the decoder is the limit: frames barely wait (0.5% of compute) -> rows
    assert feed(b, [(0.5, 100.0)]) == [True] and b.rows


def test_pictures_again_once_frames_wait_and_no_flapping_between() -> None:
    b = SamplingBalance()
    answers = feed(b, [(0.5, 100), (5, 100), (9, 100), (12, 100), (5, 100), (1, 100)])
    # on; 5% and 9% are within the gap: still on; 12%: off; 5%: still off; 1%: on
    assert answers == [True, None, None, False, None, True]


def test_model_waiting_from_the_start_keeps_pictures() -> None:
    b = SamplingBalance()
    assert feed(b, [(80, 100), (150, 100), (2.5, 100)]) == [None, None, None]
    assert not b.rows


def test_pictures_while_the_command_has_no_core_to_spare() -> None:
    """Frames that do not wait say the decoder is slower than the model, not that the
    command has time for the sampling: on ``pan`` both cores are full, and rows would only
    add the copy."""
    b = SamplingBalance()
    busy = [1.0, 0.9, 0.86, 0.8, 0.93, 0.97]
    # full: pictures; room again: rows; busier with the sampling but under the upper mark:
    # still rows; full: pictures
    assert feed(b, [(0.5, 100)] * 6, busy=busy) == [None, None, None, True, None, False]


def test_the_share_is_of_the_commands_cores() -> None:
    two = SamplingBalance(cores=2)
    assert feed(two, [(0.5, 100)], busy=[0.7]) == [True]  # 1.4 cores busy of 2
    assert feed(SamplingBalance(cores=1), [(0.5, 100)], busy=[0.9]) == [None]


def test_a_window_without_inference_decides_nothing() -> None:
    b = SamplingBalance()
    assert feed(b, [(0, 0), (0, 0), (0.1, 10)]) == [None, None, True]


def test_model_times_are_per_request_on_both_sides() -> None:
    """Two groups of 8 merged into one batch of 16: each waited 1 ms and each spent the
    batch's 10 ms computing (Triton's statistics), so the ratio is 0.1, not 0.2."""
    stats = VersionStats("faces", "1", None)
    stats.record_batch(items=16, requests=2, input_ns=0, infer_ns=10 * MS, output_ns=0)
    for _ in range(2):
        stats.record_success(total_ns=11 * MS, queue_ns=1 * MS)
    queue, compute = balance.model_times(stats)
    assert (queue, compute) == (2 * MS, 20 * MS)


# -- the ring ----------------------------------------------------------------------------------
def test_the_ring_places_groups_of_any_size_in_order_and_wraps() -> None:
    ours, server = multiprocessing.Pipe()
    ring = RingWriter(ours, 100)
    assert [ring.place(n) for n in (40, 40)] == [0, 40]
    server.send(("free", 0))
    assert ring.place(30) == 0  # 20 left at the end: the group wraps to the freed start
    server.send(("free", 40))
    assert ring.place(50) == 30  # between the newest group and the end
    server.send(("rows", True))
    ring.poll()
    assert ring.rows


def test_the_ring_waits_for_the_server_to_free_room() -> None:
    ours, server = multiprocessing.Pipe()
    ring = RingWriter(ours, 100)
    ring.place(60)
    ring.place(40)  # full: head back at the oldest group

    def free_later() -> None:
        time.sleep(0.2)
        server.send(("rows", True))  # taken while waiting, does not free anything
        server.send(("free", 0))

    t = threading.Thread(target=free_later)
    started = time.monotonic()
    t.start()
    assert ring.place(50) == 0
    t.join()
    assert time.monotonic() - started >= 0.2 and ring.rows


def test_the_ring_refuses_what_cannot_be() -> None:
    ours, server = multiprocessing.Pipe()
    ring = RingWriter(ours, 100)
    with pytest.raises(VideoError, match="a group of 101 bytes, expected at most 100"):
        ring.place(101)
    ring.place(10)
    ring.place(10)
    server.send(("free", 10))  # out of order: the server reads groups in the order sent
    with pytest.raises(VideoError, match="freed 10, expected 0"):
        ring.poll()


# -- a worker that ships rows ------------------------------------------------------------------
@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Clip:
    """960x540: ``faces`` reads 216 of its 540 rows (rows are copied where the warp reads at
    most half the picture's). Longer than a run's ring (``READ_AHEAD_FRAMES``): a worker
    cannot ship it all before the first answer."""
    path = tmp_path_factory.mktemp("balance") / "zoom.mp4"
    frames = READ_AHEAD_FRAMES + 64
    return make_clip(path, frames=frames, size=(960, 540), motion="zoom", audio=False)


def faces_spec(repository: Path, clip: Path, *, cores: tuple[int, ...]) -> WorkerSpec:
    config = load_model_config(repository / "faces" / "model.yaml").preprocess
    assert config is not None
    source = VideoSource(clip, 0, Sampling.parse("all"), 1, info=probe(clip))
    return input_spec(
        source, Preprocessor(config, config.fuse), group=8, full=False, where="test",
        defects=None, cores=cores, read_ahead=READ_AHEAD_FRAMES,
    )  # fmt: skip


def decoded(
    spec: WorkerSpec, rows: bool, off_after: int | None = None
) -> tuple[list[np.ndarray], int]:
    """Every group's pictures at model size, and the frames shipped as rows; ``rows`` asked
    for before the first group, and pictures again after ``off_after`` groups."""
    worker = DecodeWorker(spec, "test-decode")
    groups = []
    try:
        worker.ask_for_rows(rows)  # before its first group: every group comes as rows
        for group in worker.groups(threading.Event()):
            groups.append(group)
            if len(groups) == off_after:
                worker.ask_for_rows(False)
    finally:
        worker.close()
    assert all(g.rows is None and not g.normalized for g in groups)  # sampled on arrival
    return [g.tensor for g in groups if g.tensor is not None], worker.stats.rows


def test_rows_sampled_by_the_reader_are_the_workers_pictures(
    zoo_repository: Path, long_clip: Clip
) -> None:
    core = sorted(os.sched_getaffinity(0))[-1]
    spec = faces_spec(zoo_repository, long_clip.path, cores=(core,))
    assert spec.rows
    pictures, none = decoded(spec, rows=False)
    sampled, shipped = decoded(spec, rows=True)
    assert none == 0 and shipped == long_clip.frames
    assert len(sampled) == len(pictures) == long_clip.frames // 8
    pairs = zip(sampled, pictures, strict=True)
    assert all(a.shape == b.shape and np.array_equal(a, b) for a, b in pairs)


def test_a_worker_asked_for_pictures_again_ships_pictures(
    zoo_repository: Path, long_clip: Clip
) -> None:
    """Rows, then pictures from a group after the ask on: the same tensors either way."""
    core = sorted(os.sched_getaffinity(0))[-1]
    spec = faces_spec(zoo_repository, long_clip.path, cores=(core,))
    pictures, _ = decoded(spec, rows=False)
    # the ring holds 4 groups of rows (2.9 MB each): the worker cannot ship them all before
    # it reads the second ask
    mixed, shipped = decoded(spec, rows=True, off_after=1)
    assert 8 <= shipped < long_clip.frames
    pairs = zip(mixed, pictures, strict=True)
    assert all(np.array_equal(a, b) for a, b in pairs)


def test_a_group_whose_pictures_change_size_is_sampled_where_decoded(
    zoo_repository: Path, long_clip: Clip, tmp_path: Path
) -> None:
    """A picture of another size than the group's first cannot be copied into the room the
    group took for rows of the first's size: that group is sampled where it was decoded,
    rows included, to the pictures of preparing each picture alone."""
    config = load_model_config(zoo_repository / "faces" / "model.yaml").preprocess
    assert config is not None
    wide = make_clip(tmp_path / "wide.mp4", frames=2, size=(1280, 720), audio=False)

    def pictures(path: Path, stream: int) -> list[Any]:
        source = VideoSource(path, stream, Sampling.parse("all"), 1)
        return list(itertools.islice(source.frames(threading.Event()), 2))

    def mixed() -> list[Any]:
        a, b = pictures(long_clip.path, 0), pictures(wide.path, 1)
        return [a[0], b[0], a[1]]  # 960x540, 1280x720, 960x540

    preparer = FramePreparer(Preprocessor(config, config.fuse), "test")
    n = preparer.gathers(mixed()[0])
    assert n == 216 * (960 + 480 + 480)
    out = np.zeros(3 * n + 3 * 192 * 192 * 3, np.uint8)
    prepared = [preparer.prepare(f, rows=out[k * n : (k + 1) * n]) for k, f in enumerate(mixed())]
    assert [p.rows is not None for p in prepared] == [True, False, True]
    group = preparer.group(prepared, normalize=False, out=out)
    alone = FramePreparer(Preprocessor(config, config.fuse), "test")
    expected = alone.group([alone.prepare(f) for f in mixed()], normalize=False)
    assert group.rows is None and group.tensor is not None and expected.tensor is not None
    assert np.array_equal(group.tensor, expected.tensor)


def test_only_a_bound_worker_of_video_run_ships_rows(
    zoo_repository: Path, long_clip: Clip, pan_clip: Clip
) -> None:
    assert not faces_spec(zoo_repository, long_clip.path, cores=()).rows
    assert not faces_spec(zoo_repository, pan_clip.path, cores=(0,)).rows  # 216 of 360 rows
    spec = faces_spec(zoo_repository, long_clip.path, cores=(0,))
    person = load_model_config(zoo_repository / "person-mask" / "model.yaml").preprocess
    assert person is not None
    source = VideoSource(long_clip.path, 0, Sampling.parse("all"), 1, info=probe(long_clip.path))
    mask = input_spec(
        source, Preprocessor(person, False), group=8, full=False, where="test", defects=None,
        cores=(0,), read_ahead=READ_AHEAD_FRAMES,
    )  # fmt: skip
    assert spec.rows and not mask.rows  # 512 rows of 540: more than half the picture
    job = input_spec(
        source, Preprocessor(person, False), group=8, full=False, where="test", defects=None,
        cores=(0,), read_ahead=0,
    )  # fmt: skip
    assert not job.rows  # a server's job: its ring holds 3 groups


def test_asking_a_worker_without_rows_changes_nothing(
    zoo_repository: Path, long_clip: Clip
) -> None:
    spec = faces_spec(zoo_repository, long_clip.path, cores=())
    _, shipped = decoded(spec, rows=True)
    assert shipped == 0


# -- a run -------------------------------------------------------------------------------------
def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("sampled_by", ["server", "worker"])
def test_a_run_gives_the_same_lines_wherever_it_samples(
    video_server: LocalServer, zoo_repository: Path, long_clip: Clip, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, sampled_by: str,
) -> None:  # fmt: skip
    """Thresholds moved so the balance decides at the first group; the results are those of a
    run whose worker samples every picture itself, line for line."""
    core = sorted(os.sched_getaffinity(0))[-1]
    monkeypatch.setattr(SamplingBalance, "WINDOW", 1)
    name, config = load_video_pipeline("faces", zoo_repository)
    infos = [probe(long_clip.path)]

    def run(out: Path, threshold: float) -> Any:
        monkeypatch.setattr(SamplingBalance, "ON_BELOW", threshold)  # on at once, or never
        monkeypatch.setattr(SamplingBalance, "OFF_ABOVE", threshold)  # and never off again
        options = RunOptions(out=out, decode_threads=1, decoder_cores=((core,),))
        video = VideoRun(video_server, name, config, [long_clip.path], options, infos=infos,
                         warm=warm.start(1))  # fmt: skip
        return video.run()

    here = run(tmp_path / "w", -1.0)  # never rows
    there = run(tmp_path / "s", float("inf") if sampled_by == "server" else -1.0)
    assert here.streams[0].sampled_by_server == 0
    moved = there.streams[0].to_json()["sampled_by_server"]
    if sampled_by == "server":  # all but the groups shipped before the first answer came:
        assert 8 <= moved <= long_clip.frames - 16  # two read, and at most the ring ahead
    else:
        assert moved == 0
    stem = long_clip.path.stem
    assert lines(tmp_path / "s" / f"{stem}.jsonl") == lines(tmp_path / "w" / f"{stem}.jsonl")
    assert there.frames == here.frames == long_clip.frames
