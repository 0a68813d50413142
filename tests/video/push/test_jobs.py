"""A job's push outputs: kept in the job store (a job resumed after a restart pushes as the
first process would have), and its progress events while it runs (``PushHub`` in-process,
a real HTTP receiver)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from frameserve.video.jobs.spec import JobProgress, JobRecord, JobSpec, JobState
from frameserve.video.jobs.store import JobStore
from frameserve.video.live.policy import SourcePolicy
from frameserve.video.push.hub import PushHub, PushSettings
from video.push.targets import Receiver

POLICY = SourcePolicy.from_flags(["127.0.0.1/32"])


def test_push_outputs_survive_the_store_with_their_secrets(tmp_path: Path) -> None:
    push = [
        {"type": "webhook", "url": "https://u:pw@hooks.example/x", "secret": "k", "events":
         ["job.finished", "job.progress"], "progress_interval_s": 2},
        {"type": "mqtt", "url": "mqtt://broker.example/jobs", "qos": 2},
    ]  # fmt: skip
    spec = JobSpec.model_validate({"pipeline": "faces", "input": "a.mp4", "push": push})
    store = JobStore(tmp_path / "jobs.db")
    store.insert("j1", spec, None, 1.0)
    store.insert("j2", JobSpec(pipeline="faces", input="b.mp4"), None, 2.0)
    store.close()
    again = JobStore(tmp_path / "jobs.db")  # as the next process opens it
    stored = again.get("j1")
    assert stored is not None and stored.spec == spec
    assert stored.spec.push[0].secret == "k"  # type: ignore[union-attr]
    other = again.get("j2")
    assert other is not None and other.spec.push == ()
    again.close()


def test_a_store_from_before_push_gains_the_column(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    JobStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute("ALTER TABLE jobs DROP COLUMN push")
    store = JobStore(path)
    store.insert("j1", JobSpec(pipeline="faces", input="a.mp4"), None, 1.0)
    stored = store.get("j1")
    assert stored is not None and stored.spec.push == ()
    store.close()


def test_progress_events_while_running_then_one_finished() -> None:
    receiver = Receiver().start()
    push = [{"type": "webhook", "url": receiver.url(), "progress_interval_s": 0.5,
             "events": ["job.progress", "job.finished"]}]  # fmt: skip
    spec = JobSpec.model_validate({"pipeline": "faces", "input": "a.mp4", "push": push})
    reads = []

    def lookup() -> JobRecord:  # the job queue's get, as a job's thread would read it
        reads.append(1)
        progress = JobProgress(frames_done=10 * len(reads), frames_total=100, fps=5.0)
        return JobRecord("j1", JobState.RUNNING, spec, 0.0, 0.0, progress=progress)

    async def main() -> None:
        hub = PushHub(asyncio.get_running_loop(), PushSettings(POLICY))
        hub.job_started("j1", spec, lookup)
        while len(receiver.events("job.progress")) < 2:
            await asyncio.sleep(0.05)
        final = JobRecord("j1", JobState.SUCCEEDED, spec, 0.0, 0.0, 1.0, JobProgress(100, 100))
        hub.job_ended(final, "job.finished")
        while not receiver.events("job.finished"):
            await asyncio.sleep(0.05)
        await hub.close(10.0)

    asyncio.run(main())
    receiver.stop()
    progress = [p.json() for p in receiver.events("job.progress")]
    assert [p["job"]["state"] for p in progress] == ["running"] * len(progress)
    done_frames = [p["job"]["progress"]["frames_done"] for p in progress]
    assert done_frames == sorted(done_frames) and done_frames[0] > 0
    (finished,) = receiver.events("job.finished")
    assert finished.json()["job"]["progress"]["frames_done"] == 100
    assert receiver.events("job.failed") == []
