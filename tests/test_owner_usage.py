"""Issue #10 items 8 and 12 at the store: per-owner caps checked atomically with the insert, the
start-rate bucket (with an injected clock), specs dropped when a job ends, old rows pruned with
the file shrinking, and the writer's durability level."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid

import pytest

from runnerd.domain import TERMINAL, AlgorithmContainer, AlgorithmPlan, JobPlan, JobStatus, PlannedJob, RawCode
from runnerd.engine.owners import StartRate
from runnerd.engine.sweeper import Sweeper
from runnerd.store import Database, JobStore, OwnerLimit
from runnerd.store import migrations

S = JobStatus
A, B = "0xAAaa000000000000000000000000000000000001", "0xbbbb000000000000000000000000000000000002"
TO_END = [S.STARTED, S.CONFIGURING, S.PROVISIONED, S.RUNNING, S.FILTERING, S.PUBLISHING]


def make_job(owner: str = A, spec_bytes: int = 100) -> PlannedJob:
    algorithm = AlgorithmPlan(None, None, RawCode("x" * spec_bytes), AlgorithmContainer("python3 $ALGO", "img"))
    return PlannedJob(job_id=uuid.uuid4().hex, owner=owner, document_id="did:op:" + "ab" * 32, environment="env",
                      agreement_id="0x" + uuid.uuid4().hex, algo_did="raw", input_dids=[],
                      plan=JobPlan((), algorithm, network=False, secret="s3cr3t"), date_created=1.0)


@pytest.fixture
async def db(tmp_path):
    database = await Database.open(tmp_path / "runnerd.db")
    yield database
    await database.close()


@pytest.fixture
def store(db):
    return JobStore(db)


async def finish(store: JobStore, job_id: str, result_bytes: int = 0, expires_at: float = 1000.0) -> None:
    for status in TO_END:
        await store.transition(job_id, status)
    await store.transition(job_id, S.COMPLETED, result_bytes=result_bytes, expires_at=expires_at,
                           date_finished=1.0)


def raw_row(db_path, job_id: str):
    with sqlite3.connect(db_path) as conn:
        return conn.execute("SELECT spec FROM jobs WHERE job_id = ?", (job_id,)).fetchone()


# -- jobs in flight per owner -------------------------------------------------------------------


async def test_an_owner_at_its_cap_is_refused_while_another_starts(store):
    for _ in range(2):
        await store.insert(make_job(A), max_queue=100, owner_jobs=2)
    with pytest.raises(OwnerLimit) as refused:
        await store.insert(make_job(A.lower()), max_queue=100, owner_jobs=2)  # the address in any case
    assert (refused.value.limit, refused.value.used, refused.value.cap) == ("jobs", 2, 2)
    await store.insert(make_job(B), max_queue=100, owner_jobs=2)
    assert store.owner_usage(A) == (2, 0) and store.owner_usage(B) == (1, 0)


async def test_concurrent_starts_of_one_owner_cannot_pass_the_cap_together(store):
    outcomes = await asyncio.gather(*(store.insert(make_job(A), max_queue=100, owner_jobs=3) for _ in range(20)),
                                    return_exceptions=True)
    assert sum(o is None for o in outcomes) == 3
    assert all(isinstance(o, OwnerLimit) for o in outcomes if o is not None)
    assert store.owner_usage(A) == (3, 0)


async def test_ending_stopping_and_deleting_free_the_owners_places(store):
    jobs = [make_job(A) for _ in range(3)]
    for job in jobs:
        await store.insert(job, max_queue=100, owner_jobs=3)
    await finish(store, jobs[0].job_id)
    await store.transition(jobs[1].job_id, S.STOPPED)  # a queued job stopped
    await store.delete(jobs[2].job_id)
    assert store.owner_usage(A) == (0, 0)
    await store.insert(make_job(A), max_queue=100, owner_jobs=1)


# -- bytes of kept results per owner ------------------------------------------------------------


async def test_results_budget_refuses_while_exceeded_and_delete_or_expiry_frees_it(store):
    first, second = make_job(A), make_job(A)
    await store.insert(first, max_queue=100, owner_bytes=1000)
    await store.insert(second, max_queue=100, owner_bytes=1000)  # nothing kept yet
    await finish(store, first.job_id, result_bytes=800)
    await finish(store, second.job_id, result_bytes=800)
    assert store.owner_usage(A) == (0, 1600)
    with pytest.raises(OwnerLimit) as refused:
        await store.insert(make_job(A), max_queue=100, owner_bytes=1000)
    assert (refused.value.limit, refused.value.used, refused.value.cap) == ("results", 1600, 1000)
    await store.insert(make_job(B), max_queue=100, owner_bytes=1000)  # another owner is not affected
    await store.delete(first.job_id)  # DELETE: its results are gone
    assert store.owner_usage(A) == (0, 800)
    await store.update(second.job_id, removed=1, results=[])  # expiry: the sweeper removed them
    assert store.owner_usage(A)[1] == 0
    await store.insert(make_job(A), max_queue=100, owner_bytes=1000)


# -- the start rate -----------------------------------------------------------------------------


def test_the_n_plus_first_start_in_a_minute_is_refused_and_time_refills():
    now = [100.0]
    rate = StartRate(3, clock=lambda: now[0])
    assert [rate.take(A) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = rate.take(A)
    assert wait == pytest.approx(20.0)  # one token every 60/3 s
    assert rate.take(B) == 0.0  # per owner
    now[0] += 19.0
    assert rate.take(A) == pytest.approx(1.0)
    now[0] += 1.0
    assert rate.take(A) == 0.0 and rate.take(A) > 0
    rate.give_back(A)  # a start refused for another reason does not count
    assert rate.take(A) == 0.0


def test_no_rate_limit_when_zero_and_full_buckets_are_forgotten():
    assert all(StartRate(0).take(A) == 0.0 for _ in range(1000))
    now = [0.0]
    rate = StartRate(1, clock=lambda: now[0])
    for i in range(20_001):
        rate.take(f"0x{i:040x}")
        now[0] += 0.01  # 200 s in all: the first owners' buckets are full again
    assert len(rate._buckets) < 20_001


# -- specs dropped when a job ends --------------------------------------------------------------


async def test_a_finished_jobs_spec_is_dropped_at_once_and_a_running_one_keeps_it(tmp_path, db, store):
    done, running = make_job(A, spec_bytes=100_000), make_job(A, spec_bytes=100_000)
    for job in (done, running):
        await store.insert(job, max_queue=100)
    await finish(store, done.job_id, expires_at=10**12)  # results kept for a long time yet
    await store.transition(running.job_id, S.STARTED)
    assert raw_row(tmp_path / "runnerd.db", done.job_id) == ("{}",)
    assert "s3cr3t" in raw_row(tmp_path / "runnerd.db", running.job_id)[0]  # the runner still needs it
    ended = await store.get(done.job_id)
    assert ended.status == S.COMPLETED and ended.removed == 0  # status is still served


# -- old rows pruned, the file shrinks ----------------------------------------------------------


async def test_the_sweeper_prunes_old_expired_rows_and_the_file_shrinks(tmp_path, db, store):
    path = tmp_path / "runnerd.db"
    old = [make_job(A) for _ in range(1500)]
    await store.import_jobs(old)
    await store.db.write("UPDATE jobs SET status = 70, results = ?, error = ?", (json.dumps([]), "e" * 2000))
    recent = make_job(B)
    await store.insert(recent, max_queue=10)
    await finish(store, recent.job_id, expires_at=950.0)
    await store.db.write("UPDATE jobs SET removed = 1, expires_at = 100.0 WHERE job_id != ?", (recent.job_id,))
    await store.update(recent.job_id, removed=1)
    await store.db.reclaim()
    before = path.stat().st_size
    sweeper = Sweeper(store, runtime=None, workspace=None, live_ids=set, grace=0, interval=60, retention=500)
    assert await sweeper.prune(now=1000.0) == 1500  # expired at 100 (> 500 s ago); not the one of 950
    assert await store.all_ids() == {recent.job_id}
    assert path.stat().st_size < before / 4, (before, path.stat().st_size)
    wal = path.with_name("runnerd.db-wal")
    assert not wal.exists() or wal.stat().st_size < before / 4
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA auto_vacuum").fetchone() == (2,)  # incremental
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


async def test_an_existing_database_is_migrated(tmp_path):
    """A file of schema 2 with jobs in it: usage counted, finished specs dropped, auto_vacuum on."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        for _name, sql in migrations.MIGRATIONS[:2]:
            conn.executescript(sql)
        conn.execute("PRAGMA user_version=2")
        rows = [("a", A.lower(), 1, '[{"filename": "f", "filesize": 300, "type": "output", "path": "p"}]', 0),
                ("b", A.lower(), 70, '[{"filename": "f", "filesize": 500, "type": "output", "path": "p"}]', 0),
                ("c", A.lower(), 70, "[]", 1)]
        for job_id, owner, status, results, removed in rows:
            conn.execute("INSERT INTO jobs (job_id, owner, owner_lc, document_id, environment, agreement_id,"
                         " algo_did, input_dids, spec, status, date_created, results, removed)"
                         " VALUES (?,?,?,'d','e','x','raw','[]','{\"secret\": 1}',?,1,?,?)",
                         (job_id, owner, owner, status, results, removed))
    database = await Database.open(path)
    try:
        store = JobStore(database)
        assert store.owner_usage(A) == (1, 800)  # a queued; b's kept 500 bytes and a's 300 (as listed)
    finally:
        await database.close()
    with sqlite3.connect(path) as conn:
        assert dict(conn.execute("SELECT job_id, spec FROM jobs")) == {"a": '{"secret": 1}', "b": "{}", "c": "{}"}
        assert conn.execute("PRAGMA auto_vacuum").fetchone() == (2,)
        assert conn.execute("PRAGMA user_version").fetchone() == (migrations.LATEST,)


def test_the_migrations_terminal_list_is_the_domains():
    assert {int(s) for s in migrations._TERMINAL.split(",")} == {int(s) for s in TERMINAL}


# -- durability (item 12) -----------------------------------------------------------------------


async def test_the_writer_commits_with_synchronous_full(db):
    """WAL + NORMAL loses the last commits on power loss (claimed nonces, accepted jobs): FULL."""
    async with db._writer.execute("PRAGMA synchronous") as cursor:
        assert tuple(await cursor.fetchone()) == (2,)
    async with db._writer.execute("PRAGMA journal_mode") as cursor:
        assert tuple(await cursor.fetchone()) == ("wal",)


class _SlowCommit:
    """The writer connection, with COMMIT held until `release` is set."""

    def __init__(self, conn, release: asyncio.Event, seen: list[str]):
        self._conn, self._release, self._seen = conn, release, seen
        self.asked = asyncio.Event()

    def __getattr__(self, name):
        return getattr(self._conn, name)

    def execute(self, sql, *args):
        if sql == "COMMIT":
            return self._commit()
        return self._conn.execute(sql, *args)

    async def _commit(self):
        self._seen.append("commit asked")
        self.asked.set()
        await self._release.wait()
        result = await self._conn.execute("COMMIT")
        self._seen.append("committed")
        return result


async def test_a_nonce_claim_and_an_insert_return_only_after_their_commit(db, store):
    release, seen = asyncio.Event(), []
    db._writer = slow = _SlowCommit(db._writer, release, seen)
    claim = asyncio.ensure_future(store.claim_nonce(A, "5"))
    insert = asyncio.ensure_future(store.insert(make_job(A), max_queue=10))
    await asyncio.wait_for(slow.asked.wait(), 30)  # the first commit is held: neither can have returned,
    # and the other one waits for the writer (it never asks a commit of its own while the first is open)
    assert seen == ["commit asked"] and not claim.done() and not insert.done()
    release.set()
    assert await claim is True
    await insert
    assert seen.count("committed") == 2
    db._writer = db._writer._conn
