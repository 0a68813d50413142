"""Chunk plans and pieces (no cluster): decoding every piece as a chunk worker does gives the
frames a decode of the whole file gives, once each, for every sampling mode; the stitcher
keeps boxes and carries track ids across a border."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import orjson
import pytest
from video.media import make_clip

from frameserve.cli.main import main
from frameserve.errors import ConfigError
from frameserve.scale.chunks import ChunkPlan, plan_chunks, write_pieces
from frameserve.scale.cluster import RaySettings
from frameserve.scale.stitch import stitch
from frameserve.video.decode import VideoSource
from frameserve.video.frames import Sampling
from frameserve.video.jobs.spec import JobProgress


@pytest.fixture(scope="module")
def bframe_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("chunks") / "gop25.mp4"
    make_clip(path, frames=200, size=(160, 96), gop=25, bframes=3, audio=False)
    return path


def _decoded(path: Path, sampling: Sampling, **start: object) -> list[tuple[int, int]]:
    source = VideoSource(path, 0, sampling, 1, **start)  # type: ignore[arg-type]
    return [(f.index, f.pts) for f in source.frames(threading.Event())]


@pytest.mark.parametrize("sample", ["all", "every:3", "fps:7", "keyframes"])
def test_pieces_give_every_kept_frame_once(bframe_clip: Path, tmp_path: Path, sample: str) -> None:
    sampling = Sampling.parse(sample)
    plan = plan_chunks(bframe_clip, sampling, chunk_frames=50, overlap=3)
    assert ChunkPlan.from_json(plan.to_json()) == plan  # a restart reads the same plan back
    whole = _decoded(bframe_clip, sampling)
    got = []
    for chunk, piece in zip(plan.chunks, write_pieces(bframe_clip, plan, tmp_path), strict=True):
        frames = _decoded(piece, sampling, start=chunk.seek, first_index=chunk.first)
        if chunk.bound_pts is not None:
            frames = [f for f in frames if f[1] < chunk.bound_pts]
        own = [f for f in frames if f[0] < chunk.end]
        assert len(own) == chunk.kept
        assert tuple(i for i, _ in frames if i >= chunk.end) == chunk.overlap
        got += own
    assert got == whole
    assert len(plan.chunks) == 4 and plan.kept == len(whole)


def _line(frame: int, boxes: list[tuple[list[float], int]]) -> bytes:
    dets = [{"box": b, "score": 0.9, "label": "face", "track_id": t} for b, t in boxes]
    return orjson.dumps({"frame": frame, "pts": frame, "pts_ticks": frame, "detections": dets})


def test_stitching_maps_the_next_chunks_ids_by_overlap() -> None:
    a, b = [0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 70.0, 70.0]
    first = b"\n".join(_line(f, [(a, 1), (b, 2)]) for f in range(3)) + b"\n"
    first_overlap = b"\n".join(_line(f, [(a, 1), (b, 2)]) for f in (3, 4)) + b"\n"
    # the second chunk's tracker numbered the same two objects the other way round
    second = b"\n".join(_line(f, [(b, 1), (a, 2)]) for f in (3, 4, 5)) + b"\n"
    lines = [orjson.loads(x) for x in stitch([(first, first_overlap), (second, b"")])]
    assert [x["frame"] for x in lines] == [0, 1, 2, 3, 4, 5]
    last = lines[-1]["detections"]
    assert [(d["box"], d["track_id"]) for d in last] == [(b, 2), (a, 1)]


def test_progress_shows_chunks_only_for_ray_jobs() -> None:
    assert "chunks" not in JobProgress(3, 10).to_json()
    shown = JobProgress(3, 10, chunks=(1, 2, 5)).to_json()["chunks"]
    assert shown == {"done": 1, "running": 2, "total": 5}


@pytest.mark.parametrize("address", ["", "nohost"])
def test_bad_addresses_are_refused(address: str) -> None:
    with pytest.raises(ConfigError, match="expected 'auto' or host:port"):
        RaySettings(address)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_video_run_fails_at_once_on_an_unreachable_cluster(
    bframe_clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = _closed_port()
    argv = ["video", "run", str(bframe_clip), "--pipeline", "faces", "--out", str(tmp_path),
            "--ray", f"127.0.0.1:{port}"]  # fmt: skip
    assert main(argv) == 1
    assert f"--ray 127.0.0.1:{port}: cannot reach the Ray cluster" in capsys.readouterr().err


def test_serve_fails_start_up_on_an_unreachable_cluster(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = _closed_port()
    argv = ["serve", "--repository", str(tmp_path), "--ray", f"127.0.0.1:{port}",
            "--state-dir", str(tmp_path / "state"), "--media-root", str(tmp_path)]  # fmt: skip
    assert main(argv) == 2
    assert f"--ray 127.0.0.1:{port}: cannot reach the Ray cluster" in capsys.readouterr().err
