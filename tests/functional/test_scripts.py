"""The script engine through a real ``frameserve serve``: params per stream, each row's stream,
scripts' results as detections, bad params refused with the script's message.

Models (written here, run by the real Python backend): ``probe`` answers every row with one
full-frame box whose label and score are its stream's params, and logs every call
(configure, the streams of each batch, release) to a file the test reads; ``legacy`` is a
script of the old interface (``process(batch)`` only); ``example-script`` is the zoo's motion
detector, pulled from frameserve's own package. Clips are made with PyAV in the media root.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import requests
from video.media import make_clip

from frameserve.zoo import pull

from repos import python_model
from servers import RunningServer, ServerLauncher

WAIT = 180.0  # seconds before a job or stream counts as hung
NO_REGISTRY = "http://127.0.0.1:9/simple"  # a script model needs no download
FRAMESERVE = Path(sys.executable).parent / "frameserve"

PROBE = """
import json
import threading

import numpy as np

class Model:
    def setup(self, config):
        self.log_path = config["parameters"]["log"]
        self.lock = threading.Lock()
        self.settings = {}

    def _log(self, entry):
        with self.lock, open(self.log_path, "a") as f:
            f.write(json.dumps(entry) + "\\n")

    def configure(self, stream_config):
        params = stream_config["params"]
        score = params.get("score", 0.5)
        if not 0 < score <= 1:
            raise ValueError(f"score must be in (0, 1], got {score}")
        self._log({"call": "configure", "stream": stream_config["stream"], "params": params})
        with self.lock:
            self.settings[stream_config["stream"]] = (params.get("label", "none"), score)

    def release(self, stream):
        self._log({"call": "release", "stream": stream})
        with self.lock:
            self.settings.pop(stream, None)

    def process(self, batch, streams):
        self._log({"call": "process", "streams": streams})
        n = len(batch["image"])
        labels = np.empty((n, 1), dtype=object)
        scores = np.zeros((n, 1), np.float32)
        for i, stream in enumerate(streams):
            with self.lock:
                label, score = self.settings.get(stream, ("unconfigured", 1.0))
            labels[i, 0], scores[i, 0] = label.encode(), score
        boxes = np.tile(np.array([0, 0, 32, 32], np.float32), (n, 1, 1))
        return {"boxes": boxes, "scores": scores, "labels": labels}
"""

LEGACY = """
import numpy as np

def process(batch):
    n = len(batch["image"])
    return {
        "boxes": np.tile(np.array([0, 0, 16, 16], np.float32), (n, 1, 1)),
        "scores": np.full((n, 1), 0.75, np.float32),
        "labels": np.full((n, 1), b"legacy", dtype=object),
    }
"""


def _detector(log: Path | None = None) -> dict[str, Any]:
    """model.yaml of a 32x32 script detector with one box per row."""
    return {
        "max_batch_size": 8,
        "dynamic_batching": {"max_queue_delay_ms": 20},
        "inputs": [{"name": "image", "datatype": "UINT8", "dims": [32, 32, 3]}],
        "outputs": [
            {"name": "boxes", "datatype": "FP32", "dims": [1, 4]},
            {"name": "scores", "datatype": "FP32", "dims": [1]},
            {"name": "labels", "datatype": "BYTES", "dims": [1]},
        ],
        "preprocess": {"resize": {"mode": "stretch", "size": [32, 32]}, "dtype": "UINT8"},
        "postprocess": {
            "task": "script_detections", "boxes": "boxes", "scores": "scores", "labels": "labels"
        },
        "warmup": 0,
        "parameters": {"log": str(log)} if log is not None else {},
    }  # fmt: skip


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("scripts")


@pytest.fixture(scope="module")
def calls(folder: Path) -> Path:
    return folder / "probe-calls.jsonl"


@pytest.fixture(scope="module")
def repo(folder: Path, calls: Path) -> Path:
    repo = folder / "models"
    pull(["example-script"], repo, cache_dir=folder / "empty-cache", index_url=NO_REGISTRY)
    python_model(repo, "probe", PROBE, _detector(calls))
    python_model(repo, "legacy", LEGACY, _detector())
    return repo


@pytest.fixture(scope="module")
def media(folder: Path) -> Path:
    root = folder / "media"
    root.mkdir()
    make_clip(root / "clip.mp4", frames=24, size=(320, 240), fps=24, audio=False)
    return root


@pytest.fixture(scope="module")
def server(repo: Path, media: Path, folder: Path) -> Iterator[RunningServer]:
    launcher = ServerLauncher(folder)
    running = launcher.start(
        repo,
        "--model-control-mode", "explicit", "--load-model", "probe", "--load-model", "legacy",
        "--load-model", "example-script", "--media-root", str(media),
        "--state-dir", str(folder / "state"), "--max-running-jobs", "2", "--log-format", "text",
    )  # fmt: skip
    yield running
    assert running.terminate() == 0, running.log()


def url(server: RunningServer, path: str) -> str:
    return f"http://{server.http_url}{path}"


def wait_for(check: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(f"{what}: not reached after {WAIT}s")


def submit(server: RunningServer, **body: Any) -> str:
    r = requests.post(url(server, "/v1/jobs"), json=body, timeout=60)
    assert r.status_code == 201, r.text
    assert r.json()["params"] == body.get("params")
    return str(r.json()["id"])


def finished_results(server: RunningServer, job_id: str) -> list[dict[str, Any]]:
    def done() -> dict[str, Any] | None:
        record = requests.get(url(server, f"/v1/jobs/{job_id}"), timeout=30).json()
        return record if record["state"] in ("succeeded", "failed", "cancelled") else None

    record = wait_for(done, f"job {job_id}")
    assert record["state"] == "succeeded", record
    r = requests.get(url(server, f"/v1/jobs/{job_id}/results"), timeout=60)
    return [json.loads(line) for line in r.text.splitlines()]


def logged(calls: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in calls.read_text().splitlines()]


def check_stream_calls(entries: list[dict[str, Any]], stream: str, rows: int) -> None:
    """``stream`` was configured exactly once, before its first row; released after its last."""
    at = [i for i, e in enumerate(entries) if e["call"] == "configure" and e["stream"] == stream]
    assert len(at) == 1, (stream, at)
    seen = [i for i, e in enumerate(entries) if e["call"] == "process" and stream in e["streams"]]
    assert sum(e["streams"].count(stream) for e in entries if e["call"] == "process") == rows
    assert at[0] < seen[0]
    released = [i for i, e in enumerate(entries) if e == {"call": "release", "stream": stream}]
    assert len(released) == 1 and released[0] > seen[-1]


def test_two_jobs_each_get_their_own_params(server: RunningServer, calls: Path) -> None:
    a = submit(server, pipeline="probe", input="clip.mp4", params={"label": "a", "score": 0.9})
    b = submit(server, pipeline="probe", input="clip.mp4", params={"label": "b", "score": 0.4})
    for job_id, label, score in ((a, "a", 0.9), (b, "b", 0.4)):
        lines = finished_results(server, job_id)
        assert len(lines) == 24
        for line in lines:  # one full-frame box per frame, with this job's params
            [det] = line["detections"]
            assert (det["label"], det["score"]) == (label, pytest.approx(score, abs=1e-4))
            assert det["box"] == [0.0, 0.0, 320.0, 240.0]
    entries = logged(calls)
    for job_id in (a, b):
        check_stream_calls(entries, f"job-{job_id}-0", 24)
    # each job's params were also checked at submit, on a stream that got no frames
    checks = [e for e in entries if e["call"] == "configure" and e["stream"].startswith("check-")]
    assert sorted(e["params"]["label"] for e in checks) == ["a", "b"]
    rows = [s for e in entries if e["call"] == "process" for s in e["streams"]]
    assert not any(s is not None and s.startswith("check-") for s in rows)


def test_params_the_script_refuses_are_400_with_its_message(server: RunningServer) -> None:
    body = {"pipeline": "probe", "input": "clip.mp4", "params": {"score": 7}}
    r = requests.post(url(server, "/v1/jobs"), json=body, timeout=60)
    assert r.status_code == 400, r.text
    assert "score must be in (0, 1], got 7" in r.text and "probe" in r.text
    body = {"source": "clip.mp4", "pipeline": "probe", "params": {"score": 0}}
    r = requests.post(url(server, "/v1/streams"), json=body, timeout=60)
    assert r.status_code == 400, r.text
    assert "score must be in (0, 1], got 0" in r.text
    assert requests.get(url(server, "/v1/streams"), timeout=30).json()["streams"] == []
    # not a JSON object at all: refused by the spec, naming the field
    body = {"pipeline": "probe", "input": "clip.mp4", "params": [1, 2]}
    r = requests.post(url(server, "/v1/jobs"), json=body, timeout=60)
    assert r.status_code == 400 and "params" in r.text, r.text
    # the zoo example's own checks
    body = {"pipeline": "example-script", "input": "clip.mp4", "params": {"threshold": 300}}
    r = requests.post(url(server, "/v1/jobs"), json=body, timeout=60)
    assert r.status_code == 400 and "threshold: expected 0..255, got 300" in r.text, r.text


def test_a_script_of_the_old_interface_still_runs(server: RunningServer) -> None:
    body = {"pipeline": "legacy", "input": "clip.mp4", "params": {"goes": "nowhere"}}
    r = requests.post(url(server, "/v1/jobs"), json=body, timeout=60)
    assert r.status_code == 400, r.text
    assert "pipeline legacy runs no script model that takes per-stream params" in r.text
    job_id = submit(server, pipeline="legacy", input="clip.mp4")
    lines = finished_results(server, job_id)
    assert len(lines) == 24
    assert all(line["detections"][0]["label"] == "legacy" for line in lines)
    assert lines[0]["detections"][0]["box"] == [0.0, 0.0, 160.0, 120.0]  # 16/32 of 320x240


def test_example_script_sees_motion_by_each_streams_threshold(server: RunningServer) -> None:
    low = submit(
        server, pipeline="example-script", input="clip.mp4",
        params={"threshold": 4, "label": "moving"},
    )  # fmt: skip
    high = submit(server, pipeline="example-script", input="clip.mp4", params={"threshold": 255})
    moving = finished_results(server, low)
    assert moving[0]["detections"] == []  # a stream's first frame has nothing to compare with
    later = [d for line in moving[1:] for d in line["detections"]]
    assert len(later) >= 10 and {d["label"] for d in later} == {"moving"}
    assert all(d["box"][2] <= 320 and d["box"][3] <= 240 for d in later)
    still = finished_results(server, high)
    assert all(line["detections"] == [] for line in still)  # no change exceeds 255


def sse_results(server: RunningServer, stream_id: str, count: int) -> list[dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=60)
    try:
        conn.request("GET", f"/v1/streams/{stream_id}/events")
        response = conn.getresponse()
        assert response.status == 200
        records: list[dict[str, Any]] = []
        while len(records) < count:
            line = response.fp.readline().decode()
            if not line:
                break
            if line.startswith("data: "):
                records.append(json.loads(line[len("data: ") :]))
        return records
    finally:
        conn.close()


def test_a_live_stream_gets_its_params(server: RunningServer, calls: Path) -> None:
    body = {"source": "clip.mp4", "pipeline": "probe", "params": {"label": "live"}, "loop": True}
    r = requests.post(url(server, "/v1/streams"), json=body, timeout=60)
    assert r.status_code == 201, r.text
    stream_id = r.json()["id"]
    records = sse_results(server, stream_id, 3)
    assert len(records) == 3
    assert all(rec["detections"][0]["label"] == "live" for rec in records), records
    r = requests.delete(url(server, f"/v1/streams/{stream_id}"), timeout=60)
    assert r.status_code == 200, r.text
    key = f"live-{stream_id}-0"
    wait_for(lambda: {"call": "release", "stream": key} in logged(calls), "release")
    entries = logged(calls)
    configured = [e for e in entries if e["call"] == "configure" and e["stream"] == key]
    assert [e["params"] for e in configured] == [{"label": "live"}]
    first_row = next(
        i for i, e in enumerate(entries) if e["call"] == "process" and key in e["streams"]
    )
    assert entries.index(configured[0]) < first_row


# -- video run --params ---------------------------------------------------------------------


def video_run(repo: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    command = [str(FRAMESERVE), "video", "run", "--repository", str(repo), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)


def test_video_run_params_and_the_scripts_stages_in_the_profile(
    repo: Path, media: Path, tmp_path: Path
) -> None:
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"threshold": 4, "label": "moving"}))
    out = tmp_path / "out"
    done = video_run(
        repo, media / "clip.mp4", "--pipeline", "example-script", "--params", f"@{params}",
        "--profile", "--out", out,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in (out / "clip.jsonl").read_text().splitlines()]
    labels = {d["label"] for line in lines for d in line["detections"]}
    assert labels == {"moving"}
    summary = json.loads(done.stdout)
    stages = summary["script_stages"]
    assert set(stages) == {"example-script: diff", "example-script: regions"}
    assert all(seconds > 0 for seconds in stages.values())
    assert "example-script: regions" in done.stderr  # the terminal's profile table
    # without --profile the script is not asked for its stages
    done = video_run(repo, media / "clip.mp4", "--pipeline", "example-script", "--out", out)
    assert done.returncode == 0, done.stderr
    assert "example-script: diff" not in done.stderr


def test_video_run_configures_each_input_once(
    repo: Path, media: Path, calls: Path, tmp_path: Path
) -> None:
    done = video_run(
        repo, media / "clip.mp4", media / "clip.mp4", "--pipeline", "probe",
        "--params", '{"label": "cli", "score": 0.6}', "--out", tmp_path / "out",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    for stem in ("clip", "clip-2"):
        lines = (tmp_path / "out" / f"{stem}.jsonl").read_text().splitlines()
        assert {json.loads(line)["detections"][0]["label"] for line in lines} == {"cli"}
    entries = logged(calls)
    for key in ("video-0", "video-1"):  # the run's inputs are streams 0 and 1
        check_stream_calls(entries, key, 24)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ('{"threshold": 999}', "params: model example-script refused them"),
        ('{"threshold": 999}', "threshold: expected 0..255, got 999"),
        ("[1]", "--params: expected a JSON object, got list"),
        ("{nope", "--params: expected a JSON object, not valid JSON"),
        ("@/no/such/file.json", "--params @/no/such/file.json: cannot read the file"),
    ],
)
def test_video_run_bad_params_are_a_clear_error(
    repo: Path, media: Path, tmp_path: Path, params: str, message: str
) -> None:
    done = video_run(
        repo, media / "clip.mp4", "--pipeline", "example-script", "--params", params,
        "--out", tmp_path / "out",
    )  # fmt: skip
    assert done.returncode == 1
    assert message in done.stderr, done.stderr


def test_predict_is_an_online_row_of_no_stream(server: RunningServer) -> None:
    image = np.full((60, 80, 3), 128, np.uint8)
    ok, png = cv2.imencode(".png", image)
    assert ok
    headers = {"Content-Type": "image/png"}
    r = requests.post(url(server, "/v1/models/probe/predict"), data=png.tobytes(),
                      headers=headers, timeout=60)  # fmt: skip
    assert r.status_code == 200, r.text
    [det] = r.json()["detections"]
    assert det["label"] == "unconfigured" and det["box"] == [0.0, 0.0, 80.0, 60.0]
    r = requests.post(url(server, "/v1/models/example-script/predict"), data=png.tobytes(),
                      headers=headers, timeout=60)  # fmt: skip
    assert r.status_code == 200 and r.json() == {"detections": []}, r.text


def test_script_detections_are_tracked_and_drawn(repo: Path, media: Path, tmp_path: Path) -> None:
    pipeline = tmp_path / "probe-tracked.yaml"
    pipeline.write_text("steps:\n  - model: probe\ntrack: {}\n")
    out = tmp_path / "out"
    done = video_run(
        repo, media / "clip.mp4", "--pipeline", pipeline, "--params", '{"label": "t"}',
        "--video-out", "--out", out,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in (out / "clip.jsonl").read_text().splitlines()]
    ids = {line["detections"][0]["track_id"] for line in lines}
    assert len(ids) == 1  # one box in the same place on every frame: one track
    assert (out / "clip.mp4").stat().st_size > 0
