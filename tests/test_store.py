"""runnerd/store against a real SQLite file: schema migrations, the job state machine as enforced by
`transition`, queue and agreement rules at insert, steps, and the atomic nonce compare-and-set."""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import time
import uuid

import pytest

from runnerd.domain import (
    ALLOWED_TRANSITIONS,
    TERMINAL,
    AlgorithmContainer,
    AlgorithmPlan,
    IllegalTransition,
    Job,
    JobPlan,
    JobStatus,
    LocalFile,
    PlannedJob,
    RawCode,
    RemoteFile,
    ResolvedImages,
    ResultFile,
    ResultType,
    Slot,
    StepKind,
    StepState,
)
from runnerd.store import AgreementInUse, Database, JobStore, QueueFull, StepRecord
from runnerd.store.migrations import LATEST, MIGRATIONS

S = JobStatus
OWNER = "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23"
HAPPY_PATH = [S.QUEUED, S.STARTED, S.CONFIGURING, S.PROVISIONED, S.RUNNING, S.FILTERING, S.PUBLISHING, S.COMPLETED]


def make_job(environment: str = "env", owner: str = OWNER, agreement: str | None = None,
             document_id: str = "did:op:" + "ab" * 32, created: float = 1.0) -> PlannedJob:
    return PlannedJob(
        job_id=uuid.uuid4().hex, owner=owner, document_id=document_id, environment=environment,
        agreement_id=agreement or "0x" + uuid.uuid4().hex, algo_did="raw", input_dids=[document_id],
        plan=JobPlan((), AlgorithmPlan(None, None, RawCode("print(1)"), AlgorithmContainer("python3 $ALGO", "img")),
                     network=False, secret="s"),
        date_created=created,
    )


@pytest.fixture
async def db(tmp_path):
    database = await Database.open(tmp_path / "state" / "runnerd.db")
    yield database
    await database.close()


@pytest.fixture
def store(db):
    return JobStore(db)


async def walk(store: JobStore, job_id: str, path: list[JobStatus]) -> Job:
    for status in path:
        await store.transition(job_id, status)
    job = await store.get(job_id)
    assert job is not None and job.status == (path[-1] if path else JobStatus.QUEUED)
    return job


# ------------------------------------------------------------------------------ schema


async def test_migrations_create_schema_and_set_user_version(tmp_path):
    path = tmp_path / "new" / "runnerd.db"  # the parent folder is created too
    database = await Database.open(path)
    await database.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == LATEST == len(MIGRATIONS)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"jobs", "steps", "nonces"} <= tables
        job_columns = {r[1] for r in conn.execute("PRAGMA table_info(jobs)")}
        assert {"job_id", "owner", "owner_lc", "status", "agreement_id", "expires_at", "ending", "slot"} <= job_columns
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        assert {"jobs_by_owner", "jobs_by_status", "jobs_by_agreement"} <= indexes


async def test_the_database_file_is_private(tmp_path, db):
    import os
    import stat

    path = tmp_path / "state" / "runnerd.db"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    await JobStore(db).claim_nonce(OWNER, "1")  # a write: the WAL file exists now
    for extra in (path.with_name("runnerd.db-wal"), path.with_name("runnerd.db-shm")):
        if extra.exists():
            assert stat.S_IMODE(os.stat(extra).st_mode) & 0o077 == 0, extra


async def test_wal_mode_is_on(tmp_path, db):
    with sqlite3.connect(tmp_path / "state" / "runnerd.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"


async def test_reopening_is_idempotent_and_keeps_data(tmp_path):
    path = tmp_path / "runnerd.db"
    first = await Database.open(path)
    job = make_job()
    await JobStore(first).insert(job, max_queue=10)
    assert await JobStore(first).claim_nonce(OWNER, "3")
    await first.close()
    for _ in range(2):
        again = await Database.open(path)
        try:
            store = JobStore(again)
            assert (await store.get(job.job_id)).owner == OWNER
            assert await store.nonce(OWNER) == "3"
        finally:
            await again.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == LATEST
        assert conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 1


@pytest.fixture
async def opened_connections(monkeypatch):
    """Every aiosqlite connection Database.open makes; any left open is closed afterwards."""
    import aiosqlite

    from runnerd.store import connection

    opened: list[aiosqlite.Connection] = []
    real_connect = aiosqlite.connect

    def connect(*args, **kwargs):
        conn = real_connect(*args, **kwargs)
        opened.append(conn)
        return conn

    monkeypatch.setattr(connection.aiosqlite, "connect", connect)
    yield opened
    for conn in opened:
        await conn.close()


async def test_a_newer_schema_is_refused(tmp_path, opened_connections):
    path = tmp_path / "future.db"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version={LATEST + 1}")
    with pytest.raises(RuntimeError, match="newer"):
        await Database.open(path)
    with sqlite3.connect(path) as conn:  # and left the file as it was
        assert conn.execute("PRAGMA user_version").fetchone()[0] == LATEST + 1
        assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'jobs'").fetchone() is None


async def test_a_refused_open_closes_its_connection(tmp_path, opened_connections):
    path = tmp_path / "future.db"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version={LATEST + 1}")
    with pytest.raises(RuntimeError):
        await Database.open(path)
    assert opened_connections, "Database.open made no connection"
    assert all(c._connection is None for c in opened_connections), "a connection was left open"


# ------------------------------------------------------------------------------ jobs


async def test_insert_get_roundtrip(store):
    job = make_job()
    await store.insert(job, max_queue=10)
    got = await store.get(job.job_id)
    assert got is not None
    assert (got.job_id, got.owner, got.document_id, got.environment, got.agreement_id, got.algo_did) == (
        job.job_id, job.owner, job.document_id, job.environment, job.agreement_id, job.algo_did)
    assert got.input_dids == job.input_dids
    assert not isinstance(got, PlannedJob) and not hasattr(got, "plan")  # status reads leave the (possibly
    started = await store.transition(job.job_id, S.STARTED)  # large) plan out, and say so by their type ...
    assert not hasattr(started, "plan")
    planned = await store.planned(job.job_id)  # ... the runner loads it with the job it drives
    assert isinstance(planned, PlannedJob) and planned.plan == job.plan and planned.status == S.STARTED
    assert [(await store.planned(j.job_id)).plan for j in await store.active()] == [job.plan]
    assert got.status == S.QUEUED and got.date_created == 1.0 and started.status == S.STARTED
    assert got.date_finished is None and got.stopreq == 0 and got.removed == 0
    assert got.results == [] and got.termination is None and got.error is None and got.slot is None
    assert got.ending is None
    assert await store.get("0" * 32) is None
    await walk(store, job.job_id, [S.INTERRUPTED])
    assert await store.planned(job.job_id) is None  # an ended job's plan is dropped: nothing to run


# What the runner of version 0.x (before #12) wrote: the plan as an untyped dict, and `slot` holding
# the scheduler's cores and GPUs together with the images the runner resolved.
OLD_PLAN = {
    "inputs": [{"did": "did:op:" + "ab" * 32, "ddo": {"id": "did:op:" + "ab" * 32}, "userdata": {"u": 1},
                "files": [{"type": "file", "path": "/srv/assets/a.csv"},
                          {"type": "url", "url": "https://files.example/b.csv", "sha256": None}]}],
    "algorithm": {"did": "did:op:" + "cd" * 32, "ddo": {"id": "did:op:" + "cd" * 32},
                  "code": {"type": "file", "path": "/srv/assets/algo.py", "sha256": "ef" * 32},
                  "entrypoint": "python3 $ALGO", "image": "python", "tag": "3.11", "checksum": "",
                  "algocustomdata": {"k": [1, 2]}, "userdata": None},
    "network": True, "secret": "0123abcd",
}
OLD_SLOT = {"image": "python@sha256:" + "9" * 64, "volumes": ["/var/lib/x"], "helperVolumes": [],
            "cpuset": "0,1", "gpus": ["GPU-a"]}


async def test_rows_of_the_previous_schema_migrate_and_their_plans_load(tmp_path):
    """Crash recovery reads rows written before the typed plan (#12): migration 0008 splits `slot`
    into the resources held and the images resolved, and the stored plan loads as a JobPlan."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        for _name, sql in MIGRATIONS[:7]:
            conn.executescript(sql)
        conn.execute("PRAGMA user_version=7")
        for job_id, slot in (("a", OLD_SLOT), ("b", {"cpuset": None, "gpus": []}), ("c", None)):
            conn.execute("INSERT INTO jobs (job_id, owner, owner_lc, document_id, environment, agreement_id,"
                         " algo_did, input_dids, spec, status, date_created, slot)"
                         " VALUES (?,'o','o','d','e','x','raw','[]',?,40,1,?)",
                         (job_id, json.dumps(OLD_PLAN), slot and json.dumps(slot)))
    database = await Database.open(path)
    try:
        store = JobStore(database)
        a = await store.planned("a")
        assert a.slot == Slot("0,1", ("GPU-a",))
        assert a.images == ResolvedImages("python@sha256:" + "9" * 64, ("/var/lib/x",), ())
        b, c = await store.get("b"), await store.get("c")
        assert (b.slot, b.images) == (Slot(None, ()), None) and (c.slot, c.images) == (None, None)
        plan = a.plan
        assert [i.files for i in plan.inputs] == [(LocalFile("/srv/assets/a.csv"),
                                                   RemoteFile("https://files.example/b.csv"))]
        assert plan.inputs[0].userdata == {"u": 1} and plan.inputs[0].ddo == OLD_PLAN["inputs"][0]["ddo"]
        assert plan.algorithm.code == LocalFile("/srv/assets/algo.py", "ef" * 32)
        assert plan.algorithm.container == AlgorithmContainer("python3 $ALGO", "python", "3.11", "")
        assert plan.algorithm.algocustomdata == {"k": [1, 2]} and plan.algorithm.did == "did:op:" + "cd" * 32
        assert plan.network is True and plan.secret == "0123abcd"
        assert json.loads(plan.to_json()) == OLD_PLAN  # and it is stored again in the same form
    finally:
        await database.close()
    with sqlite3.connect(path) as conn:
        assert json.loads(conn.execute("SELECT slot FROM jobs WHERE job_id = 'a'").fetchone()[0]) == {
            "cpuset": "0,1", "gpus": ["GPU-a"]}


async def test_a_plan_that_cannot_be_read_is_an_error_not_an_empty_plan(store):
    job = make_job()
    await store.insert(job, max_queue=10)
    await store.db.write("UPDATE jobs SET spec = ? WHERE job_id = ?", ('{"inputs": []}', job.job_id))
    with pytest.raises(ValueError, match=f"plan of job {job.job_id}"):
        await store.planned(job.job_id)  # the runner ends such a job at 76 (an internal error)
    with pytest.raises(ValueError, match="never rewritten"):
        await store.update(job.job_id, spec=job.plan)  # written once, at insert; only ever dropped


async def test_list_for_owner_is_case_insensitive_and_filters(store):
    a = make_job(document_id="did:op:" + "aa" * 32, created=1)
    b = make_job(document_id="did:op:" + "bb" * 32, created=2)
    other = make_job(owner="0x" + "9" * 40)
    for job in (b, a, other):
        await store.insert(job, max_queue=10)
    for spelling in (OWNER, OWNER.lower(), OWNER.upper().replace("0X", "0x")):
        assert [j.job_id for j in await store.list_for_owner(spelling)] == [a.job_id, b.job_id]
    assert [j.job_id for j in await store.list_for_owner(OWNER, job_id=b.job_id)] == [b.job_id]
    assert [j.job_id for j in await store.list_for_owner(OWNER, document_id=a.document_id)] == [a.job_id]
    assert await store.list_for_owner(OWNER, job_id=other.job_id) == []  # never another owner's job
    assert await store.list_for_owner("0x" + "1" * 40) == []


async def test_legal_path_to_completed(store):
    job = make_job()
    await store.insert(job, max_queue=10)
    results = [ResultFile("out.txt", 3, ResultType.OUTPUT, "results/outputs/out.txt")]
    for status in HAPPY_PATH[1:]:
        extra = {"results": results, "date_finished": 9.5} if status == S.COMPLETED else {}
        moved = await store.transition(job.job_id, status, **extra)
        assert moved.status == status
        assert (await store.get(job.job_id)).status == status
    final = await store.get(job.job_id)
    assert final.terminal and final.results == results and final.date_finished == 9.5


@pytest.mark.parametrize("path, illegal", [
    (HAPPY_PATH, S.RUNNING),  # 70 -> 40
    ([S.QUEUED], S.RUNNING),  # 1 -> 40
    ([S.QUEUED], S.COMPLETED),  # 1 -> 70
    ([S.QUEUED, S.STARTED, S.CONFIGURING, S.PROVISIONED, S.RUNNING], S.COMPLETED),  # 40 -> 70 skips publishing
    ([S.QUEUED, S.STARTED], S.QUEUED),  # backwards
    ([S.QUEUED, S.STARTED, S.STOPPED], S.STARTED),  # out of a terminal status
    ([S.QUEUED, S.STARTED, S.CONFIGURING, S.PROVISIONED, S.RUNNING], S.DATA_PROVISIONING_FAILED),
    ([S.QUEUED], S.DELETED),  # 8 is never stored
])
async def test_illegal_transition_raises_and_changes_nothing(store, path, illegal):
    job = make_job()
    await store.insert(job, max_queue=10)
    before = await walk(store, job.job_id, path[1:]) if len(path) > 1 else await store.get(job.job_id)
    with pytest.raises(IllegalTransition) as info:
        await store.transition(job.job_id, illegal, error="must not be written", stopreq=1)
    assert (info.value.current, info.value.wanted) == (path[-1], illegal)
    after = await store.get(job.job_id)
    assert after.status == before.status == path[-1]
    assert after.error is None and after.stopreq == 0


async def test_every_transition_the_store_allows_is_in_the_table(store):
    """Exhaustively: for each status reachable on the happy path, the store accepts exactly
    ALLOWED_TRANSITIONS[status] (besides staying put)."""
    for depth, current in enumerate(HAPPY_PATH):
        for wanted in JobStatus:
            if wanted == current:
                continue
            job = make_job()
            await store.insert(job, max_queue=1000)
            await walk(store, job.job_id, HAPPY_PATH[1:depth + 1])
            legal = wanted in ALLOWED_TRANSITIONS[current]
            if legal:
                assert (await store.transition(job.job_id, wanted)).status == wanted
            else:
                with pytest.raises(IllegalTransition):
                    await store.transition(job.job_id, wanted)
                assert (await store.get(job.job_id)).status == current


async def test_transition_compare_and_set(store):
    job = make_job()
    await store.insert(job, max_queue=10)
    with pytest.raises(IllegalTransition):
        await store.transition(job.job_id, S.CONFIGURING, expect=S.STARTED)  # it is still at 1
    assert (await store.get(job.job_id)).status == S.QUEUED
    moved = await store.transition(job.job_id, S.STARTED, expect=S.QUEUED, slot=Slot("0", ()))
    assert moved.status == S.STARTED and moved.slot == Slot("0", ()) and moved.images is None
    # a second admission with the same expectation loses the race
    with pytest.raises(IllegalTransition):
        await store.transition(job.job_id, S.STARTED, expect=S.QUEUED)
    # stop-before-admission vs admission: only one of the two compare-and-sets wins
    other = make_job()
    await store.insert(other, max_queue=10)
    outcomes = await asyncio.gather(
        store.transition(other.job_id, S.STARTED, expect=S.QUEUED),
        store.transition(other.job_id, S.STOPPED, expect=S.QUEUED),
        return_exceptions=True,
    )
    assert sum(isinstance(o, Job) for o in outcomes) == 1
    assert sum(isinstance(o, IllegalTransition) for o in outcomes) == 1


async def test_transition_of_unknown_job_and_unknown_column(store):
    with pytest.raises(KeyError):
        await store.transition("f" * 32, S.STARTED)
    job = make_job()
    await store.insert(job, max_queue=10)
    with pytest.raises(ValueError):
        await store.transition(job.job_id, S.STARTED, status_text="nope")
    with pytest.raises(ValueError):
        await store.update(job.job_id, owner="0x" + "0" * 40)
    with pytest.raises(ValueError):
        await store.update(job.job_id)
    assert (await store.get(job.job_id)).status == S.QUEUED


async def test_transition_fields_are_encoded(store):
    job = make_job()
    await store.insert(job, max_queue=10)
    await walk(store, job.job_id, HAPPY_PATH[1:5])
    moved = await store.transition(job.job_id, S.FILTERING, ending=S.OUT_OF_MEMORY, error="oom",
                                   termination={"exitCode": 137, "oomKilled": True, "reason": "oom"})
    assert moved.ending == S.OUT_OF_MEMORY and moved.error == "oom"
    assert moved.termination == {"exitCode": 137, "oomKilled": True, "reason": "oom"}
    got = await store.get(job.job_id)
    assert got.ending == S.OUT_OF_MEMORY and got.termination["oomKilled"] is True


async def test_queue_full(store):
    """The bound is on jobs in flight per environment: maxJobs running + maxQueue waiting."""
    for _ in range(3):
        await store.insert(make_job("small"), max_queue=2, max_jobs=1)
    with pytest.raises(QueueFull):
        await store.insert(make_job("small"), max_queue=2, max_jobs=1)
    await store.insert(make_job("other"), max_queue=2, max_jobs=1)  # per environment
    first = (await store.queued("small"))[0]
    await store.transition(first.job_id, S.STARTED)  # running still counts: it holds the slot
    with pytest.raises(QueueFull):
        await store.insert(make_job("small"), max_queue=2, max_jobs=1)
    await walk(store, first.job_id, [S.CONFIGURING, S.DATA_PROVISIONING_FAILED])  # terminal: place freed
    await store.insert(make_job("small"), max_queue=2, max_jobs=1)
    assert len(await store.queued("small")) == 3


async def test_max_queue_zero_admits_only_into_a_free_slot(store):
    await store.insert(make_job("solo"), max_queue=0, max_jobs=1)
    with pytest.raises(QueueFull):
        await store.insert(make_job("solo"), max_queue=0, max_jobs=1)


async def test_agreement_in_use_while_non_terminal(store):
    first = make_job(agreement="0xorder")
    await store.insert(first, max_queue=10)
    with pytest.raises(AgreementInUse):
        await store.insert(make_job(agreement="0xorder"), max_queue=10)
    await walk(store, first.job_id, [S.STARTED, S.CONFIGURING])
    with pytest.raises(AgreementInUse):
        await store.insert(make_job(agreement="0xorder"), max_queue=10)
    await store.transition(first.job_id, S.STOPPED)
    second = make_job(agreement="0xorder")
    await store.insert(second, max_queue=10)  # allowed once the first is terminal
    assert (await store.get(second.job_id)).agreement_id == "0xorder"
    assert len(await store.all_ids()) == 2


async def test_request_stop_and_delete(store):
    job = make_job()
    await store.insert(job, max_queue=10)
    assert await store.request_stop(job.job_id)
    assert (await store.get(job.job_id)).stopreq == 1
    await walk(store, job.job_id, HAPPY_PATH[1:])
    assert not await store.request_stop(job.job_id)  # terminal: nothing to stop
    await store.delete(job.job_id)
    assert await store.get(job.job_id) is None
    assert not await store.request_stop(job.job_id)


async def test_queued_fifo_and_active(store):
    jobs = [make_job("e") for _ in range(4)]
    for job in jobs:
        await store.insert(job, max_queue=10)
    assert [j.job_id for j in await store.queued("e")] == [j.job_id for j in jobs]
    assert [j.job_id for j in await store.queued("e", limit=1)] == [jobs[0].job_id]
    assert await store.queued("nope") == []
    await walk(store, jobs[1].job_id, [S.STARTED, S.CONFIGURING])
    await walk(store, jobs[2].job_id, HAPPY_PATH[1:])
    assert [j.job_id for j in await store.active()] == [jobs[1].job_id]
    assert [j.job_id for j in await store.queued()] == [jobs[0].job_id, jobs[3].job_id]


# ------------------------------------------------------------------------------ steps


async def test_steps_save_update_delete(store):
    job = make_job()
    await store.insert(job, max_queue=10)
    assert await store.steps(job.job_id) == {}
    rec = StepRecord(job.job_id, StepKind.ALGORITHM, StepState.CREATING, "runnerd-x-algorithm")
    await store.save_step(rec)
    assert (await store.steps(job.job_id))[StepKind.ALGORITHM].state == StepState.CREATING
    rec.state, rec.container_id, rec.started_at = StepState.RUNNING, "c0ffee", 5.0
    await store.save_step(rec)  # upsert, not a second row
    rec.state, rec.exit_code, rec.oom_killed, rec.finished_at = StepState.EXITED, 137, True, 6.0
    await store.save_step(rec)
    await store.save_step(StepRecord(job.job_id, StepKind.PROVISION, StepState.EXITED, "p", "p1", exit_code=0,
                                     oom_killed=False))
    steps = await store.steps(job.job_id)
    assert set(steps) == {StepKind.ALGORITHM, StepKind.PROVISION}
    algo = steps[StepKind.ALGORITHM]
    assert (algo.state, algo.container_id, algo.exit_code, algo.oom_killed, algo.started_at, algo.finished_at) == (
        StepState.EXITED, "c0ffee", 137, True, 5.0, 6.0)
    assert steps[StepKind.PROVISION].oom_killed is False and steps[StepKind.PROVISION].exit_code == 0
    await store.delete_step(job.job_id, StepKind.PROVISION)
    assert set(await store.steps(job.job_id)) == {StepKind.ALGORITHM}
    # deleting the job deletes its steps (foreign key cascade)
    await store.delete(job.job_id)
    assert await store.steps(job.job_id) == {}


async def test_step_of_unknown_job_is_refused(store):
    with pytest.raises(sqlite3.IntegrityError):
        await store.save_step(StepRecord("no-such-job", StepKind.FILTER, StepState.CREATING, "n"))


# ------------------------------------------------------------------------------ nonces


async def test_claim_nonce_is_strictly_greater(store):
    addr = "0xAbC0000000000000000000000000000000000001"
    assert await store.nonce(addr) is None
    assert not await store.claim_nonce(addr, "0")  # a new address is at 0: 0 is not greater
    assert await store.nonce(addr) is None
    assert await store.claim_nonce(addr, "5")
    assert not await store.claim_nonce(addr, "5")  # replay
    assert not await store.claim_nonce(addr.lower(), "5")  # the same address in another case
    assert not await store.claim_nonce(addr, "4")
    assert await store.claim_nonce(addr.upper().replace("0X", "0x"), "6")
    assert await store.nonce(addr) == "6" and await store.nonce(addr.lower()) == "6"


@pytest.mark.parametrize("lower, higher", [
    ("5", "6"),
    ("9", "10"),  # decimal, not text, comparison
    ("1693212345678.123", "1693212345679"),
    ("1693212345678", "1693212345678.5"),
    ("1693212345678.123", "1693212345678123456"),  # ms float string, then a 19-digit time_ns
    ("1693212345678123456", "1693212345678123457"),
    ("99", "100.0"),
])
async def test_claim_nonce_compares_decimals_across_formats(store, lower, higher):
    addr = "0x" + uuid.uuid4().hex[:40].ljust(40, "0")
    assert await store.claim_nonce(addr, lower)
    assert not await store.claim_nonce(addr, lower)
    assert await store.claim_nonce(addr, higher)
    assert await store.nonce(addr) == higher  # stored as the exact text received
    assert not await store.claim_nonce(addr, lower)
    assert not await store.claim_nonce(addr, higher)


async def test_claim_nonce_equal_value_in_another_spelling_is_a_replay(store):
    addr = "0x" + "7" * 40
    assert await store.claim_nonce(addr, "10")
    assert not await store.claim_nonce(addr, "10.0")
    assert not await store.claim_nonce(addr, "010")


async def test_fifty_concurrent_claims_of_one_nonce_yield_exactly_one_true(store):
    addr = "0x" + "5" * 40
    results = await asyncio.gather(*(store.claim_nonce(addr, "1693212345678123456") for _ in range(50)))
    assert results.count(True) == 1
    assert await store.nonce(addr) == "1693212345678123456"


async def test_concurrent_claims_of_different_nonces_end_at_the_largest(store):
    addr = "0x" + "6" * 40
    nonces = [str(n) for n in range(1, 41)]
    random.Random(7).shuffle(nonces)
    results = await asyncio.gather(*(store.claim_nonce(addr, n) for n in nonces))
    assert await store.nonce(addr) == "40"
    won = [n for n, ok in zip(nonces, results) if ok]
    # each winner was greater than every earlier winner (a strictly increasing chain)
    assert [int(n) for n in won] == sorted(int(n) for n in won)
    assert "40" in won


# ------------------------------------------------------------------------------ expiry and counts


async def test_expired(store):
    old, fresh, never, gone = (make_job() for _ in range(4))
    for job in (old, fresh, never, gone):
        await store.insert(job, max_queue=10)
    await store.update(old.job_id, expires_at=100.0)
    await store.update(fresh.job_id, expires_at=300.0)
    await store.update(gone.job_id, expires_at=50.0, removed=1)
    assert [j.job_id for j in await store.expired(200.0)] == [old.job_id]
    assert {j.job_id for j in await store.expired(300.0)} == {old.job_id, fresh.job_id}
    assert await store.expired(10.0) == []
    await store.update(old.job_id, removed=1, results=[])
    assert [j.job_id for j in await store.expired(200.0)] == []


async def test_counts(store):
    assert await store.counts() == {}
    a1, a2, a3, b1 = make_job("a"), make_job("a"), make_job("a"), make_job("b")
    for job in (a1, a2, a3, b1):
        await store.insert(job, max_queue=10)
    await walk(store, a1.job_id, HAPPY_PATH[1:])
    await walk(store, a2.job_id, [S.STARTED, S.CONFIGURING])
    assert await store.counts() == {("a", 70): 1, ("a", 20): 1, ("a", 1): 1, ("b", 1): 1}
    assert all(status in TERMINAL or status in ALLOWED_TRANSITIONS for (_, status) in await store.counts())


async def test_status_history_records_every_change_once(store):
    job = make_job()
    await store.insert(job, max_queue=10)
    await walk(store, job.job_id, [S.STARTED, S.CONFIGURING])
    await store.transition(job.job_id, S.CONFIGURING, images=ResolvedImages("x"))  # same status: no new entry
    await walk(store, job.job_id, [S.DATA_PROVISIONING_FAILED])
    history = (await store.get(job.job_id)).history
    assert [s for s, _ in history] == [1, 10, 20, 31]
    times = [t for _, t in history]
    assert times == sorted(times)


# ------------------------------------------------------------------------------ auth tokens (#11)


async def test_an_addresss_tokens_are_trimmed_through_an_index_not_a_table_scan(db):
    """createAuthToken keeps an address's newest tokens. Without an index on the address that
    trim scanned every address's tokens inside the one write transaction: 0.2 s per request at
    500,000 rows, which 5,000 self-made keys of 100 tokens each reach."""
    from runnerd.store.tokens import MAX_TOKENS_PER_ADDRESS, TRIM_SQL, AuthTokens

    plan = [r[3] for r in await db.fetchall("EXPLAIN QUERY PLAN " + TRIM_SQL, ("0xa", "0xa", 100))]
    assert plan and not [step for step in plan if step.startswith("SCAN")], plan
    tokens, until = AuthTokens(db), time.time() + 600
    for i in range(MAX_TOKENS_PER_ADDRESS + 2):
        await tokens.add(f"t{i}", "0xAbC", 1000.0 + i, until)
    await tokens.add("other", "0xdef", 1.0, until)
    assert tokens.address_of("t0") is None and tokens.address_of("t1") is None  # the oldest two went
    assert tokens.address_of("t2") == tokens.address_of(f"t{MAX_TOKENS_PER_ADDRESS + 1}") == "0xabc"
    assert tokens.address_of("other") == "0xdef"
