"""Durable video jobs: a queue of pipeline runs over files, kept in SQLite, that resume from
their last checkpoint after a restart or a crash (see ``job_queue`` and ``runner``)."""

from frameserve.video.jobs.job_queue import JobQueue
from frameserve.video.jobs.spec import JobProgress, JobRecord, JobSettings, JobSpec, JobState

__all__ = ["JobProgress", "JobQueue", "JobRecord", "JobSettings", "JobSpec", "JobState"]
