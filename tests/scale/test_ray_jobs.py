"""A real 2-node Ray cluster on this machine, one node killed while jobs or streams run.

The cluster runs inside a private network namespace (Ray binds wildcard addresses), driven by
``cluster_driver.py``: each node ``--num-cpus 1`` pinned to a core of its own, token
authentication, health checks every 500 ms. At about 30% of the chunks the second node's
raylet is killed; the job must still write every frame exactly once, in order, with the same
boxes and track ids as a single-node run of the same clip. Live streams placed on both nodes
must run again within 15 s of the kill.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import av
import orjson
import pytest
from video.media import make_clip

from frameserve.serving.local import LocalServer
from frameserve.serving.server import ServerSettings
from frameserve.video.config import load_video_pipeline
from frameserve.video.run import RunOptions, VideoRun

pytest.importorskip("ray", reason="the ray extra (frameserve[ray]) is not installed")

DRIVER = Path(__file__).with_name("cluster_driver.py")
SRC = Path(__file__).parents[2] / "src"


def _unshare_permitted() -> bool:
    try:
        done = subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


pytestmark = pytest.mark.skipif(
    not _unshare_permitted(),
    reason="'unshare -n' is not permitted here: the Ray cluster needs a private network "
    "namespace (Ray binds wildcard addresses)",
)


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1500 frames at 24 fps, small, a keyframe every 48 frames, B-frames (decode order
    differs from presentation order, so chunks must cut packets by both)."""
    path = tmp_path_factory.mktemp("ray-clip") / "long.mp4"
    make_clip(path, frames=1500, size=(160, 96), gop=48, bframes=2, audio=False)
    return path


def _single_node(clip: Path, repository: Path, out: Path) -> list[dict]:
    name, config = load_video_pipeline("faces", repository)
    settings = ServerSettings(repository, "explicit", load_models=tuple(config.models))
    with LocalServer(settings) as local:
        VideoRun(local, name, config, [clip], RunOptions(out=out)).run()
    return [orjson.loads(line) for line in (out / f"{clip.stem}.jsonl").read_bytes().splitlines()]


@pytest.fixture(scope="module")
def reference(
    long_clip: Path, zoo_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> list[dict]:
    """The lines of a single-node run of the clip."""
    return _single_node(long_clip, zoo_repository, tmp_path_factory.mktemp("one-node"))


def _run_driver(tmp: Path, clip: Path, repository: Path, out: Path, *extra: str) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), str(DRIVER.parents[1])])
    command = (
        f"ip link set lo up && exec {sys.executable} {DRIVER} --tmp {tmp} --input {clip} "
        f"--repository {repository} --out {out} --pipeline faces --kill-at 0.3 --chunk-s 6 "
        + " ".join(extra)
    )
    done = subprocess.run(
        ["unshare", "-n", "bash", "-c", command], env=env, capture_output=True, timeout=170
    )
    assert done.returncode == 0, done.stderr.decode()[-10000:]
    return json.loads(done.stdout.decode().strip().splitlines()[-1])


def _same_as(lines: list[dict], reference: list[dict]) -> None:
    assert [line["frame"] for line in lines] == list(range(1500))  # every frame once, in order
    assert len(reference) == 1500
    for mine, theirs in zip(lines, reference, strict=True):
        assert mine["pts_ticks"] == theirs["pts_ticks"]
        assert mine["detections"] == theirs["detections"], mine["frame"]  # boxes and track ids


def test_a_job_survives_a_killed_node(
    tmp_path: Path, long_clip: Path, zoo_repository: Path, reference: list[dict]
) -> None:
    out = tmp_path / "ray.jsonl"
    report = _run_driver(tmp_path / "cluster", long_clip, zoo_repository, out, "--cli")
    lines = [orjson.loads(line) for line in out.read_bytes().splitlines()]

    assert report["workers_lost"] >= 1, report  # the killed node's worker was noticed
    assert report["killed_at_s"] is not None
    assert len(set(report["nodes_by_chunk"])) == 2, report  # both nodes committed chunks
    _same_as(lines, reference)
    assert not (tmp_path / "cluster" / "auth_token").exists()  # the token file was removed
    # then ``frameserve video run --ray`` on what is left of the cluster: the same lines
    assert report["cli"]["rc"] == 0, report["cli"]
    cli = Path(report["cli"]["jsonl"]).read_bytes().splitlines()
    _same_as([orjson.loads(line) for line in cli], reference)


def test_serve_resumes_after_a_coordinator_crash_and_skips_a_node_without_models(
    tmp_path: Path, long_clip: Path, zoo_repository: Path, reference: list[dict]
) -> None:
    """``serve --ray``: the job JSON shows chunks; the server is SIGKILLed at 30% of the
    chunks and started again; the second node has no repository (a tmpfs over its folder);
    the job asks for video, which is encoded in segments across the cluster and joined."""
    repository = tmp_path / "hidden" / "models"
    shutil.copytree(zoo_repository / "faces", repository / "faces")
    out = tmp_path / "served.jsonl"
    report = _run_driver(
        tmp_path / "cluster", long_clip, repository, out, "--serve", "--hide-repository",
        "--video-out",
    )  # fmt: skip
    job = report["job"]
    assert job["state"] == "succeeded", job
    assert job["attempts"] == 2  # the crashed coordinator's execution, then the resumed one
    seen = [c for c in report["chunks_seen"] if c["total"]]
    assert seen and all(c["total"] == seen[0]["total"] for c in seen)
    assert seen[-1]["done"] >= seen[0]["done"]
    assert "resuming, " in report["log"]  # committed chunks were not run again
    assert "lacks faces" in report["log"]  # why the second node took no chunks
    _same_as([orjson.loads(line) for line in out.read_bytes().splitlines()], reference)
    # the encoded output: every frame once, at the input's timestamps, joined from segments
    with av.open(str(long_clip)) as source, av.open(str(out) + ".mp4") as video:
        expected = sorted(p.pts for p in source.demux(video=0) if p.size)
        assert [f.pts for f in video.decode(video=0)] == expected


def test_serve_places_streams_apart_and_moves_them_when_a_node_dies(
    tmp_path: Path, long_clip: Path, zoo_repository: Path
) -> None:
    """``serve --ray``: two live streams (the clip, looped) attached over HTTP are placed on
    the two nodes by load; the second node's raylet is killed; within 15 s the moved stream
    delivers again on the other node (a new SSE subscriber gets its records) and the other
    stream goes on; the moved one's status says where it runs now and why it moved. A placed
    stream's push outputs deliver from the coordinator; its preview is refused with a reason."""
    report = _run_driver(
        tmp_path / "cluster", long_clip, zoo_repository, tmp_path / "unused", "--streams",
        "--serve",
    )  # fmt: skip
    before = report["before"]
    assert len({s["placement"]["node"] for s in before}) == 2, before  # one stream per node
    assert report["again_s"] < 15, report
    moved = report["moved"]
    placement = moved["placement"]
    assert moved["state"] == "running" and placement["moved"] == 1
    assert placement["node"] != next(s for s in before if s["id"] == moved["id"])["placement"][
        "node"]  # fmt: skip
    assert "left the cluster" in placement["moves"][0] or "Error" in placement["moves"][0]
    event = report["event"]
    assert event["stream"] == moved["id"] and "detections" in event
    # push outputs run on the coordinator: the records of a placed stream reach its webhook
    (status,) = report["pushed"]
    assert status["type"] == "webhook" and status["sent"] > 0 and status["failed"] == 0
    body = report["received"][0]
    assert body["stream"] == report["pushed_to"] and "detections" in body["records"][0]
    # previews need the pictures, which stay on the stream's node: a clear refusal, not a 500
    assert report["preview"]["status"] == 400, report["preview"]
    assert "Ray cluster" in report["preview"]["body"]
