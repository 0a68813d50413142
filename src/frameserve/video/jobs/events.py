"""What the job queue tells a watcher (the server's push outputs) about its jobs.

The queue calls these from its own threads (a job's thread, an API worker thread), some under
its lock: an implementation only hands the news to its own loop and returns at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from frameserve.video.jobs.spec import JobRecord, JobSpec


class JobWatcher(Protocol):
    """Told when a job starts running and when it ends."""

    def check_job(self, spec: JobSpec) -> None:
        """``InvalidInput`` when the job's push outputs cannot be accepted (submit)."""

    def job_started(self, job_id: str, spec: JobSpec, lookup: Callable[[], JobRecord]) -> None:
        """A job (new, retried or resumed) starts running; ``lookup`` reads it (blocking)."""

    def job_ended(self, record: JobRecord, event: str) -> None:
        """A job ended: ``event`` is job.finished, job.failed or job.cancelled; once per
        ending (a job stopped for a shutdown or retried after a crash has not ended)."""

    def job_status(self, job_id: str, spec: JobSpec) -> tuple[dict[str, Any], ...]:
        """The job's push outputs as its JSON shows them (``push``)."""
