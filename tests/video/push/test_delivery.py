"""Push outputs in-process (``PushHub`` on an asyncio loop) against real targets: an HTTP
receiver and a Mosquitto broker on loopback, the policy allowing 127.0.0.1 only.

What is checked: bodies and signatures as a receiver sees them, batching, one MQTT message per
record, and that a target that is down or refused never makes ``offer`` wait: messages are
dropped (queue full) or failed (tries used up) and counted. Counts, never times.
"""

from __future__ import annotations

import asyncio
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from frameserve.video.jobs.spec import JobRecord, JobSpec, JobState
from frameserve.video.live.policy import SourcePolicy
from frameserve.video.live.records import LiveRecord
from frameserve.video.push.hub import PushHub, PushSettings
from frameserve.video.push.spec import parse_push
from video.push.targets import (
    NO_MOSQUITTO,
    Receiver,
    Subscriber,
    broker,
    closed_port,
    have_mosquitto,
    self_signed,
    verify,
    wait_for,
)

POLICY = SourcePolicy.from_flags(["127.0.0.1/32"])
SECRET = "s3cret-for-tests"


def _record(stream: str, frame: int) -> LiveRecord:
    return LiveRecord(stream, frame, frame * 3000, Fraction(1, 90000), {"detections": []}, 1.5)


def _job(push: list[dict[str, Any]], state: JobState = JobState.SUCCEEDED) -> JobRecord:
    spec = JobSpec(pipeline="faces", input="clip.mp4", push=push)  # type: ignore[arg-type]
    return JobRecord("j1", state, spec, 0.0)


async def _until(check: Any, what: str, timeout: float = 30.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise TimeoutError(what)


def test_stream_records_reach_a_webhook_in_signed_batches() -> None:
    receiver = Receiver().start()
    spec = {"type": "webhook", "url": receiver.url(), "secret": SECRET, "batch_size": 4,
            "batch_ms": 200}  # fmt: skip

    async def main() -> dict[str, Any]:
        hub = PushHub(asyncio.get_running_loop(), PushSettings(POLICY))
        group = hub.stream("s1", parse_push([spec]))
        for frame in range(10):
            group.deliver(_record("s1", frame))
        group.end()
        await hub.close(10.0)
        return group.status()[0]

    status = asyncio.run(main())
    receiver.stop()
    assert status["sent"] == 10 and status["dropped"] == status["failed"] == 0, status
    assert status["queued"] == 0 and status["url"] == receiver.url()
    frames = [r["frame"] for post in receiver.posts for r in post.json()["records"]]
    assert frames == list(range(10))  # in order, each once
    assert all(len(post.json()["records"]) <= 4 for post in receiver.posts)
    for post in receiver.posts:
        assert post.json()["stream"] == "s1"
        assert post.headers["X-Frameserve-Event"] == "stream.records"
        assert verify(SECRET, post.headers, post.body)
        assert not verify("another-secret", post.headers, post.body)
    record = receiver.posts[0].json()["records"][0]
    assert record == _record("s1", 0).to_json()  # the SSE "result" event's JSON


def test_a_target_that_is_down_never_blocks_and_counts_what_it_lost() -> None:
    url = f"http://127.0.0.1:{closed_port()}/hook"
    spec = {"type": "webhook", "url": url, "queue_size": 3, "max_attempts": 2,
            "batch_size": 1, "batch_ms": 0}  # fmt: skip

    async def main() -> tuple[dict[str, Any], int]:
        hub = PushHub(asyncio.get_running_loop(), PushSettings(POLICY, flush_s=0.5))
        group = hub.stream("s2", parse_push([spec]))
        for frame in range(50):  # offered in one go: nothing here awaits the target
            group.deliver(_record("s2", frame))
        queued = group.status()[0]["queued"]
        await _until(lambda: group.status()[0]["failed"] >= 2, "two failed messages")
        group.end()
        await hub.close(10.0)
        return group.status()[0], queued

    status, queued = asyncio.run(main())
    assert queued <= 3 + 1  # the bound (and one being tried)
    assert status["sent"] == 0 and status["failed"] >= 2
    assert status["sent"] + status["dropped"] + status["failed"] == 50, status
    assert "Connect" in status["last_error"] or "refused" in status["last_error"], status


def test_a_refused_destination_fails_without_connecting() -> None:
    receiver = Receiver().start()  # listening, but on an address the policy refuses
    url = receiver.url().replace("127.0.0.1", "localhost")  # may resolve to ::1 too

    async def main() -> dict[str, Any]:
        hub = PushHub(asyncio.get_running_loop(), PushSettings(SourcePolicy(), flush_s=2.0))
        group = hub.stream("s3", parse_push([{"type": "webhook", "url": url, "max_attempts": 1}]))
        group.deliver(_record("s3", 0))
        group.end()
        await hub.close(10.0)
        return group.status()[0]

    status = asyncio.run(main())
    receiver.stop()
    assert receiver.posts == [] and status["failed"] == 1, status
    assert "destination policy refuses (loopback)" in status["last_error"]


def test_job_events_carry_the_job_and_links_and_are_signed() -> None:
    receiver = Receiver().start()
    push = [{"type": "webhook", "url": receiver.url(), "secret": SECRET}]
    record = _job(push)

    async def main() -> None:
        hub = PushHub(asyncio.get_running_loop(), PushSettings(POLICY))
        hub.job_ended(record, "job.finished")
        await asyncio.sleep(0)  # call_soon_threadsafe: the event is handed over next round
        await _until(lambda: receiver.posts, "the job event")
        await hub.close(10.0)

    asyncio.run(main())
    receiver.stop()
    (post,) = receiver.posts
    body = post.json()
    assert body["event"] == "job.finished" and body["job"]["id"] == "j1"
    assert body["links"]["summary"] == "/v1/jobs/j1/summary"
    assert verify(SECRET, post.headers, post.body)
    assert SECRET not in post.body.decode()  # the job JSON never shows the secret


def test_a_webhook_answering_4xx_is_not_retried() -> None:
    receiver = Receiver(status=404).start()
    spec = {"type": "webhook", "url": receiver.url(), "max_attempts": 5}

    async def main() -> dict[str, Any]:
        hub = PushHub(asyncio.get_running_loop(), PushSettings(POLICY))
        group = hub.stream("s4", parse_push([{**spec, "batch_size": 1}]))
        group.deliver(_record("s4", 0))
        group.end()
        await hub.close(10.0)
        return group.status()[0]

    status = asyncio.run(main())
    receiver.stop()
    assert len(receiver.posts) == 1 and status["failed"] == 1
    assert status["last_error"].endswith("HTTP 404")


@pytest.mark.skipif(not have_mosquitto(), reason=NO_MOSQUITTO)
def test_mqtt_one_message_per_record_then_a_stopped_broker_counts_failures(
    tmp_path: Path,
) -> None:
    with broker(tmp_path) as running:
        subscriber = Subscriber(running.port, "cams/one")
        spec = {"type": "mqtt", "url": running.url("cams/one"), "qos": 1, "max_attempts": 2,
                "timeout_s": 2}  # fmt: skip

        async def main() -> dict[str, Any]:
            hub = PushHub(asyncio.get_running_loop(), PushSettings(POLICY, flush_s=1.0))
            group = hub.stream("m1", parse_push([spec]))
            for frame in range(5):
                group.deliver(_record("m1", frame))
            await _until(lambda: group.status()[0]["sent"] == 5, "5 published")
            await asyncio.to_thread(wait_for, lambda: len(subscriber.messages) == 5, "received")
            subscriber.stop()
            await asyncio.to_thread(running.stop)
            for frame in range(5, 8):
                group.deliver(_record("m1", frame))
            await _until(lambda: group.status()[0]["failed"] >= 1, "a failure counted")
            group.end()
            await hub.close(10.0)
            return group.status()[0]

        status = asyncio.run(main())
        assert [p["frame"] for p in subscriber.payloads()] == [0, 1, 2, 3, 4]
        assert status["sent"] == 5 and status["failed"] >= 1
        assert status["sent"] + status["dropped"] + status["failed"] == 8, status


@pytest.mark.skipif(not have_mosquitto(), reason=NO_MOSQUITTO)
def test_mqtts_verifies_the_broker_certificate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TLS with the system's trust store: a broker whose certificate it does not trust is a
    failure; trusted (here through OpenSSL's SSL_CERT_FILE), the records arrive."""
    cert, key = self_signed(tmp_path)
    with broker(tmp_path, tls=(cert, key)) as running:
        spec = {"type": "mqtt", "url": running.url("secure/t"), "qos": 1, "max_attempts": 1}

        async def push_one(stream: str) -> dict[str, Any]:
            hub = PushHub(asyncio.get_running_loop(), PushSettings(POLICY, flush_s=5.0))
            group = hub.stream(stream, parse_push([spec]))
            group.deliver(_record(stream, 0))
            group.end()
            await hub.close(10.0)
            return group.status()[0]

        untrusted = asyncio.run(push_one("t1"))
        assert untrusted["failed"] == 1 and "CERTIFICATE_VERIFY_FAILED" in untrusted["last_error"]
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        trusted = asyncio.run(push_one("t2"))
        assert trusted["sent"] == 1 and trusted["failed"] == 0, trusted
