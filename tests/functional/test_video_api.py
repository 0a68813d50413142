"""Video jobs and live streams through a real ``frameserve serve`` (HTTP, SSE and gRPC).

The server runs the zoo ``faces`` model over clips the tests write with PyAV into its media
root. Jobs are submitted as JSON and as uploads, watched, cancelled, deleted; a server is
killed with SIGKILL mid-job and restarted on the same state dir, and the job's results must
hold every frame exactly once, in order, equal to an uninterrupted run's. Live streams play a
media-root file at its real rate; their records arrive over Server-Sent Events and gRPC.
Limits are generous hang detectors: nothing here asserts a speed.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from video.media import make_clip, write_not_a_video

from frameserve.api.grpc.generated import video_streams_pb2 as vpb
from frameserve.api.grpc.generated import video_streams_pb2_grpc as vgrpc
from frameserve.video.summary import summarize

from servers import RunningServer, ServerLauncher

WAIT = 180.0  # seconds before a job or stream counts as hung
CLIP_FRAMES = 72


def _server_args(media: Path, state: Path, *extra: str) -> list[str]:
    return [
        "--model-control-mode", "explicit", "--load-model", "faces",
        "--media-root", str(media), "--state-dir", str(state),
        "--checkpoint-interval", "0", "--max-upload-mb", "1", "--max-streams", "3",
        "--max-queued-jobs", "4", "--log-format", "text",
        # the test sources listen on loopback, which the source policy refuses by default
        "--allow-network", "127.0.0.0/8", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("media")
    make_clip(root / "clip.mp4", frames=CLIP_FRAMES, size=(320, 240), gop=8, fps=24)
    make_clip(root / "long.mp4", frames=360, size=(320, 240), gop=12, fps=24, audio=False)
    write_not_a_video(root / "still.mp4", "png")
    (root / "sub").mkdir()
    outside = tmp_path_factory.mktemp("outside")
    make_clip(outside / "secret.mp4", frames=4, size=(160, 120), audio=False)
    (root / "escape.mp4").symlink_to(outside / "secret.mp4")
    return root


@pytest.fixture(scope="module")
def server(
    zoo_repository: Path, media: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    folder = tmp_path_factory.mktemp("video-api")
    launcher = ServerLauncher(folder)
    running = launcher.start(zoo_repository, *_server_args(media, folder / "state"))
    yield running
    assert running.terminate() == 0, running.log()


def url(server: RunningServer, path: str) -> str:
    return f"http://{server.http_url}{path}"


def submit(server: RunningServer, **body: Any) -> requests.Response:
    return requests.post(url(server, "/v1/jobs"), json=body, timeout=30)


def wait_for(check: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(f"{what}: not reached after {timeout}s")


def job(server: RunningServer, job_id: str) -> dict[str, Any]:
    r = requests.get(url(server, f"/v1/jobs/{job_id}"), timeout=30)
    assert r.status_code == 200, r.text
    return dict(r.json())


def finished(server: RunningServer, job_id: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        j = job(server, job_id)
        return j if j["state"] in ("succeeded", "failed", "cancelled") else None

    return dict(wait_for(done, f"job {job_id} to finish"))


def results(server: RunningServer, job_id: str) -> list[dict[str, Any]]:
    r = requests.get(url(server, f"/v1/jobs/{job_id}/results"), timeout=60)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in r.text.splitlines()]


# -- jobs ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference(server: RunningServer) -> list[dict[str, Any]]:
    """The long clip's results from one uninterrupted job."""
    r = submit(server, pipeline="faces", input="long.mp4")
    assert r.status_code == 201, r.text
    done = finished(server, r.json()["id"])
    assert done["state"] == "succeeded", done
    return results(server, done["id"])


def test_a_job_runs_to_the_end_with_progress_and_every_frame(server: RunningServer) -> None:
    r = submit(server, pipeline="faces", input="clip.mp4", sample="all")
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["state"] == "queued" and r.headers["location"] == f"/v1/jobs/{created['id']}"
    assert created["owner"] is None  # no --api-key-file: nobody's, everyone sees it
    done = finished(server, created["id"])
    assert done["state"] == "succeeded" and done["error"] is None
    assert done["progress"]["frames_done"] == done["progress"]["frames_total"] == CLIP_FRAMES
    lines = results(server, created["id"])
    assert [line["frame"] for line in lines] == list(range(CLIP_FRAMES))
    assert sum(len(line["detections"]) for line in lines) >= CLIP_FRAMES // 2  # the face
    listed = requests.get(url(server, "/v1/jobs?state=succeeded"), timeout=30).json()["jobs"]
    assert created["id"] in [j["id"] for j in listed]
    assert all(j["state"] == "succeeded" for j in listed)


def test_sampling_and_video_output(server: RunningServer) -> None:
    r = submit(server, pipeline="faces", input="clip.mp4", sample="every:3", video_out=True)
    assert r.status_code == 201, r.text
    done = finished(server, r.json()["id"])
    assert done["state"] == "succeeded", done
    assert [line["frame"] for line in results(server, done["id"])] == list(range(0, CLIP_FRAMES, 3))
    kept = len(range(0, CLIP_FRAMES, 3))
    assert done["progress"]["frames_done"] == done["progress"]["frames_total"] == kept
    out = requests.get(url(server, f"/v1/jobs/{done['id']}/output"), timeout=60)
    assert out.status_code == 200 and out.headers["content-type"] == "video/mp4"
    assert out.content[4:8] == b"ftyp"


def test_upload_runs_and_an_upload_over_the_limit_is_413(
    server: RunningServer, media: Path
) -> None:
    data = (media / "clip.mp4").read_bytes()
    assert len(data) < 2**20, "the clip must fit the 1 MiB test limit"
    r = requests.post(
        url(server, "/v1/jobs"),
        data={"pipeline": "faces", "sample": "every:8"},
        files={"file": ("my clip.mp4", data, "video/mp4")},
        timeout=60,
    )
    assert r.status_code == 201, r.text
    done = finished(server, r.json()["id"])
    assert done["state"] == "succeeded", done
    assert len(results(server, done["id"])) == CLIP_FRAMES // 8
    big = requests.post(
        url(server, "/v1/jobs"),
        data={"pipeline": "faces"},
        files={"file": ("big.mp4", b"\0" * (2**20 + 4096), "video/mp4")},
        timeout=60,
    )
    assert big.status_code == 413, big.text
    assert "limit" in big.json()["error"]


def test_cancel_a_running_job_then_delete_it(server: RunningServer) -> None:
    r = submit(server, pipeline="faces", input="long.mp4")
    job_id = r.json()["id"]
    wait_for(lambda: job(server, job_id)["progress"]["frames_done"] > 0, "the job to start")
    cancelled = requests.delete(url(server, f"/v1/jobs/{job_id}"), timeout=30)
    assert cancelled.status_code == 200, cancelled.text
    assert finished(server, job_id)["state"] == "cancelled"
    removed = requests.delete(url(server, f"/v1/jobs/{job_id}"), timeout=30)
    assert removed.status_code == 200, removed.text
    assert requests.get(url(server, f"/v1/jobs/{job_id}"), timeout=30).status_code == 404


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"pipeline": "faces", "input": "../clip.mp4"}, "'..'"),
        ({"pipeline": "faces", "input": "/etc/passwd"}, "absolute"),
        ({"pipeline": "faces", "input": "escape.mp4"}, "outside the media root"),
        ({"pipeline": "faces", "input": "missing.mp4"}, "no such file"),
        ({"pipeline": "faces", "input": "sub"}, "not a file"),
        ({"pipeline": "no-such-pipeline", "input": "clip.mp4"}, "pipeline"),
        ({"pipeline": "faces", "input": "clip.mp4", "sample": "often"}, "sample"),
        ({"pipeline": "faces", "input": "clip.mp4", "colour": "red"}, "colour"),
        ({"pipeline": "faces"}, "input"),
    ],
)
def test_bad_job_requests_are_400_and_name_the_problem(
    server: RunningServer, body: dict[str, Any], expected: str
) -> None:
    r = submit(server, **body)
    assert r.status_code == 400, r.text
    assert expected in r.json()["error"]


def test_bad_json_and_unknown_ids(server: RunningServer) -> None:
    r = requests.post(
        url(server, "/v1/jobs"), data=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400 and "JSON" in r.json()["error"]
    assert requests.get(url(server, "/v1/jobs/deadbeef"), timeout=30).status_code == 404
    assert requests.get(url(server, "/v1/jobs?state=dancing"), timeout=30).status_code == 400
    assert requests.get(url(server, "/v1/jobs/bad%20id"), timeout=30).status_code == 400


def test_a_file_that_is_not_a_video_fails_the_job_and_the_server_goes_on(
    server: RunningServer,
) -> None:
    r = submit(server, pipeline="faces", input="still.mp4")
    assert r.status_code == 201, r.text
    done = finished(server, r.json()["id"])
    assert done["state"] == "failed"
    assert "still.mp4" in done["error"]
    after = submit(server, pipeline="faces", input="clip.mp4", sample="every:24")
    assert finished(server, after.json()["id"])["state"] == "succeeded"


def test_sigkill_mid_job_then_restart_resumes_with_every_frame_once(
    zoo_repository: Path,
    media: Path,
    tmp_path: Path,
    reference: list[dict[str, Any]],
) -> None:
    launcher = ServerLauncher(tmp_path)
    state = tmp_path / "state"
    try:
        first = launcher.start(zoo_repository, *_server_args(media, state))
        job_id = submit(first, pipeline="faces", input="long.mp4").json()["id"]
        wait_for(lambda: job(first, job_id)["progress"]["frames_done"] >= 60, "60 frames done")
        assert job(first, job_id)["state"] == "running"
        first.proc.kill()  # SIGKILL: no drain, no checkpoint on the way out
        first.proc.wait(30)
        second = launcher.start(zoo_repository, *_server_args(media, state))
        done = finished(second, job_id)
        assert done["state"] == "succeeded", done
        lines = results(second, job_id)
        summary = requests.get(url(second, f"/v1/jobs/{job_id}/summary"), timeout=30).json()
    finally:
        launcher.stop_all()
    assert [line["frame"] for line in lines] == [line["frame"] for line in reference]
    for got, want in zip(lines, reference, strict=True):
        assert got["pts_ticks"] == want["pts_ticks"]
        assert len(got["detections"]) == len(want["detections"])
    # The summary covers the lines of both executions, as an uninterrupted run's does (track
    # ids restart after a resume, so only the per-label counts and ranges must agree).
    want = summarize([("reference", line) for line in reference], pipeline="faces")
    assert summary["frames"] == want["frames"] == len(reference)
    for key in ("count", "frames", "first_seen", "last_seen", "ranges"):
        assert (
            summary["detections"]["labels"]["face"][key]
            == want["detections"]["labels"]["face"][key]
        )


def decode_workers(server: RunningServer) -> list[int]:
    """PIDs of the server's decode worker processes (children started by ``spawn``)."""
    pids: list[int] = []
    for task in Path(f"/proc/{server.proc.pid}/task").iterdir():
        try:
            pids += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue  # the thread ended meanwhile
    workers = []
    for pid in pids:
        try:
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                workers.append(pid)
        except OSError:
            continue
    return workers


def test_a_decode_worker_that_crashes_fails_only_its_job(
    zoo_repository: Path, media: Path, tmp_path: Path
) -> None:
    """SIGSEGV in the process that decodes a job (as a crash inside FFmpeg would): the server
    stays ready, the job beside it goes on, the crashed job resumes from its checkpoint with
    every frame once; crashing again past ``--max-job-retries`` fails it with the reason."""
    make_clip(media / "crash.mp4", frames=1200, size=(320, 240), gop=12, fps=24, audio=False)
    launcher = ServerLauncher(tmp_path)
    args = _server_args(media, tmp_path / "state", "--max-running-jobs", "2",
                        "--max-job-retries", "1")  # fmt: skip
    try:
        running = launcher.start(zoo_repository, *args)
        crashing = submit(running, pipeline="faces", input="crash.mp4").json()["id"]
        wait_for(lambda: job(running, crashing)["progress"]["frames_done"] >= 24, "24 frames")
        [pid] = decode_workers(running)  # the only job running
        beside = submit(running, pipeline="faces", input="clip.mp4").json()["id"]
        os.kill(pid, signal.SIGSEGV)
        assert finished(running, beside)["state"] == "succeeded"
        done = finished(running, crashing)
        assert done["state"] == "succeeded" and done["attempts"] == 2, done
        assert running.get("/v2/health/ready")[0] == 200
        lines = results(running, crashing)
        assert [line["frame"] for line in lines] == list(range(1200))  # each frame once

        again = submit(running, pipeline="faces", input="crash.mp4").json()["id"]
        killed: list[int] = []
        done = 0
        for attempt in (1, 2):
            # progress past the last kill: this attempt's decode worker runs (its probe ended)
            floor = done + 24
            wait_for(lambda: job(running, again)["progress"]["frames_done"] >= floor,  # noqa: B023
                     f"attempt {attempt} to decode")  # fmt: skip
            [pid] = wait_for(lambda: [p for p in decode_workers(running) if p not in killed],
                             f"worker of attempt {attempt}")  # fmt: skip
            done = job(running, again)["progress"]["frames_done"]
            os.kill(pid, signal.SIGSEGV)
            killed.append(pid)
        failed = finished(running, again)
        assert failed["state"] == "failed" and failed["attempts"] == 2, failed
        assert "SIGSEGV" in failed["error"] and "crash.mp4" in failed["error"], failed["error"]
        assert running.get("/v2/health/ready")[0] == 200
        after = submit(running, pipeline="faces", input="clip.mp4").json()["id"]
        assert finished(running, after)["state"] == "succeeded"
    finally:
        launcher.stop_all()


# -- live streams -------------------------------------------------------------------------


def attach(server: RunningServer, **body: Any) -> requests.Response:
    return requests.post(url(server, "/v1/streams"), json=body, timeout=30)


def stream_status(server: RunningServer, stream_id: str) -> dict[str, Any]:
    r = requests.get(url(server, f"/v1/streams/{stream_id}"), timeout=30)
    assert r.status_code == 200, r.text
    return dict(r.json())


def sse_events(server: RunningServer, stream_id: str, count: int) -> list[tuple[str, Any]]:
    """The first ``count`` events of a stream's Server-Sent Events."""
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=60)
    try:
        conn.request("GET", f"/v1/streams/{stream_id}/events")
        response = conn.getresponse()
        assert response.status == 200
        assert response.getheader("content-type", "").startswith("text/event-stream")
        events: list[tuple[str, Any]] = []
        name = "message"
        while len(events) < count:
            raw = response.fp.readline()
            if not raw:
                break
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[len("data: ") :])))
                name = "message"
        return events
    finally:
        conn.close()


def test_a_live_stream_pushes_records_over_sse_and_grpc(server: RunningServer) -> None:
    r = attach(server, source="clip.mp4", pipeline="faces", loop=True, max_inflight=2)
    assert r.status_code == 201, r.text
    stream_id = r.json()["id"]
    try:
        events = sse_events(server, stream_id, 5)
        assert [name for name, _ in events] == ["result"] * 5
        for _, record in events:
            assert record["stream"] == stream_id
            assert {"frame", "pts", "detections", "lag_ms"} <= set(record)
        with grpc.insecure_channel(server.grpc_url) as channel:
            stub = vgrpc.VideoStreamsStub(channel)
            call = stub.Subscribe(vpb.SubscribeRequest(stream_id=stream_id), timeout=60)
            got = []
            for event in call:
                got.append(event)
                if len(got) == 3:
                    call.cancel()
                    break
            assert all(e.stream_id == stream_id for e in got)
            assert json.loads(got[0].record_json)["frame"] == got[0].frame
            listed = stub.ListStreams(vpb.ListStreamsRequest(), timeout=30)
            assert stream_id in [json.loads(s)["id"] for s in listed.stream_json]
        status = stream_status(server, stream_id)
        assert status["state"] == "running" and status["frames_out"] > 0
        assert status["fps_in"] > 0
        metrics = requests.get(url(server, "/metrics"), timeout=30).text
        assert f'frameserve_stream_frames_out_total{{pipeline="faces",stream="{stream_id}"}}' in (
            metrics
        )
        assert 'frameserve_jobs{state="succeeded"}' in metrics
        lag = {
            s.name: s.value
            for family in text_string_to_metric_families(metrics)
            if family.name == "frameserve_stream_result_lag_seconds"
            for s in family.samples
            if s.labels.get("stream") == stream_id
        }
        # the histogram counts every record published so far; the status was read before
        assert lag["frameserve_stream_result_lag_seconds_count"] >= status["frames_out"] > 0
        assert lag["frameserve_stream_result_lag_seconds_sum"] > 0
    finally:
        gone = requests.delete(url(server, f"/v1/streams/{stream_id}"), timeout=60)
    assert gone.status_code == 200 and gone.json()["state"] == "stopped"
    assert requests.get(url(server, f"/v1/streams/{stream_id}"), timeout=30).status_code == 404


def test_sse_ends_when_the_stream_is_detached(server: RunningServer) -> None:
    stream_id = attach(server, source="long.mp4", pipeline="faces").json()["id"]
    with requests.get(url(server, f"/v1/streams/{stream_id}/events"), stream=True, timeout=60) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        wait_for(lambda: next(lines) == b"event: result", "a first record")
        assert requests.delete(url(server, f"/v1/streams/{stream_id}"), timeout=60).ok
        rest = list(lines)  # the server ends the response after the end event
    assert b"event: end" in rest


def test_unreachable_sources_retry_and_limits_answer_429(server: RunningServer) -> None:
    from servers import free_port

    source = f"tcp://127.0.0.1:{free_port()}"
    r = attach(server, source=source, pipeline="faces")
    assert r.status_code == 201, r.text
    stream_id = r.json()["id"]
    try:
        status = wait_for(
            lambda: (s := stream_status(server, stream_id))["state"] == "retrying" and s,
            "the stream to retry",
        )
        assert status["last_error"]
        extra = [attach(server, source=source, pipeline="faces") for _ in range(3)]
        assert [e.status_code for e in extra].count(429) >= 1
        for e in extra:
            if e.status_code == 201:
                requests.delete(url(server, f"/v1/streams/{e.json()['id']}"), timeout=60)
    finally:
        requests.delete(url(server, f"/v1/streams/{stream_id}"), timeout=60)


def test_a_live_stream_whose_worker_crashes_retries_and_goes_on(server: RunningServer) -> None:
    """SIGSEGV in the process that decodes a live stream: that stream goes to ``retrying`` with
    the reason, then runs again on a new worker with frame numbers still increasing; the stream
    beside it and the server go on."""
    beside = attach(server, source="clip.mp4", pipeline="faces", loop=True).json()["id"]
    crashing = ""
    try:
        wait_for(lambda: stream_status(server, beside)["frames_out"] > 0, "the stream beside")
        before = set(decode_workers(server))
        crashing = attach(server, source="long.mp4", pipeline="faces", loop=True).json()["id"]
        wait_for(lambda: stream_status(server, crashing)["frames_out"] >= 5, "5 records")
        [pid] = wait_for(lambda: list(set(decode_workers(server)) - before), "its worker")
        [(_, last)] = sse_events(server, crashing, 1)
        beside_out = stream_status(server, beside)["frames_out"]
        os.kill(pid, signal.SIGSEGV)
        seen: set[str] = set()

        def back_running() -> dict[str, Any] | None:
            status = stream_status(server, crashing)
            seen.add(status["state"])
            return status if status["state"] == "running" and status["reconnects"] else None

        status = wait_for(back_running, "the stream to run again")
        assert "retrying" in seen, seen
        assert "SIGSEGV" in status["last_error"] and "long.mp4" in status["last_error"], status
        [(_, after)] = sse_events(server, crashing, 1)
        assert after["frame"] > last["frame"] and after["pts"] > last["pts"], (last, after)
        assert pid not in decode_workers(server)
        assert server.get("/v2/health/ready")[0] == 200
        wait_for(lambda: stream_status(server, beside)["frames_out"] > beside_out + 10, "beside")
        assert stream_status(server, beside)["state"] == "running"
    finally:
        for stream_id in (beside, crashing):
            if stream_id:
                requests.delete(url(server, f"/v1/streams/{stream_id}"), timeout=60)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"source": "../clip.mp4", "pipeline": "faces"}, "'..'"),
        ({"source": "escape.mp4", "pipeline": "faces"}, "outside the media root"),
        ({"source": "file:///etc/passwd", "pipeline": "faces"}, "file"),
        ({"source": "clip.mp4", "pipeline": "nope"}, "pipeline"),
        ({"source": "clip.mp4", "pipeline": "faces", "max_fps": 0}, "max_fps"),
        ({"source": "clip.mp4", "pipeline": "faces", "max_inflight": 0}, "max_inflight"),
    ],
)
def test_bad_stream_requests_are_400(
    server: RunningServer, body: dict[str, Any], expected: str
) -> None:
    r = attach(server, **body)
    assert r.status_code == 400, r.text
    assert expected in r.json()["error"]
    assert requests.get(url(server, "/v1/streams/nope"), timeout=30).status_code == 404


def test_the_server_drains_with_a_stream_attached(
    zoo_repository: Path, media: Path, tmp_path: Path
) -> None:
    launcher = ServerLauncher(tmp_path)
    running = launcher.start(zoo_repository, *_server_args(media, tmp_path / "state"))
    try:
        attach(running, source="clip.mp4", pipeline="faces", loop=True)
        job_id = submit(running, pipeline="faces", input="long.mp4").json()["id"]
        wait_for(lambda: job(running, job_id)["progress"]["frames_done"] > 0, "the job to run")
    finally:
        code = running.terminate()
    assert code == 0, running.log()
    assert os.path.exists(tmp_path / "state")
