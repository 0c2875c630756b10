"""The web console's one read: recent jobs across owners, with only the fields an operator's
overview shows (never the spec, results, request or paths), bounded in rows and in time."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Sequence

from runnerd.domain import TERMINAL, JobStatus
from runnerd.store.connection import Database

# In flight, spelt as IN (…) so that SQLite searches jobs_by_status (NOT IN would scan the table).
_IN_FLIGHT_SQL = ",".join(str(int(s)) for s in sorted(JobStatus) if s not in TERMINAL and s != JobStatus.DELETED)
# Deliberately a short list: what is not selected cannot leak into the page.
_FIELDS = "job_id, owner, environment, status, date_created, date_finished, error, history"

NEWEST_SQL = f"SELECT {_FIELDS} FROM jobs ORDER BY rowid DESC LIMIT ?"  # rowid order: no sort, stops at the limit
WINDOW_SQL = (f"SELECT {_FIELDS} FROM jobs WHERE status IN ({_IN_FLIGHT_SQL})"  # jobs_by_status
              f" UNION SELECT {_FIELDS} FROM jobs WHERE date_finished >= ? LIMIT ?")  # jobs_by_finish (0007)


@dataclass(frozen=True)
class ConsoleJob:
    job_id: str
    owner: str
    environment: str
    status: JobStatus
    created: float
    finished: float | None
    error: str | None
    history: tuple[tuple[int, float], ...]

    @property
    def left_queue(self) -> float | None:
        """When the job left the queue (its first status after 1), if it has."""
        return next((t for s, t in self.history if s != int(JobStatus.QUEUED)), None)


def _row(r: Sequence[Any]) -> ConsoleJob:
    return ConsoleJob(r[0], r[1], r[2], JobStatus(r[3]), r[4], r[5], r[6],
                      tuple((int(s), float(t)) for s, t in json.loads(r[7])))


async def console_jobs(db: Database, since: float, recent: int = 200, cap: int = 5000) -> tuple[list[ConsoleJob], bool]:
    """The `recent` newest jobs, plus every job in flight and every job finished at or after
    `since` (what the hour's charts are drawn from), at most `cap` of those; newest first.
    Two indexed queries whatever the number of owners. Returns (jobs, whether `cap` cut it)."""
    newest = await db.fetchall(NEWEST_SQL, (recent,))
    window = await db.fetchall(WINDOW_SQL, (since, cap + 1))
    cut = len(window) > cap
    jobs = {r[0]: _row(r) for r in [*window[:cap], *newest]}
    return sorted(jobs.values(), key=lambda j: j.created, reverse=True), cut
