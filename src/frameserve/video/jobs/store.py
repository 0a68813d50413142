"""The jobs' durable state: one SQLite file (``state_dir/jobs.db``, WAL) with a row per job.

A checkpoint and the progress it stands for are written in one statement, hence one
transaction, and every commit is synchronous (``synchronous=FULL``): after a crash the row
says exactly which results and segments on disk count. The store is not thread-safe on its
own: ``JobQueue`` calls it under its one lock.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from frameserve.errors import ConfigError
from frameserve.video.jobs.spec import Checkpoint, JobSpec, JobState

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- submit order
    id TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL,
    pipeline TEXT NOT NULL,
    input TEXT NOT NULL,
    sample TEXT,
    video_out INTEGER NOT NULL,
    upload TEXT,            -- an uploaded input the job owns: its path under the job folder
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    frames_done INTEGER NOT NULL DEFAULT 0,
    frames_total INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    checkpoint TEXT,        -- Checkpoint.to_json(), committed with frames_done
    crashes INTEGER NOT NULL DEFAULT 0,  -- executions whose decode worker died
    attempts INTEGER NOT NULL DEFAULT 0,  -- executions started (resumes included)
    owner TEXT NOT NULL DEFAULT ''  -- the API key name that submitted it ('': keys off)
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, seq);
"""
_COLUMNS = (
    "id, state, pipeline, input, sample, video_out, upload, created, started, finished, "
    "frames_done, frames_total, error, checkpoint, crashes, attempts, owner, params, push"
)

# Columns later versions added, with their definitions, for stores that predate them.
_ADDED_COLUMNS = (
    ("crashes", "INTEGER NOT NULL DEFAULT 0"),
    ("attempts", "INTEGER NOT NULL DEFAULT 0"),
    ("owner", "TEXT NOT NULL DEFAULT ''"),
    ("params", "TEXT"),  # JobSpec.params as JSON (script models' per-stream params), or NULL
    ("push", "TEXT"),  # JobSpec.push as JSON (secrets included: a resumed job needs them)
)


@dataclass(frozen=True, slots=True)
class StoredJob:
    """A row of the store."""

    id: str
    state: JobState
    spec: JobSpec
    upload: str | None
    created: float
    started: float | None
    finished: float | None
    frames_done: int
    frames_total: int
    error: str | None
    checkpoint: Checkpoint | None
    crashes: int = 0  # executions whose decode worker died
    attempts: int = 0  # executions started, resumes after a restart included
    owner: str = ""  # the API key name that submitted it ("": keys were off)


def _job(row: tuple[Any, ...]) -> StoredJob:
    (id_, state, pipeline, input_, sample, video_out, upload, created, started, finished,
     done, total, error, checkpoint, crashes, attempts, owner, params, push) = row  # fmt: skip
    spec = JobSpec(
        pipeline=pipeline, input=input_, sample=sample, video_out=bool(video_out),
        params=json.loads(params) if params else None, push=json.loads(push) if push else (),
    )  # fmt: skip
    return StoredJob(
        id_, JobState(state), spec, upload, created, started, finished, done, total, error,
        Checkpoint.from_json(json.loads(checkpoint)) if checkpoint else None, crashes,
        attempts, owner,
    )  # fmt: skip


class JobStore:
    """Rows of jobs in SQLite; every method is one transaction."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise ConfigError(
                    f"{path}: expected job store schema version {SCHEMA_VERSION}, got {version} "
                    "(written by another frameserve version)"
                )
            with self._db:
                self._db.executescript(SCHEMA)
                columns = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
                for added, kind in _ADDED_COLUMNS:  # a store written by an older frameserve
                    if added not in columns:
                        self._db.execute(f"ALTER TABLE jobs ADD COLUMN {added} {kind}")
                self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        self._db.close()

    def insert(
        self, id_: str, spec: JobSpec, upload: str | None, created: float, owner: str = ""
    ) -> None:
        self._db.execute(
            "INSERT INTO jobs (id, state, pipeline, input, sample, video_out, upload, created, "
            "owner, params, push) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (id_, JobState.QUEUED.value, spec.pipeline, spec.input, spec.sample,
             int(spec.video_out), upload, created, owner,
             json.dumps(spec.params) if spec.params is not None else None,
             json.dumps([p.model_dump(mode="json") for p in spec.push]) if spec.push else None),
        )  # fmt: skip

    def get(self, id_: str) -> StoredJob | None:
        row = self._db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (id_,)).fetchone()
        return _job(row) if row is not None else None

    def list(self, state: JobState | None = None, owner: str | None = None) -> list[StoredJob]:
        """Newest first; ``state`` and ``owner`` (None: any) filter."""
        where, args = [], []
        if state is not None:
            where.append("state = ?")
            args.append(state.value)
        if owner is not None:
            where.append("owner = ?")
            args.append(owner)
        clause = f"WHERE {' AND '.join(where)} " if where else ""
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM jobs {clause}ORDER BY seq DESC", args)
        return [_job(row) for row in rows.fetchall()]

    def count(self, state: JobState) -> int:
        row = self._db.execute("SELECT COUNT(*) FROM jobs WHERE state = ?", (state.value,))
        return int(row.fetchone()[0])

    def oldest(self, state: JobState) -> str | None:
        """The id of the first-submitted job in ``state``."""
        row = self._db.execute(
            "SELECT id FROM jobs WHERE state = ? ORDER BY seq LIMIT 1", (state.value,)
        ).fetchone()
        return row[0] if row is not None else None

    def requeue_running(self) -> int:
        """Jobs a process left running (it died or closed late) wait again; returns how many."""
        cursor = self._db.execute(
            "UPDATE jobs SET state = ? WHERE state = ?",
            (JobState.QUEUED.value, JobState.RUNNING.value),
        )
        return cursor.rowcount

    def start(self, id_: str, now: float) -> None:
        """queued -> running; the first start's time is kept."""
        self._db.execute(
            "UPDATE jobs SET state = ?, started = COALESCE(started, ?), attempts = attempts + 1 "
            "WHERE id = ?",
            (JobState.RUNNING.value, now, id_),
        )

    def set_total(self, id_: str, frames_total: int) -> None:
        self._db.execute("UPDATE jobs SET frames_total = ? WHERE id = ?", (frames_total, id_))

    def checkpoint(self, id_: str, checkpoint: Checkpoint) -> bool:
        """Record a running job's checkpoint and its progress together; False if not running."""
        cursor = self._db.execute(
            "UPDATE jobs SET checkpoint = ?, frames_done = ? WHERE id = ? AND state = ?",
            (json.dumps(checkpoint.to_json()), checkpoint.written, id_, JobState.RUNNING.value),
        )
        return cursor.rowcount == 1

    def end(
        self,
        id_: str,
        state: JobState,
        now: float | None,
        error: str | None = None,
        frames_done: int | None = None,
    ) -> None:
        """Move a job to ``state`` (``now``: its finish time, None to go back to queued)."""
        self._db.execute(
            "UPDATE jobs SET state = ?, finished = ?, error = ?, "
            "frames_done = COALESCE(?, frames_done) WHERE id = ?",
            (state.value, now, error, frames_done, id_),
        )

    def crashed(self, id_: str) -> int:
        """Count an execution whose decode worker died; returns the count."""
        self._db.execute("UPDATE jobs SET crashes = crashes + 1 WHERE id = ?", (id_,))
        row = self._db.execute("SELECT crashes FROM jobs WHERE id = ?", (id_,)).fetchone()
        return int(row[0]) if row else 0

    def set_done(self, id_: str, frames_done: int | None) -> None:
        if frames_done is not None:
            self._db.execute("UPDATE jobs SET frames_done = ? WHERE id = ?", (frames_done, id_))

    def ended_before(self, when: float) -> tuple[str, ...]:
        """Ids of finished jobs (succeeded, failed, cancelled) that ended before ``when``."""
        done = (JobState.SUCCEEDED.value, JobState.FAILED.value, JobState.CANCELLED.value)
        rows = self._db.execute(
            "SELECT id FROM jobs WHERE state IN (?, ?, ?) AND finished IS NOT NULL "
            "AND finished < ? ORDER BY seq",
            (*done, when),
        )
        return tuple(row[0] for row in rows.fetchall())

    def delete(self, id_: str) -> None:
        self._db.execute("DELETE FROM jobs WHERE id = ?", (id_,))
