"""Push outputs through a real ``frameserve serve``: jobs and live streams that push to a real
HTTP receiver and a real Mosquitto broker on loopback (``tests/video/push/targets.py``).

The server allows loopback destinations for 127.0.0.1 only (``--allow-network 127.0.0.1/32``),
so the receivers are reachable and another loopback address (127.0.0.2) shows the default
refusal. Checked: a job's webhook and MQTT outputs get one ``job.finished`` with the job's
counts (signed), a failing job posts ``job.failed``, a stream's records arrive batched over the
webhook and one per message over MQTT, and push targets that are down leave the stream running
while their losses are counted in its status and in /metrics. Counters, never wall time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from video.media import make_clip, write_not_a_video
from video.push.targets import (
    NO_MOSQUITTO,
    Broker,
    Receiver,
    Subscriber,
    closed_port,
    have_mosquitto,
    verify,
    wait_for,
)

from servers import RunningServer, ServerLauncher

CLIP_FRAMES = 24
SECRET = "functional-test-secret"
WAIT = 120.0  # a hang detector


@pytest.fixture(scope="module")
def server(
    zoo_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    folder = tmp_path_factory.mktemp("push")
    media = folder / "media"
    media.mkdir()
    make_clip(media / "clip.mp4", frames=CLIP_FRAMES, size=(320, 240), gop=8, fps=24, audio=False)
    write_not_a_video(media / "still.mp4", "png")
    launcher = ServerLauncher(folder)
    running = launcher.start(
        zoo_repository,
        "--model-control-mode", "explicit", "--load-model", "faces",
        "--media-root", str(media), "--state-dir", str(folder / "state"),
        "--max-streams", "4", "--log-format", "text", "--checkpoint-interval", "0",
        "--allow-network", "127.0.0.1/32",
    )  # fmt: skip
    yield running
    assert running.terminate() == 0, running.log()
    assert SECRET not in running.log()  # never logged
    assert "hunter2" not in running.log()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    running = Receiver().start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    if not have_mosquitto():
        pytest.skip(NO_MOSQUITTO)
    running = Broker(tmp_path_factory.mktemp("mosquitto")).start()
    yield running
    running.stop()


def url(server: RunningServer, path: str) -> str:
    return f"http://{server.http_url}{path}"


def post(server: RunningServer, path: str, body: dict[str, Any]) -> requests.Response:
    return requests.post(url(server, path), json=body, timeout=30)


def get(server: RunningServer, path: str) -> dict[str, Any]:
    r = requests.get(url(server, path), timeout=30)
    assert r.status_code == 200, r.text
    return dict(r.json())


def metric(server: RunningServer, name: str, **labels: str) -> float:
    text = requests.get(url(server, "/metrics"), timeout=30).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                return float(sample.value)
    return 0.0


def test_a_job_pushes_one_signed_job_finished_with_its_counts(
    server: RunningServer, receiver: Receiver, broker: Broker
) -> None:
    subscriber = Subscriber(broker.port, "jobs/done")
    try:
        push = [
            {"type": "webhook", "url": receiver.url("/jobs"), "secret": SECRET},
            {"type": "mqtt", "url": broker.url("jobs/done"), "qos": 1},
        ]
        r = post(server, "/v1/jobs", {"pipeline": "faces", "input": "clip.mp4", "push": push})
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
        assert [p["type"] for p in r.json()["push"]] == ["webhook", "mqtt"]
        assert SECRET not in r.text

        def finished_post() -> Any:
            mine = [p for p in receiver.events("job.finished") if p.json()["job"]["id"] == job_id]
            return mine if mine and subscriber.messages else None

        (hook,) = wait_for(finished_post, "job.finished over the webhook and MQTT", WAIT)
        body = hook.json()
        assert hook.path == "/jobs" and verify(SECRET, hook.headers, hook.body)
        assert body["job"]["state"] == "succeeded"
        progress = body["job"]["progress"]
        assert progress["frames_done"] == progress["frames_total"] == CLIP_FRAMES
        assert body["links"]["results"] == f"/v1/jobs/{job_id}/results"
        (message,) = subscriber.payloads()
        assert message["event"] == "job.finished" and message["job"]["id"] == job_id
        job = wait_for(
            lambda: (j := get(server, f"/v1/jobs/{job_id}"))["push"][1]["sent"] == 1 and j,
            "the job's push status",
        )
        for status in job["push"]:
            assert status["sent"] == 1 and status["failed"] == status["dropped"] == 0, job
        assert job["push"][0]["url"] == receiver.url("/jobs")
        # once per completion: nothing more arrives for this job
        assert len([p for p in receiver.posts if job_id in p.body.decode()]) == 1
    finally:
        subscriber.stop()


def test_a_failing_job_posts_job_failed(server: RunningServer, receiver: Receiver) -> None:
    push = [{"type": "webhook", "url": receiver.url("/failed")}]
    r = post(server, "/v1/jobs", {"pipeline": "faces", "input": "still.mp4", "push": push})
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]

    def failed() -> Any:
        return [p for p in receiver.events("job.failed") if p.json()["job"]["id"] == job_id]

    (hook,) = wait_for(failed, "job.failed", WAIT)
    assert hook.json()["job"]["state"] == "failed" and "still.mp4" in hook.json()["job"]["error"]
    assert "X-Frameserve-Signature" not in hook.headers  # no secret, no signature


def test_an_upload_takes_push_as_json_text(server: RunningServer, receiver: Receiver) -> None:
    media = Path(server.log_path).parent / "media"
    push = [{"type": "webhook", "url": receiver.url("/upload"), "secret": SECRET}]
    r = requests.post(
        url(server, "/v1/jobs"),
        data={"pipeline": "faces", "sample": "every:8", "push": json.dumps(push)},
        files={"file": ("clip.mp4", (media / "clip.mp4").read_bytes(), "video/mp4")},
        timeout=60,
    )
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]

    def finished() -> Any:
        return [p for p in receiver.events("job.finished") if p.path == "/upload"]

    (hook,) = wait_for(finished, "job.finished of the upload", WAIT)
    assert hook.json()["job"]["id"] == job_id and verify(SECRET, hook.headers, hook.body)
    assert hook.json()["job"]["progress"]["frames_done"] == CLIP_FRAMES // 8
    bad = requests.post(
        url(server, "/v1/jobs"),
        data={"pipeline": "faces", "push": "[{"},
        files={"file": ("clip.mp4", b"\0" * 64, "video/mp4")},
        timeout=60,
    )
    assert bad.status_code == 400 and "multipart field 'push'" in bad.json()["error"]


def test_a_stream_pushes_records_over_webhook_and_mqtt(
    server: RunningServer, receiver: Receiver, broker: Broker
) -> None:
    subscriber = Subscriber(broker.port, "cams/front")
    push = [
        {"type": "webhook", "url": receiver.url("/records"), "batch_size": 5, "batch_ms": 200},
        {"type": "mqtt", "url": broker.url("cams/front"), "qos": 0},
    ]
    body = {"source": "clip.mp4", "pipeline": "faces", "loop": True, "push": push}
    r = post(server, "/v1/streams", body)
    assert r.status_code == 201, r.text
    stream_id = r.json()["id"]
    try:

        def batches() -> list[Any]:
            return [p.json() for p in list(receiver.posts) if p.path == "/records"]

        wait_for(lambda: sum(len(b["records"]) for b in batches()) >= 10, "10 records", WAIT)
        wait_for(lambda: len(subscriber.messages) >= 10, "10 MQTT messages", WAIT)
        for batch in batches():
            assert batch["stream"] == stream_id and 1 <= len(batch["records"]) <= 5
        records = [r for b in batches() for r in b["records"]]
        frames = [r["frame"] for r in records]
        assert frames == sorted(frames)  # in order
        for record in [*records, *subscriber.payloads()]:
            assert record["stream"] == stream_id
            assert {"frame", "pts", "pts_ticks", "detections", "lag_ms"} <= set(record)
        status = get(server, f"/v1/streams/{stream_id}")
        assert [p["type"] for p in status["push"]] == ["webhook", "mqtt"]
        assert all(p["sent"] > 0 and p["failed"] == 0 for p in status["push"]), status
    finally:
        subscriber.stop()
        gone = requests.delete(url(server, f"/v1/streams/{stream_id}"), timeout=60)
    assert gone.status_code == 200


def test_push_targets_that_are_down_do_not_hold_the_stream(server: RunningServer) -> None:
    """The same clip at the same capped rate with and without dead targets: the pushing stream
    keeps publishing like the other, and what its outputs lost is counted."""
    dead = [
        {"type": "webhook", "url": f"http://u:hunter2@127.0.0.1:{closed_port()}/x",
         "queue_size": 4, "max_attempts": 2, "batch_size": 1, "batch_ms": 0},
        {"type": "mqtt", "url": f"mqtt://127.0.0.1:{closed_port()}/t", "queue_size": 4,
         "max_attempts": 2},
    ]  # fmt: skip
    common = {"source": "clip.mp4", "pipeline": "faces", "loop": True, "max_fps": 8}
    pushing = post(server, "/v1/streams", {**common, "push": dead}).json()["id"]
    plain = post(server, "/v1/streams", common).json()["id"]
    try:
        before = {s: get(server, f"/v1/streams/{s}")["frames_out"] for s in (pushing, plain)}

        def lost() -> Any:
            status = get(server, f"/v1/streams/{pushing}")
            outputs = status["push"]
            counted = all(p["failed"] > 0 and p["dropped"] > 0 for p in outputs)
            return status if counted and status["frames_out"] >= before[pushing] + 60 else None

        status = wait_for(lost, "losses counted while the stream goes on", WAIT)
        other = get(server, f"/v1/streams/{plain}")
        gained = status["frames_out"] - before[pushing]
        assert gained >= 0.5 * (other["frames_out"] - before[plain]), (status, other)
        assert status["state"] == "running"
        for output in status["push"]:
            assert output["sent"] == 0 and output["queued"] <= 4 + 1, output
            assert "hunter2" not in str(output)
        assert status["push"][0]["url"].startswith("http://u:***@127.0.0.1:")
        labels = {"kind": "stream", "id": pushing}
        assert metric(server, "frameserve_push_dropped_total", **labels, type="webhook") > 0
        assert metric(server, "frameserve_push_failed_total", **labels, type="mqtt") > 0
    finally:
        for stream_id in (pushing, plain):
            requests.delete(url(server, f"/v1/streams/{stream_id}"), timeout=60)


@pytest.mark.parametrize(
    ("push", "expected"),
    [
        ([{"type": "kafka", "url": "kafka://h/t"}], "push[0].type: expected 'webhook' or 'mqtt'"),
        ([{"type": "webhook", "url": "ftp://127.0.0.1/x"}], "push[0].url: expected a webhook"),
        ([{"type": "mqtt", "url": "mqtt://127.0.0.1/t", "qos": 3}], "push[0].qos"),
        ([{"type": "mqtt", "url": "mqtt://127.0.0.1/a/#"}], "push[0].url: expected mqtt://"),
        ([{"type": "webhook", "url": "http://127.0.0.1/x"}] * 9, "at most 8 push outputs"),
        ([{"type": "webhook", "url": "http://127.0.0.1/x", "retries": 1}], "push[0].retries"),
        ("http://127.0.0.1/x", "push: expected a list"),
        (
            [{"type": "webhook", "url": "http://127.0.0.1/x"},
             {"type": "webhook", "url": "http://u:hunter2@127.0.0.2:9/x"}],
            "push[1].url: the host '127.0.0.2' of 'http://u:***@127.0.0.2:9/x' resolves to "
            "127.0.0.2, which the destination policy refuses (loopback)",
        ),
    ],
)  # fmt: skip
def test_bad_push_outputs_are_400_naming_the_field(
    server: RunningServer, push: Any, expected: str
) -> None:
    for path, body in (
        ("/v1/jobs", {"pipeline": "faces", "input": "clip.mp4", "push": push}),
        ("/v1/streams", {"source": "clip.mp4", "pipeline": "faces", "push": push}),
    ):
        r = post(server, path, body)
        assert r.status_code == 400, (path, r.text)
        assert expected in r.json()["error"], (path, r.text)
        assert "hunter2" not in r.text


def test_fields_of_the_other_kind_are_400(server: RunningServer, receiver: Receiver) -> None:
    hook = {"type": "webhook", "url": receiver.url()}
    r = post(server, "/v1/jobs", {"pipeline": "faces", "input": "clip.mp4",
                                  "push": [{**hook, "batch_size": 5}]})  # fmt: skip
    assert r.status_code == 400 and "push[0].batch_size: only streams" in r.json()["error"]
    r = post(server, "/v1/streams", {"source": "clip.mp4", "pipeline": "faces",
                                     "push": [{**hook, "events": ["job.progress"]}]})  # fmt: skip
    assert r.status_code == 400 and "push[0].events: only jobs" in r.json()["error"]
