"""The ``enhance`` pipeline as a job of a real ``frameserve serve``: filters in the job's decode
worker, the video encoded in segments and joined with the audio copied, fetched over HTTP."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path

import av
import pytest
import requests
from video.noisy import FRAMES, SIZE, TIME_BASE, NoisyClip, audio, write_noisy_clip

from servers import RunningServer, ServerLauncher

WAIT = 180.0  # seconds before the job counts as hung


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> NoisyClip:
    return write_noisy_clip(tmp_path_factory.mktemp("media") / "noisy.mp4")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, clip: NoisyClip) -> Iterator[RunningServer]:
    folder = tmp_path_factory.mktemp("enhance-job")
    media, repository = clip.path.parent, folder / "models"
    repository.mkdir()  # no model: enhance is filters only
    launcher = ServerLauncher(folder)
    running = launcher.start(
        repository, "--model-control-mode", "explicit", "--media-root", str(media),
        "--state-dir", str(folder / "state"), "--log-format", "text",
    )  # fmt: skip
    yield running
    assert running.terminate() == 0, running.log()


def test_an_enhance_job_writes_the_filtered_video_with_its_audio(
    server: RunningServer, clip: NoisyClip, tmp_path: Path
) -> None:
    base = f"http://{server.http_url}"
    r = requests.post(f"{base}/v1/jobs", json={"pipeline": "enhance", "input": "noisy.mp4"},
                      timeout=30)  # fmt: skip
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    deadline = time.monotonic() + WAIT
    while (job := requests.get(f"{base}/v1/jobs/{job_id}", timeout=30).json())["state"] in (
        "queued",
        "running",
    ):
        assert time.monotonic() < deadline, f"job {job_id} still {job['state']}"
        time.sleep(0.2)
    assert job["state"] == "succeeded", (job, server.log())
    assert job["progress"]["frames_done"] == FRAMES

    out = requests.get(f"{base}/v1/jobs/{job_id}/output", timeout=60)
    assert out.status_code == 200 and out.headers["content-type"] == "video/mp4"
    path = tmp_path / "output.mp4"
    path.write_bytes(out.content)
    with av.open(io.BytesIO(out.content)) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height) == SIZE
        times = [f.pts * f.time_base for f in container.decode(stream)]
    assert times == [p * TIME_BASE for p in clip.pts]
    assert len(times) == FRAMES
    assert audio(path) == audio(clip.path)  # the same packets, the same length
