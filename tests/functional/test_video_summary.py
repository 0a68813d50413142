"""``GET /v1/jobs/{id}/summary`` through a real ``frameserve serve``: the face clip's summary
as ``video run`` writes it, 409 for a job that did not succeed, 404 for an unknown job."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from video.summary_clips import check_face_summary, write_face_interval_clip

from servers import RunningServer, ServerLauncher

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def server(
    zoo_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    folder = tmp_path_factory.mktemp("summary-api")
    media = folder / "media"
    media.mkdir()
    write_face_interval_clip(media / "face.mp4")
    write_face_interval_clip(media / "long.mp4", 0, 480, 0)
    launcher = ServerLauncher(folder)
    running = launcher.start(
        zoo_repository,
        *("--model-control-mode", "explicit", "--load-model", "faces"),
        *("--media-root", str(media), "--state-dir", str(folder / "state")),
    )
    yield running
    assert running.terminate() == 0, running.log()


def _url(server: RunningServer, path: str) -> str:
    return f"http://{server.http_url}{path}"


def _wait(server: RunningServer, job_id: str) -> dict:
    import time

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        job = requests.get(_url(server, f"/v1/jobs/{job_id}"), timeout=30).json()
        if job["state"] not in ("queued", "running"):
            return dict(job)
        time.sleep(0.1)
    raise TimeoutError(f"job {job_id} did not finish")


def test_a_finished_job_serves_its_summary(server: RunningServer) -> None:
    r = requests.post(
        _url(server, "/v1/jobs"), json={"pipeline": "faces", "input": "face.mp4"}, timeout=30
    )
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    assert _wait(server, job_id)["state"] == "succeeded"
    got = requests.get(_url(server, f"/v1/jobs/{job_id}/summary"), timeout=30)
    assert got.status_code == 200, got.text
    assert got.headers["content-type"] == "application/json"
    check_face_summary(got.json())


def test_summary_of_an_unfinished_or_unknown_job(server: RunningServer) -> None:
    r = requests.post(
        _url(server, "/v1/jobs"), json={"pipeline": "faces", "input": "long.mp4"}, timeout=30
    )
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    cancelled = requests.delete(_url(server, f"/v1/jobs/{job_id}"), timeout=30)
    assert cancelled.status_code == 200, cancelled.text
    assert _wait(server, job_id)["state"] == "cancelled"
    got = requests.get(_url(server, f"/v1/jobs/{job_id}/summary"), timeout=30)
    assert got.status_code == 409, got.text
    assert got.json()["error"] == (
        f"job {job_id}: its summary exists once the job succeeded, it is cancelled"
    )
    missing = requests.get(_url(server, "/v1/jobs/no-such-job/summary"), timeout=30)
    assert missing.status_code == 404 and "no such job" in missing.json()["error"]
