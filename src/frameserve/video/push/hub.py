"""The push outputs of one server: their tasks on the event loop, the one HTTP client they
share, and the groups of outputs of each stream (``StreamPush``) and job (``JobPush``).

The hub and everything it creates belong to the server's event loop. Threads reach it in two
ways only: a live stream's sink thread already crosses onto the loop once per record
(``LiveStream._deliver`` calls ``StreamPush.deliver`` there), and the job queue's threads call
``job_started`` / ``job_ended`` (the ``JobWatcher`` of ``video.jobs.events``), which hand over
with ``call_soon_threadsafe``. Status reads (``status``, ``job_status``, the metrics) copy
counters from any thread.

Each output runs as one task, kept in ``_tasks`` with its failure logged. A group ``end``s when
its stream stops or its job ends: each output sends what is queued for at most ``flush_s``,
then closes. ``close`` (server drain) ends every group and waits at most its timeout before
cancelling what is left. Ended groups stay readable (status, metrics) until ``KEEP_ENDED``
newer ones ended.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson

from frameserve.errors import FrameserveError
from frameserve.video.jobs.spec import JobRecord, JobSpec, JobState
from frameserve.video.live.policy import SourcePolicy
from frameserve.video.live.records import LiveRecord
from frameserve.video.push.delivery import Encode, Message, PushOutput, Transport, idle_status
from frameserve.video.push.mqtt import MqttTransport
from frameserve.video.push.spec import (
    MqttPush,
    WebhookPush,
    check_destinations,
    check_job_push,
)
from frameserve.video.push.webhook import WebhookTransport, new_session

log = logging.getLogger(__name__)

KEEP_ENDED = 256  # ended groups kept for status and metrics
FLUSH_S = 5.0  # what an ending output may still spend sending its queue

Spec = WebhookPush | MqttPush


@dataclass(frozen=True)
class PushSettings:
    """Where push outputs may connect and how long an ending output may flush."""

    policy: SourcePolicy = SourcePolicy()
    flush_s: float = FLUSH_S


class _Group:
    """The outputs of one stream or job (loop-owned); built on the loop at ``start``."""

    kind = ""

    def __init__(self, hub: PushHub, owner_id: str, specs: tuple[Spec, ...]) -> None:
        self.hub = hub
        self.id = owner_id
        self.specs = specs
        self.outputs: list[PushOutput] = []
        self.started = False
        self.ended = False

    def start(self) -> None:
        """Create the outputs and their tasks (once; on the loop; none once the hub closed)."""
        if self.started:
            return
        self.started = True
        if not self.hub.register(self):
            return
        for i, spec in enumerate(self.specs):
            output = self.hub.output(f"{self.kind} {self.id} push[{i}]", spec, self._encoder(spec))
            self.outputs.append(output)
            self.hub.run(output)

    def _encoder(self, spec: Spec) -> tuple[Encode, int, float]:
        raise NotImplementedError

    def end(self) -> None:
        """No more messages: every output flushes and closes (once; on the loop)."""
        if self.ended:
            return
        self.start()
        self.ended = True
        for output in self.outputs:
            output.end()
        self.hub.ended(self)

    def status(self) -> tuple[dict[str, Any], ...]:
        """Each output's counters (any thread)."""
        outputs = list(self.outputs)
        if len(outputs) < len(self.specs):
            return tuple(idle_status(spec).to_json() for spec in self.specs)
        return tuple(o.status().to_json() for o in outputs)


class StreamPush(_Group):
    """A live stream's outputs: its records, batched (webhook) or one per message (MQTT)."""

    kind = "stream"

    def deliver(self, record: LiveRecord) -> None:
        """On the loop, for each record the stream publishes: queue it on every output."""
        if not self.started:
            self.start()
        for output in self.outputs:
            output.offer(record)

    def _encoder(self, spec: Spec) -> tuple[Encode, int, float]:
        stream = self.id
        if isinstance(spec, WebhookPush):

            def batch(records: list[LiveRecord]) -> Message:
                body = {"stream": stream, "records": [r.to_json() for r in records]}
                return Message("stream.records", _dumps(body))

            return batch, spec.batch_size, spec.batch_ms / 1000.0

        def one(records: list[LiveRecord]) -> Message:
            return Message("stream.record", _dumps(records[0].to_json()))

        return one, 1, 0.0


class JobPush(_Group):
    """A job's outputs: its events, and its progress while it runs when asked for."""

    kind = "job"

    def __init__(
        self, hub: PushHub, owner_id: str, specs: tuple[Spec, ...],
        lookup: Callable[[], JobRecord] | None,
    ) -> None:  # fmt: skip
        super().__init__(hub, owner_id, specs)
        self.lookup = lookup
        self._progress: asyncio.Task[None] | None = None

    def start(self) -> None:
        super().start()
        every = [s.progress_interval_s for s in self.specs if "job.progress" in s.events]
        if every and self.lookup is not None and self._progress is None and not self.ended:
            self._progress = self.hub.keep(
                asyncio.get_running_loop().create_task(
                    self._report(min(every)), name=f"push-job-{self.id}-progress"
                )
            )

    def send(self, event: str, record: JobRecord) -> None:
        """Queue ``event`` on the outputs that asked for it (on the loop)."""
        body = _job_event(event, record)
        for output in self.outputs:
            if event in output.spec.events:
                output.offer(body)

    def end(self) -> None:
        if self._progress is not None:
            self._progress.cancel()
        super().end()

    async def _report(self, interval_s: float) -> None:
        """job.progress every ``interval_s`` while the job runs (the job is read in a thread:
        the store is SQLite)."""
        assert self.lookup is not None
        while not self.ended:
            await asyncio.sleep(interval_s)
            try:
                record = await asyncio.to_thread(self.lookup)
            except FrameserveError as err:  # deleted, or the queue closed: nothing to report
                log.debug("push: job %s: no progress to report: %s", self.id, err)
                return
            if record.state is JobState.RUNNING and not self.ended:
                self.send("job.progress", record)

    def _encoder(self, spec: Spec) -> tuple[Encode, int, float]:
        def one(events: list[dict[str, Any]]) -> Message:
            return Message(str(events[0]["event"]), _dumps(events[0]))

        return one, 1, 0.0


class PushHub:
    """Every push output of the server (see the module docstring); implements the job
    queue's ``JobWatcher``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, settings: PushSettings) -> None:
        self.loop = loop
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._live: dict[tuple[str, str], _Group] = {}
        self._ended: OrderedDict[tuple[str, str], _Group] = OrderedDict()
        self._closed = False

    # -- any thread -------------------------------------------------------------------------
    def stream(self, stream_id: str, specs: tuple[Spec, ...]) -> StreamPush:
        """The outputs of a stream about to start (they start on the loop with its first
        record, or its end)."""
        return StreamPush(self, stream_id, specs)

    def check_job(self, spec: JobSpec) -> None:
        """A job's outputs at submit: job fields only, destinations the policy allows."""
        check_job_push(spec.push)
        check_destinations(spec.push, self.settings.policy)

    def job_started(self, job_id: str, spec: JobSpec, lookup: Callable[[], JobRecord]) -> None:
        if spec.push:
            self._call(self._job_started, job_id, spec.push, lookup)

    def job_ended(self, record: JobRecord, event: str) -> None:
        if record.spec.push:
            self._call(self._job_ended, record, event)

    def job_status(self, job_id: str, spec: JobSpec) -> tuple[dict[str, Any], ...]:
        group = self._live.get(("job", job_id)) or self._ended.get(("job", job_id))
        if group is None:
            return tuple(idle_status(s).to_json() for s in spec.push)
        return group.status()

    def groups(self) -> Iterator[_Group]:
        """Every group, live and ended (for the metrics; any thread)."""
        yield from list(self._live.values())
        yield from list(self._ended.values())

    def _call(self, callback: Callable[..., None], *args: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop is closed: the server is gone
            log.warning("push: the server's loop is closed; %s dropped", callback.__name__)

    # -- event loop -------------------------------------------------------------------------
    def _job_started(self, job_id: str, specs: tuple[Spec, ...], lookup: Any) -> None:
        key = ("job", job_id)
        if key in self._live or self._closed:
            return  # a retry after a crash: the same outputs go on
        JobPush(self, job_id, specs, lookup).start()

    def _job_ended(self, record: JobRecord, event: str) -> None:
        group = self._live.get(("job", record.id))
        if not isinstance(group, JobPush):  # ended before it ran here (a cancelled queued job)
            group = JobPush(self, record.id, record.spec.push, None)
        group.start()
        group.send(event, record)
        group.end()

    def register(self, group: _Group) -> bool:
        """A group starts: listed as live; False (not listed) once the hub closed."""
        if self._closed:
            return False
        key = (group.kind, group.id)
        self._ended.pop(key, None)  # a job that runs again (resumed) counts afresh
        self._live[key] = group
        return True

    def output(self, name: str, spec: Spec, encoder: tuple[Encode, int, float]) -> PushOutput:
        """A new output (not yet running)."""
        transport: Transport
        if isinstance(spec, WebhookPush):
            if self._session is None:
                self._session = new_session(self.settings.policy)
            transport = WebhookTransport(spec, self._session, self.settings.policy)
        else:
            transport = MqttTransport(spec, self.settings.policy, name)
        encode, size, wait_s = encoder
        return PushOutput(name, spec, transport, encode, size, wait_s)

    def run(self, output: PushOutput) -> None:
        """Start the output's task."""
        task = self.loop.create_task(output.run(self.settings.flush_s), name=f"push {output.name}")
        self.keep(task)

    def keep(self, task: asyncio.Task[Any]) -> asyncio.Task[Any]:
        """Keep ``task`` until it ends; its failure is logged."""
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("push: %s failed", task.get_name(), exc_info=task.exception())

    def ended(self, group: _Group) -> None:
        """A group ended: kept for status and metrics among the last ``KEEP_ENDED``."""
        key = (group.kind, group.id)
        if self._live.get(key) is group:
            del self._live[key]
        self._ended[key] = group
        self._ended.move_to_end(key)
        while len(self._ended) > KEEP_ENDED:
            self._ended.popitem(last=False)

    async def close(self, timeout_s: float) -> None:
        """Server drain: end every group, wait up to ``timeout_s`` for the flushes, cancel
        what is left, close the HTTP client."""
        self._closed = True
        for group in list(self._live.values()):
            group.end()
        tasks = set(self._tasks)
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=timeout_s)
            for task in late:
                task.cancel()
            if late:
                log.warning("push: %d outputs still sending after %.1f s; cancelled",
                            len(late), timeout_s)  # fmt: skip
                await asyncio.wait(late, timeout=1.0)
        if self._session is not None:
            await self._session.close()


def _dumps(data: Any) -> bytes:
    return orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY)


def _job_event(event: str, record: JobRecord) -> dict[str, Any]:
    """A job event's body: the event, when, the job JSON and where its products are."""
    base = f"/v1/jobs/{record.id}"
    links = {"job": base, "results": f"{base}/results"}
    if record.state is JobState.SUCCEEDED:
        links["summary"] = f"{base}/summary"
        if record.spec.video_out:
            links["output"] = f"{base}/output"
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {"event": event, "time": now, "job": record.to_json(), "links": links}
