"""All SQL for jobs and their steps (nonces: nonces.py). Rows in, domain objects out."""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import asdict, dataclass
from typing import Any

from runnerd.domain import (
    TERMINAL,
    IllegalTransition,
    Job,
    JobPlan,
    JobStatus,
    JobTerms,
    PlannedJob,
    ResolvedImages,
    ResultFile,
    ResultType,
    Slot,
    StepKind,
    StepState,
    check_transition,
)
from runnerd.store.connection import Database
from runnerd.store.console import ConsoleJob, console_jobs
from runnerd.store import orders as spent_orders
from runnerd.store.nonces import NonceLedger

_TERMINAL_SQL = ",".join(str(int(s)) for s in sorted(TERMINAL))


class QueueFull(Exception):
    pass


class AgreementInUse(Exception):
    pass


class OwnerLimit(Exception):
    """A start refused by a per-owner cap: `limit` is "jobs" or "results"; `used` and `cap` are the
    owner's jobs in flight (or its kept results' bytes) and the configured bound."""

    def __init__(self, limit: str, used: int, cap: int):
        super().__init__(f"{limit}: {used} of {cap}")
        self.limit, self.used, self.cap = limit, used, cap


@dataclass
class StepRecord:
    job_id: str
    kind: StepKind
    state: StepState
    container_name: str
    container_id: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    oom_killed: bool | None = None
    error: str | None = None


def _job_from_row(row: sqlite3.Row) -> Job:
    """A row without its plan (the columns of _STATUS)."""
    return Job(
        job_id=row["job_id"],
        owner=row["owner"],
        document_id=row["document_id"],
        environment=row["environment"],
        agreement_id=row["agreement_id"],
        algo_did=row["algo_did"],
        input_dids=json.loads(row["input_dids"]),
        status=JobStatus(row["status"]),
        date_created=row["date_created"],
        date_started=row["date_started"],
        date_finished=row["date_finished"],
        stopreq=row["stopreq"],
        removed=row["removed"],
        results=[ResultFile(r["filename"], r["filesize"], ResultType(r["type"]), r["path"])
                 for r in json.loads(row["results"])],
        termination=json.loads(row["termination"]) if row["termination"] else None,
        error=row["error"],
        slot=Slot.from_json(row["slot"]) if row["slot"] else None,
        images=ResolvedImages.from_json(row["images"]) if row["images"] else None,
        ending=JobStatus(row["ending"]) if row["ending"] is not None else None,
        history=[(s, t) for s, t in json.loads(row["history"])],
        restarted_from=row["restarted_from"],
        terms=_terms_in(row["terms"]),
        usage=json.loads(row["usage"]) if row["usage"] else None,
    )


def _terms_out(terms: JobTerms) -> str | None:
    return None if terms == JobTerms() else json.dumps(asdict(terms))


def _terms_in(text: str | None) -> JobTerms:
    raw = json.loads(text) if text else {}
    return JobTerms(**{**raw, "viewers": tuple(raw.get("viewers", ())),
                       "resources": tuple((r, float(a)) for r, a in raw.get("resources", ()))})


def _step_from_row(row: sqlite3.Row) -> StepRecord:
    return StepRecord(
        job_id=row["job_id"],
        kind=StepKind(row["kind"]),
        state=StepState(row["state"]),
        container_name=row["container_name"],
        container_id=row["container_id"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        exit_code=row["exit_code"],
        oom_killed=None if row["oom_killed"] is None else bool(row["oom_killed"]),
        error=row["error"],
    )


# Everything but `spec` (up to maxRequestBytes of raw code and custom data): what status reads need.
_STATUS = ("job_id, owner, owner_lc, document_id, environment, agreement_id, algo_did, input_dids,"
           " status, date_created, date_started, date_finished, stopreq, removed, results, termination, error, slot,"
           " images, expires_at, ending, history, restarted_from, terms, usage")

_JOB_COLUMNS = {  # the columns transition()/update() may set (`spec`: None only, to drop the plan)
    "date_started", "date_finished", "stopreq", "removed", "results", "termination", "error", "slot", "images",
    "expires_at", "ending", "spec", "result_bytes", "request", "usage",
}
_DROPPED_PLAN = "{}"  # what `spec` holds once the job has ended (or for a row imported without one)


def _encode(column: str, value: Any) -> Any:
    if column == "results":
        return json.dumps([{"filename": r.filename, "filesize": r.filesize, "type": r.type.value, "path": r.path}
                           for r in value])
    if column == "termination":
        return None if value is None else json.dumps(value)
    if column in ("slot", "images"):  # Slot, ResolvedImages
        return None if value is None else value.to_json()
    if column == "ending":
        return None if value is None else int(value)
    if column == "spec":  # a plan is written once, at insert: afterwards it can only be dropped
        if value is not None:
            raise ValueError("a job's plan is never rewritten")
        return _DROPPED_PLAN
    if column in ("request", "usage"):
        return None if value is None else json.dumps(value)
    return value


class JobStore:
    def __init__(self, db: Database):
        self.db = db
        self.nonces = NonceLedger(db)

    # -- jobs ---------------------------------------------------------------------------------

    async def insert(self, job: PlannedJob, max_queue: int, max_jobs: int = 0, owner_jobs: int = 0,
                     owner_bytes: int = 0, orders: tuple[str, ...] = ()) -> None:
        """Insert a queued job, atomically checking the agreementId rule, the owner's caps (jobs in
        flight, bytes of kept results; 0: none) and the bound on the environment's jobs in flight
        (maxJobs running + maxQueue waiting), so maxQueue 0 means "only if a slot is free".
        Checks and insert share one write transaction: concurrent starts cannot both pass."""
        async with self.db.transaction() as tx:
            await spent_orders.spend(tx, orders, job.job_id)  # chain mode; first, as Provider checks orders first
            if owner_jobs or owner_bytes:
                # One row, kept exact by triggers (migration 0003): no count over the owner's jobs.
                async with tx.execute("SELECT active, kept_bytes FROM owners WHERE owner_lc = ?",
                                      (job.owner.lower(),)) as cur:
                    active, kept = await cur.fetchone() or (0, 0)
                if owner_jobs and active >= owner_jobs:
                    raise OwnerLimit("jobs", active, owner_jobs)
                if owner_bytes and kept > owner_bytes:
                    raise OwnerLimit("results", kept, owner_bytes)
            # Per owner: a transferTxId is public on chain, and nothing here proves whose it is, so a
            # global rule would let anyone block someone else's order by reusing it first.
            async with tx.execute(
                f"SELECT 1 FROM jobs WHERE agreement_id = ? AND owner_lc = ? AND status NOT IN ({_TERMINAL_SQL})"
                " LIMIT 1", (job.agreement_id, job.owner.lower()),
            ) as cur:
                if await cur.fetchone():
                    raise AgreementInUse(job.agreement_id)
            async with tx.execute(
                f"SELECT COUNT(*) FROM jobs WHERE environment = ? AND status NOT IN ({_TERMINAL_SQL})",
                (job.environment,),
            ) as cur:
                (in_flight,) = await cur.fetchone()  # type: ignore[misc]
            if in_flight >= max_queue + max_jobs:
                raise QueueFull(job.environment)
            await tx.execute(
                "INSERT INTO jobs (job_id, owner, owner_lc, document_id, environment, agreement_id, algo_did,"
                " input_dids, spec, status, date_created, history, restarted_from, request, terms, queue_deadline)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (job.job_id, job.owner, job.owner.lower(), job.document_id, job.environment, job.agreement_id,
                 job.algo_did, json.dumps(job.input_dids), job.plan.to_json(), int(job.status), job.date_created,
                 json.dumps([[int(job.status), job.date_created]]), job.restarted_from,
                 None if job.request is None else json.dumps(job.request), _terms_out(job.terms),
                 None if job.terms.queue_max_wait is None else job.date_created + job.terms.queue_max_wait),
            )

    async def import_jobs(self, jobs: list[Job]) -> None:
        """Bulk insert in one transaction, without queue checks (benchmarks, data migration); a job
        given without a plan is stored with none, like one that has ended."""
        async with self.db.transaction() as tx:
            await tx.executemany(
                "INSERT INTO jobs (job_id, owner, owner_lc, document_id, environment, agreement_id, algo_did,"
                " input_dids, spec, status, date_created, date_finished, results) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [(j.job_id, j.owner, j.owner.lower(), j.document_id, j.environment, j.agreement_id, j.algo_did,
                  json.dumps(j.input_dids), j.plan.to_json() if isinstance(j, PlannedJob) else _DROPPED_PLAN,
                  int(j.status), j.date_created, j.date_finished,
                  _encode("results", j.results)) for j in jobs])

    async def get(self, job_id: str) -> Job | None:
        """A job without its plan (status reads); the runner loads the plan with `planned`."""
        rows = self.db.lookup(f"SELECT {_STATUS} FROM jobs WHERE job_id = ?", (job_id,))
        return _job_from_row(rows[0]) if rows else None

    async def planned(self, job_id: str) -> PlannedJob | None:
        """The job with the plan it runs; None if the row is gone or its plan was dropped (it ended).
        Raises ValueError if the stored plan cannot be read."""
        row = await self.db.fetchone("SELECT * FROM jobs WHERE job_id = ?", (job_id,))
        if row is None or not row["spec"] or row["spec"] == _DROPPED_PLAN:
            return None
        try:
            plan = JobPlan.from_json(row["spec"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"the stored plan of job {job_id} cannot be read ({type(exc).__name__}: {exc})") from None
        return _job_from_row(row).with_plan(plan)

    async def request_of(self, job_id: str) -> dict[str, Any] | None:
        """What a restart of this job re-runs intake from (None if it was never kept or is gone)."""
        row = await self.db.fetchone("SELECT request FROM jobs WHERE job_id = ?", (job_id,))
        return json.loads(row[0]) if row and row[0] else None

    async def spend_suffix(self, job_id: str, suffix: str) -> None:
        """Remember what followed the jobId in a used computeResult signature (migration 0006)."""
        await self.db.write("INSERT OR IGNORE INTO result_suffixes (job_id, suffix) VALUES (?, ?)", (job_id, suffix))

    def suffix_spent(self, job_id: str, suffix: str) -> bool:
        return bool(self.db.lookup("SELECT 1 FROM result_suffixes WHERE job_id = ? AND suffix = ?", (job_id, suffix)))

    def status_of(self, job_id: str) -> JobStatus | None:
        rows = self.db.lookup("SELECT status FROM jobs WHERE job_id = ?", (job_id,))
        return JobStatus(rows[0][0]) if rows else None

    async def list_for_owner(self, owner: str, job_id: str = "", document_id: str = "") -> list[Job]:
        if job_id:  # by primary key: at most one row
            rows = self.db.lookup(f"SELECT {_STATUS} FROM jobs WHERE job_id = ? AND owner_lc = ?",
                                  (job_id, owner.lower()))
            jobs = [_job_from_row(r) for r in rows]
            return [j for j in jobs if not document_id or j.document_id == document_id]
        sql, params = f"SELECT {_STATUS} FROM jobs WHERE owner_lc = ?", [owner.lower()]
        if document_id:
            sql, params = sql + " AND document_id = ?", [*params, document_id]
        rows = await self.db.fetchall(sql + " ORDER BY date_created", params)
        return [_job_from_row(r) for r in rows]

    async def transition(self, job_id: str, status: JobStatus, expect: JobStatus | None = None,
                         **fields: Any) -> Job:
        """Move a job to `status` (checked against the state machine) and set other columns, in one
        transaction. With `expect`, the job must currently be in that status (compare-and-set).
        Returns the row without its plan. Raises IllegalTransition, or KeyError if the job no
        longer exists."""
        unknown = set(fields) - _JOB_COLUMNS
        if unknown:
            raise ValueError(f"unknown job columns {unknown}")
        async with self.db.transaction() as tx:
            async with tx.execute("SELECT status FROM jobs WHERE job_id = ?", (job_id,)) as cur:
                row = await cur.fetchone()
            if row is None:
                raise KeyError(job_id)
            current = JobStatus(row[0])
            if expect is not None and current != expect:
                raise IllegalTransition(job_id, current, status)
            if current != status or current.terminal:  # a finished job is never rewritten
                check_transition(job_id, current, status)
            if status.terminal:
                # Its plan (raw code, custom data, the secret: up to maxRequestBytes) has served its
                # purpose once the job ended: status reads, results and deletion never need it.
                fields = {**fields, "spec": None}
            sets = ", ".join(["status = ?", *(f"{c} = ?" for c in fields)])
            values = [int(status), *(_encode(c, v) for c, v in fields.items())]
            if current != status:
                sets += ", history = json_insert(history, '$[#]', json_array(?, ?))"
                values += [int(status), time.time()]
            await tx.execute(f"UPDATE jobs SET {sets} WHERE job_id = ?", (*values, job_id))
            async with tx.execute(f"SELECT {_STATUS} FROM jobs WHERE job_id = ?", (job_id,)) as cur:
                return _job_from_row(await cur.fetchone())  # type: ignore[arg-type]

    async def update(self, job_id: str, **fields: Any) -> None:
        """Set non-status columns (stopreq, removed, …) without touching the state machine."""
        unknown = set(fields) - _JOB_COLUMNS
        if unknown or not fields:
            raise ValueError(f"bad job columns {unknown or 'none'}")
        sets = ", ".join(f"{c} = ?" for c in fields)
        await self.db.write(f"UPDATE jobs SET {sets} WHERE job_id = ?",
                            (*(_encode(c, v) for c, v in fields.items()), job_id))

    async def request_stop(self, job_id: str) -> bool:
        """Set stopreq=1 on a job that is not terminal; returns whether it was."""
        changed = await self.db.write(
            f"UPDATE jobs SET stopreq = 1 WHERE job_id = ? AND status NOT IN ({_TERMINAL_SQL})", (job_id,)
        )
        return changed > 0

    async def delete(self, job_id: str) -> None:
        await self.db.write("DELETE FROM jobs WHERE job_id = ?", (job_id,))

    async def queue_expired(self, now: float) -> tuple[list[Job], float | None]:
        """Queued jobs whose queue wait ran out by `now`, and the next deadline after it (if any)."""
        rows = await self.db.fetchall(f"SELECT {_STATUS} FROM jobs WHERE status = ? AND queue_deadline IS NOT NULL"
                                      " AND queue_deadline <= ?", (int(JobStatus.QUEUED), now))
        nxt = await self.db.fetchone("SELECT MIN(queue_deadline) FROM jobs WHERE status = ? AND queue_deadline"
                                     " IS NOT NULL AND queue_deadline > ?", (int(JobStatus.QUEUED), now))
        return [_job_from_row(r) for r in rows], (nxt[0] if nxt else None)

    async def queued(self, environment: str | None = None, limit: int = -1) -> list[Job]:
        """Queued jobs in FIFO order (insertion order)."""
        sql, params = f"SELECT {_STATUS} FROM jobs WHERE status = ?", list[Any]([int(JobStatus.QUEUED)])
        if environment is not None:
            sql, params = sql + " AND environment = ?", [*params, environment]
        rows = await self.db.fetchall(sql + " ORDER BY rowid LIMIT ?", [*params, limit])
        return [_job_from_row(r) for r in rows]

    async def active(self) -> list[Job]:
        """Jobs past the queue and not yet terminal: the ones recovery must reconcile (their plans:
        `planned`)."""
        rows = await self.db.fetchall(
            f"SELECT {_STATUS} FROM jobs WHERE status NOT IN ({_TERMINAL_SQL}) AND status != ? ORDER BY rowid",
            (int(JobStatus.QUEUED),),
        )
        return [_job_from_row(r) for r in rows]

    async def counts(self) -> dict[tuple[str, int], int]:
        """(environment, status) → number of jobs; for environments listing and metrics."""
        rows = await self.db.fetchall("SELECT environment, status, COUNT(*) FROM jobs GROUP BY environment, status")
        return {(r[0], r[1]): r[2] for r in rows}

    async def expired(self, now: float) -> list[Job]:
        rows = await self.db.fetchall(
            f"SELECT {_STATUS} FROM jobs WHERE removed = 0 AND expires_at IS NOT NULL AND expires_at <= ?", (now,)
        )
        return [_job_from_row(r) for r in rows]

    async def prune(self, before: float, batch: int = 500) -> int:
        """Delete the rows of jobs whose results were removed (expired) before `before`, in
        batches so the writer is never held long. Returns how many went."""
        pruned = 0
        while True:
            n = await self.db.write(
                "DELETE FROM jobs WHERE job_id IN (SELECT job_id FROM jobs WHERE removed = 1 AND"
                " expires_at IS NOT NULL AND expires_at < ? LIMIT ?)", (before, batch))
            pruned += n
            if n < batch:
                return pruned

    def owner_usage(self, owner: str) -> tuple[int, int]:
        """(jobs queued or running, bytes of kept results) of an owner."""
        rows = self.db.lookup("SELECT active, kept_bytes FROM owners WHERE owner_lc = ?", (owner.lower(),))
        return (rows[0][0], rows[0][1]) if rows else (0, 0)

    async def console_jobs(self, since: float) -> tuple[list[ConsoleJob], bool]:
        """The web console's overview rows (store/console.py): limited fields, bounded."""
        return await console_jobs(self.db, since)

    async def all_ids(self) -> set[str]:
        return {r[0] for r in await self.db.fetchall("SELECT job_id FROM jobs")}

    # -- steps --------------------------------------------------------------------------------

    async def save_step(self, step: StepRecord) -> None:
        await self.db.write(
            "INSERT INTO steps (job_id, kind, state, container_name, container_id, started_at, finished_at,"
            " exit_code, oom_killed, error) VALUES (?,?,?,?,?,?,?,?,?,?)"
            " ON CONFLICT(job_id, kind) DO UPDATE SET state=excluded.state, container_id=excluded.container_id,"
            " started_at=excluded.started_at, finished_at=excluded.finished_at, exit_code=excluded.exit_code,"
            " oom_killed=excluded.oom_killed, error=excluded.error",
            (step.job_id, step.kind.value, step.state.value, step.container_name, step.container_id, step.started_at,
             step.finished_at, step.exit_code, None if step.oom_killed is None else int(step.oom_killed),
             step.error),
        )

    async def delete_step(self, job_id: str, kind: StepKind) -> None:
        await self.db.write("DELETE FROM steps WHERE job_id = ? AND kind = ?", (job_id, kind.value))

    async def steps(self, job_id: str) -> dict[StepKind, StepRecord]:
        rows = await self.db.fetchall("SELECT * FROM steps WHERE job_id = ?", (job_id,))
        return {s.kind: s for s in map(_step_from_row, rows)}

    # -- nonces (runnerd/store/nonces.py) -------------------------------------------------------

    async def nonce(self, address: str) -> str | None:
        return await self.nonces.last(address)

    async def claim_nonce(self, address: str, nonce: str) -> bool:
        return await self.nonces.claim(address, nonce)


__all__ = ["JobStore", "StepRecord", "QueueFull", "AgreementInUse", "OwnerLimit", "IllegalTransition"]
