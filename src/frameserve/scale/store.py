"""The coordinator's record of a distributed job's chunks: SQLite (WAL), one writer.

Beside the job store's own tables (in the same ``jobs.db`` under ``--state-dir``, or a file of
its own for ``video run --ray``): the plan of each job and one row per chunk. A chunk's lines
are committed once: the first attempt to finish wins, a late duplicate (a worker thought dead
that answered after all) changes nothing. A coordinator that restarts reads the plan and the
committed chunks back and runs only the others.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from frameserve.scale.chunks import ChunkPlan

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ray_plans (job TEXT PRIMARY KEY, plan TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS ray_chunks (
    job TEXT NOT NULL, number INTEGER NOT NULL, node TEXT, seconds REAL,
    lines BLOB NOT NULL, overlap BLOB NOT NULL, PRIMARY KEY (job, number));
"""


class ChunkStore:
    """Plans and committed chunks; every method may be called from any thread."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, timeout=30.0)
        self._lock = threading.Lock()
        with self._lock, self._db:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)

    def plan(self, job: str) -> ChunkPlan | None:
        with self._lock:
            row = self._db.execute("SELECT plan FROM ray_plans WHERE job = ?", (job,)).fetchone()
        return ChunkPlan.from_json(row[0]) if row else None

    def save_plan(self, job: str, plan: ChunkPlan) -> None:
        with self._lock, self._db:
            self._db.execute("DELETE FROM ray_chunks WHERE job = ?", (job,))
            self._db.execute(
                "INSERT OR REPLACE INTO ray_plans (job, plan) VALUES (?, ?)", (job, plan.to_json())
            )

    def committed(self, job: str) -> set[int]:
        with self._lock:
            rows = self._db.execute("SELECT number FROM ray_chunks WHERE job = ?", (job,))
            return {int(r[0]) for r in rows}

    def commit(
        self, job: str, number: int, lines: bytes, overlap: bytes, node: str, seconds: float
    ) -> bool:
        """Record a chunk's lines; False when an earlier attempt committed it already."""
        with self._lock, self._db:
            cur = self._db.execute(
                "INSERT OR IGNORE INTO ray_chunks (job, number, node, seconds, lines, overlap) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (job, number, node, seconds, lines, overlap),
            )
            return cur.rowcount == 1

    def results(self, job: str, count: int) -> Iterator[tuple[bytes, bytes]]:
        """Each chunk's (lines, overlap) in order, read one at a time."""
        for number in range(count):
            with self._lock:
                row = self._db.execute(
                    "SELECT lines, overlap FROM ray_chunks WHERE job = ? AND number = ?",
                    (job, number),
                ).fetchone()
            if row is None:
                raise KeyError(f"job {job}: chunk {number} was not committed")
            yield bytes(row[0]), bytes(row[1])

    def drop(self, job: str) -> None:
        with self._lock, self._db:
            self._db.execute("DELETE FROM ray_chunks WHERE job = ?", (job,))
            self._db.execute("DELETE FROM ray_plans WHERE job = ?", (job,))

    def close(self) -> None:
        with self._lock:
            self._db.close()
