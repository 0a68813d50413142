"""A job across a real 2-node Ray cluster on this machine, one node killed while it runs.

The cluster runs inside a private network namespace (Ray binds wildcard addresses), driven by
``cluster_driver.py``: each node ``--num-cpus 1`` pinned to a core of its own, token
authentication, health checks every 500 ms. At about 30% of the chunks the second node's
raylet is killed; the job must still write every frame exactly once, in order, with the same
boxes and track ids as a single-node run of the same clip.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

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


def _run_driver(tmp: Path, clip: Path, repository: Path, out: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), str(DRIVER.parents[1])])
    command = (
        f"ip link set lo up && exec {sys.executable} {DRIVER} --tmp {tmp} --input {clip} "
        f"--repository {repository} --out {out} --pipeline faces --kill-at 0.3 --chunk-s 6"
    )
    done = subprocess.run(
        ["unshare", "-n", "bash", "-c", command], env=env, capture_output=True, timeout=170
    )
    assert done.returncode == 0, done.stderr.decode()[-4000:]
    return json.loads(done.stdout.decode().strip().splitlines()[-1])


def test_a_job_survives_a_killed_node(
    tmp_path: Path, long_clip: Path, zoo_repository: Path
) -> None:
    out = tmp_path / "ray.jsonl"
    reference: list[dict] = []
    local = threading.Thread(
        target=lambda: reference.extend(_single_node(long_clip, zoo_repository, tmp_path / "one"))
    )
    local.start()  # the single-node reference runs while the cluster starts
    try:
        report = _run_driver(tmp_path / "cluster", long_clip, zoo_repository, out)
    finally:
        local.join()
    lines = [orjson.loads(line) for line in out.read_bytes().splitlines()]

    assert report["workers_lost"] >= 1, report  # the killed node's worker was noticed
    assert report["killed_at_s"] is not None
    assert len(set(report["nodes_by_chunk"])) == 2, report  # both nodes committed chunks
    assert [line["frame"] for line in lines] == list(range(1500))  # every frame once, in order
    assert len(reference) == 1500
    for mine, theirs in zip(lines, reference, strict=True):
        assert mine["pts_ticks"] == theirs["pts_ticks"]
        assert mine["detections"] == theirs["detections"], mine["frame"]  # boxes and track ids
    assert not (tmp_path / "cluster" / "auth_token").exists()  # the token file was removed
