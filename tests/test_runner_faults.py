"""The engine's error paths that real Docker cannot produce on demand, driven through the real
Engine → Scheduler → JobRunner → StepDriver code with the in-memory FakeRuntime (tests/fakes.py),
a real SQLite store and a real catalog and workspace in tmp_path (diskQuota none: no mounts).

Every test also checks the status sequence the engine announced through its Hooks: each change
must be a legal transition of domain.ALLOWED_TRANSITIONS, and the last one the job's stored status.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from runnerd.catalog import Catalog
from runnerd.clock import SYSTEM, Clock
from runnerd.config import Settings, parse_config
from runnerd.domain import ALLOWED_TRANSITIONS, Job, JobStatus, StepKind, StepState
from runnerd.engine.runner import Hooks
from runnerd.engine.service import Engine
from runnerd.engine.steps import _WATCH_PING as WATCH_PING
from runnerd.engine.steps import DOCKER_SHUTDOWN_WATCH
from runnerd.errors import BadRequest
from runnerd.store import Database, JobStore
from tests.fakes import FakeRuntime, Outcome
from tests.helpers import dataset, raw

S = JobStatus
HELPER = "fake/helper:1"
ALGO = "fake/algo:1"
OWNER = "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23"
HAPPY = [1, 10, 20, 30, 40, 50, 60, 70]
WAIT_LIMIT = 30  # a safety net against a hang, not a timing assertion


@dataclass
class StatusLog:
    """The Hooks status callback: (old, new) per announced change, per job."""

    changes: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    also: Callable[[Job, JobStatus], None] | None = None  # a test's own reaction to a status change

    def __call__(self, job: Job, old: JobStatus) -> None:
        self.changes.setdefault(job.job_id, []).append((int(old), int(job.status)))
        if self.also is not None:
            self.also(job, old)

    def sequence(self, job_id: str) -> list[int]:
        """The statuses the job went through, checked to be legal one after another."""
        return self.assert_legal(job_id)

    def assert_legal(self, job_id: str) -> list[int]:
        changes = self.changes.get(job_id, [])
        assert changes, f"no status was announced for {job_id}"
        assert changes[0] == (1, 1), f"a job is first announced queued: {changes}"
        previous = 1
        for old, new in changes[1:]:
            assert old == previous, f"announced {old}->{new} after reaching {previous}: {changes}"
            assert S(new) in ALLOWED_TRANSITIONS[S(old)], f"illegal transition {old}->{new}: {changes}"
            previous = new
        return [1] + [new for _, new in changes[1:]]


@dataclass
class Rig:
    engine: Engine
    store: JobStore
    fake: FakeRuntime
    assets: Path
    data: Path
    statuses: StatusLog
    dataset_did: str  # a URL dataset: every job runs all three steps (the fake fetches nothing)
    settings: Settings | None = None
    local_did: str = ""  # a local file: nothing to download, no provision container
    clock: Clock = SYSTEM  # a test that asks for the `fake_clock` fixture gets its rig on it

    async def restart(self, while_down: Callable[[], None] | None = None) -> None:
        """What a daemon restart does to the engine: shut it down (containers keep running), then
        start a new one on the same database, Docker and data dir; recovery adopts in-flight jobs.
        `while_down` happens between the two (to Docker, while runnerd is not watching)."""
        await self.engine.shutdown()
        if while_down is not None:
            while_down()
        self.engine = Engine(self.settings, self.store, self.fake, Catalog(self.assets), self.data,
                             Hooks(status=self.statuses), cores=[0, 1], clock=self.clock)
        await self.engine.start()

    async def submit(self, algorithm: dict | None = None, did: str | None = None) -> Job:
        params = {
            "environment": "env",
            "dataset": {"documentId": did or self.dataset_did, "serviceId": "compute",
                        "transferTxId": "0x" + uuid.uuid4().hex},
            "algorithm": algorithm or raw("print('hello from the algorithm')", image=ALGO),
        }
        return await self.engine.submit(params, OWNER)

    async def wait_for(self, job_id: str, statuses: set[int] | None = None) -> Job:
        """Poll the store until the job is terminal (or in one of `statuses`)."""

        async def poll() -> Job:
            while True:
                job = await self.store.get(job_id)
                if job is not None and (job.status in statuses if statuses else job.terminal):
                    return job
                await asyncio.sleep(0.02)

        return await asyncio.wait_for(poll(), WAIT_LIMIT)

    async def finished(self, job_id: str) -> Job:
        """Wait until the job is terminal and its runner task is gone; check its announced statuses."""
        job = await self.wait_for(job_id)
        await asyncio.wait_for(self._runner_gone(job_id), WAIT_LIMIT)
        sequence = self.statuses.assert_legal(job_id)
        assert sequence[-1] == int(job.status), (sequence, job.status)
        assert job.date_finished is not None and job.date_finished >= job.date_created
        return job

    async def _runner_gone(self, job_id: str) -> None:
        while job_id in self.engine.scheduler.live:
            await asyncio.sleep(0.02)

    def log_text(self, job_id: str, name: str = "algorithm.log") -> str:
        path = self.data / "jobs" / job_id / "logs" / name
        return path.read_text() if path.exists() else ""


@pytest.fixture
async def rig(tmp_path, request):
    env = {"id": "env", "nCPU": 1, "ramGB": 0.25, "diskGB": 0.05, "diskQuota": "none", "maxJobs": 2,
           "maxJobDuration": 600, "rawAlgorithmImages": ["fake/*"]}
    env.update(getattr(request, "param", {}))  # parametrize("rig", [{...}], indirect=True) overrides
    settings = parse_config({
        "helperImage": HELPER, "imagePull": "never", "dockerOutageSeconds": 1, "stopGraceSeconds": 0,
        "diskFloorGB": 0, "sweepIntervalSeconds": 3600, "orphanGraceSeconds": 0, "environments": [env],
    })
    data = tmp_path / "data"
    (data / "jobs").mkdir(parents=True)
    assets = tmp_path / "assets"
    assets.mkdir()
    db = await Database.open(data / "runnerd.db")
    store = JobStore(db)
    fake = FakeRuntime(images={HELPER, ALGO})
    statuses = StatusLog()
    clock = request.getfixturevalue("fake_clock") if "fake_clock" in request.fixturenames else SYSTEM
    engine = Engine(settings, store, fake, Catalog(assets), data, Hooks(status=statuses), cores=[0, 1], clock=clock)
    the_rig = Rig(engine, store, fake, assets, data, statuses, dataset(assets, url="http://datasets.example/x.csv"),
                  settings, dataset(assets, b"x,y\n1,2\n"), clock)
    await engine.start()
    try:
        yield the_rig
    finally:
        await the_rig.engine.shutdown()  # the latest engine, after any restart
        await fake.close()
        await db.close()


# ------------------------------------------------------------------------------ baseline


async def test_happy_path_with_the_fake_reaches_70(rig):
    rig.fake.script(Outcome(logs="hello from the algorithm\n", duration=0.05), image=ALGO)
    job = await rig.finished((await rig.submit()).job_id)
    assert job.status == S.COMPLETED, job.error
    assert rig.statuses.sequence(job.job_id) == HAPPY
    assert job.termination == {"exitCode": 0, "oomKilled": False, "reason": "exited"}
    # one container per step (created in whatever order the engine likes), each started once, in order
    containers = rig.fake.of_job(job.job_id)
    assert sorted(c.spec.labels["runnerd.step"] for c in containers) == ["algorithm", "filter", "provision"]
    by_start = sorted(containers, key=lambda c: c.started_at)
    assert [c.spec.labels["runnerd.step"] for c in by_start] == ["provision", "algorithm", "filter"]
    assert rig.fake.containers == {}  # every container removed once its step ended
    assert "hello from the algorithm" in rig.log_text(job.job_id)
    assert "algorithmLog" in {r.type.value for r in job.results}
    steps = await rig.store.steps(job.job_id)
    assert {k: s.state for k, s in steps.items()} == {k: StepState.EXITED for k in StepKind}


async def test_local_data_raw_code_job_runs_no_provision_container(rig):
    """Nothing to download (#13): no provision container, the same statuses, and a configurationLog
    of labels that runnerd wrote itself."""
    rig.fake.script(Outcome(logs="hello from the algorithm\n", duration=0.05), image=ALGO)
    job = await rig.finished((await rig.submit(did=rig.local_did)).job_id)
    assert job.status == S.COMPLETED, job.error
    assert rig.statuses.sequence(job.job_id) == HAPPY
    assert sorted(c.spec.labels["runnerd.step"] for c in rig.fake.of_job(job.job_id)) == ["algorithm", "filter"]
    assert StepKind.PROVISION not in await rig.store.steps(job.job_id)
    log = rig.log_text(job.job_id, "configuration.log")
    assert f"dataset {rig.local_did} file 0: local file, mounted read-only" in log
    assert "algorithm: raw code, 33 bytes" in log and str(rig.data) not in log and str(rig.assets) not in log
    assert rig.fake.containers == {}


async def test_local_job_restarted_right_after_30_finishes(rig):
    rig.fake.script(Outcome(duration=0.5), image=ALGO)  # still running when the engine goes
    job_id = (await rig.submit(did=rig.local_did)).job_id
    await rig.wait_for(job_id, {40})
    await rig.restart()
    job = await rig.finished(job_id)
    assert job.status == S.COMPLETED, job.error
    assert StepKind.PROVISION not in await rig.store.steps(job_id)
    assert rig.fake.containers == {}


# ------------------------------------------------------------------------------ Docker outages


async def test_docker_unreachable_longer_than_the_limit_during_the_algorithm_ends_at_76(rig, fake_clock):
    rig.fake.script(Outcome(duration=None, logs="working\n", outage_after=0.05), image=ALGO)
    job_id = (await rig.submit()).job_id
    await ride_out_the_outage_limit(fake_clock)
    job = await rig.finished(job_id)
    assert job.status == S.INTERRUPTED, (job.status, job.error)
    assert "Docker" in job.error and "unreachable" in job.error
    assert job.termination == {"exitCode": None, "oomKilled": False, "reason": "lost"}
    sequence = rig.statuses.sequence(job.job_id)
    assert sequence[:5] == [1, 10, 20, 30, 40] and sequence[-1] == 76
    steps = await rig.store.steps(job.job_id)
    assert steps[StepKind.ALGORITHM].state == StepState.ABANDONED
    assert "unreachable" in steps[StepKind.ALGORITHM].error
    assert not rig.engine.docker_up  # the engine noticed the outage
    # the algorithm container could not be removed while Docker was down: the orphan sweep does it later
    (algo,) = rig.fake.by_step("algorithm")
    assert algo.id in rig.fake.containers
    rig.fake.up()
    swept = await rig.engine.sweeper.sweep_once()
    assert swept["containers"] >= 1 and algo.id not in rig.fake.containers


async def test_transient_runtime_errors_on_create_and_start_are_retried(rig):
    rig.fake.fail("create", 2)
    rig.fake.fail("start", 1)
    job = await rig.finished((await rig.submit()).job_id)
    assert job.status == S.COMPLETED, job.error
    assert rig.statuses.sequence(job.job_id) == HAPPY
    assert rig.fake.calls["create"] >= 3 + 2 and rig.fake.calls["start"] >= 3 + 1  # the failures were met
    assert len(rig.fake.of_job(job.job_id)) == 3  # a failed call created nothing extra
    assert all(c.exit is not None for c in rig.fake.of_job(job.job_id))
    assert rig.fake.containers == {}


@pytest.mark.parametrize("step", ["provision", "algorithm", "filter"])
async def test_create_that_succeeded_in_docker_but_failed_to_answer_leaves_no_orphan(rig, step):
    rig.fake.fail("create", 1, after=True, step=step)
    job = await rig.finished((await rig.submit()).job_id)
    assert job.status == S.COMPLETED, job.error
    assert rig.statuses.sequence(job.job_id) == HAPPY
    assert len(rig.fake.by_step(step)) == 2  # the unanswered one, replaced by name on retry
    assert rig.fake.containers == {}


@pytest.mark.parametrize("step", ["provision", "algorithm", "filter"])
async def test_transient_start_error_of_each_step_is_retried(rig, step):
    rig.fake.fail("start", 2, step=step)
    job = await rig.finished((await rig.submit()).job_id)
    assert job.status == S.COMPLETED, job.error
    assert len(rig.fake.by_step(step)) == 1
    assert rig.fake.containers == {}


async def test_a_short_outage_during_the_algorithm_is_ridden_out(rig):
    rig.fake.script(Outcome(duration=0.3, outage_after=0.05, outage_for=0.1), image=ALGO)
    job = await rig.finished((await rig.submit()).job_id)
    assert job.status == S.COMPLETED, job.error
    assert rig.statuses.sequence(job.job_id) == HAPPY
    assert rig.engine.docker_up


# ------------------------------------------------------------------------------ lost containers


async def test_algorithm_container_removed_behind_runnerds_back_ends_at_76(rig):
    rig.fake.script(Outcome(duration=None, vanish_after=0.05), image=ALGO)
    job = await rig.finished((await rig.submit()).job_id)
    assert job.status == S.INTERRUPTED, (job.status, job.error)
    assert "removed outside runnerd" in job.error
    assert job.termination == {"exitCode": None, "oomKilled": False, "reason": "lost"}
    (algo,) = rig.fake.by_step("algorithm")
    assert rig.fake.vanished == [algo.id]
    steps = await rig.store.steps(job.job_id)
    assert steps[StepKind.ALGORITHM].state == StepState.ABANDONED
    assert rig.statuses.sequence(job.job_id)[:5] == [1, 10, 20, 30, 40]
    assert rig.fake.containers == {}


async def test_provision_container_lost_once_is_run_again(rig):
    rig.fake.script(Outcome(duration=None, vanish_after=0), command="provision.py", times=1)
    job = await rig.finished((await rig.submit()).job_id)
    assert job.status == S.COMPLETED, job.error
    assert rig.statuses.sequence(job.job_id) == HAPPY
    provisions = rig.fake.by_step("provision")
    assert len(provisions) == 2 and provisions[0].id in rig.fake.vanished
    assert provisions[1].id in rig.fake.removed
    steps = await rig.store.steps(job.job_id)
    assert steps[StepKind.PROVISION].state == StepState.EXITED
    assert steps[StepKind.PROVISION].container_id == provisions[1].id


async def test_provision_container_lost_twice_ends_at_76(rig):
    rig.fake.script(Outcome(duration=None, vanish_after=0), command="provision.py")
    job = await rig.finished((await rig.submit()).job_id)
    assert job.status == S.INTERRUPTED, (job.status, job.error)
    assert "provisioning" in job.error and "removed outside runnerd" in job.error
    assert len(rig.fake.by_step("provision")) == 2
    assert all(c.started_at is None for c in rig.fake.by_step("algorithm"))  # the algorithm never ran
    assert rig.statuses.sequence(job.job_id) == [1, 10, 20, 76]
    assert rig.fake.containers == {}


# ------------------------------------------------------------------------------ outcomes


async def test_oom_from_the_runtime_ends_at_73(rig):
    rig.fake.script(Outcome(exit_code=137, oom_killed=True, logs="allocating...\n"), image=ALGO)
    job = await rig.finished((await rig.submit()).job_id)
    assert job.status == S.OUT_OF_MEMORY, (job.status, job.error)
    assert job.termination == {"exitCode": 137, "oomKilled": True, "reason": "oom"}
    assert "ramGB" in job.error
    assert rig.statuses.sequence(job.job_id) == [1, 10, 20, 30, 40, 50, 60, 73]
    assert "allocating..." in rig.log_text(job.job_id)


async def test_non_zero_exit_ends_at_71(rig):
    rig.fake.script(Outcome(exit_code=3, logs="boom\n"), image=ALGO)
    job = await rig.finished((await rig.submit()).job_id)
    assert job.status == S.ALGORITHM_FAILED
    assert job.termination == {"exitCode": 3, "oomKilled": False, "reason": "exit_code"}
    assert "code 3" in job.error


async def test_missing_algorithm_image_ends_at_32(rig):
    job = await rig.finished((await rig.submit(raw("print(1)", image="fake/not-here:1"))).job_id)
    assert job.status == S.ALGORITHM_PROVISIONING_FAILED
    assert "fake/not-here:1" in job.error
    assert all(c.started_at is None for c in rig.fake.of_job(job.job_id))
    assert rig.fake.containers == {}
    assert rig.statuses.sequence(job.job_id) == [1, 10, 20, 32]


# ------------------------------------------------------------------------------ stops


async def test_stop_during_the_algorithm_ends_at_7_with_stopreq_1(rig):
    rig.fake.script(Outcome(duration=None, logs="partial\n"), image=ALGO)
    job_id = (await rig.submit()).job_id
    await rig.wait_for(job_id, {40})
    (algo,) = rig.fake.by_step("algorithm")
    await asyncio.wait_for(_until(lambda: algo.status == "running"), WAIT_LIMIT)
    await rig.engine.stop(job_id)
    job = await rig.finished(job_id)
    assert job.status == S.STOPPED, (job.status, job.error)
    assert job.stopreq == 1
    assert job.termination is not None and job.termination["reason"] == "stopped"
    assert job.termination["exitCode"] == 143
    assert algo.exit is not None and algo.id in rig.fake.removed
    assert rig.statuses.sequence(job_id) == [1, 10, 20, 30, 40, 50, 60, 7]
    assert "partial" in rig.log_text(job_id)  # logs are kept


@pytest.mark.parametrize("rig", [{"maxJobs": 1}], indirect=True)
async def test_queued_job_stopped_before_admission_ends_at_7_at_once(rig):
    rig.fake.script(Outcome(duration=None), image=ALGO)
    running = (await rig.submit()).job_id
    await rig.wait_for(running, {40})
    queued = (await rig.submit()).job_id
    assert (await rig.store.get(queued)).status == S.QUEUED
    await rig.engine.stop(queued)
    job = await rig.store.get(queued)  # no waiting: a queued job stops immediately
    assert job.status == S.STOPPED and job.stopreq == 1
    assert job.date_finished is not None and job.results == []
    assert rig.fake.of_job(queued) == []  # never got a container
    assert rig.statuses.assert_legal(queued) == [1, 7]
    # stopping it again, or a finished job, changes nothing
    await rig.engine.stop(queued)
    assert (await rig.store.get(queued)).status == S.STOPPED
    await rig.engine.stop(running)
    assert (await rig.finished(running)).status == S.STOPPED
    assert rig.fake.containers == {}


async def test_stop_during_provision_ends_at_7(rig):
    rig.fake.script(Outcome(duration=None), command="provision.py")
    job_id = (await rig.submit()).job_id
    await rig.wait_for(job_id, {20})
    await asyncio.wait_for(_until(lambda: any(c.status == "running" for c in rig.fake.by_step("provision"))),
                           WAIT_LIMIT)
    await rig.engine.stop(job_id)
    job = await rig.finished(job_id)
    assert job.status == S.STOPPED and job.stopreq == 1
    assert all(c.started_at is None for c in rig.fake.by_step("algorithm"))
    assert rig.statuses.sequence(job_id) == [1, 10, 20, 7]
    assert rig.fake.containers == {}


@pytest.mark.parametrize("rig", [{"maxJobDuration": 1}], indirect=True)
async def test_algorithm_running_past_max_job_duration_ends_at_72(rig, fake_clock):
    rig.fake.script(Outcome(duration=None, ignores_sigterm=True), image=ALGO)
    job_id = (await rig.submit()).job_id
    await fake_clock.sleeping(1)  # maxJobDuration, counted from the container's start
    await fake_clock.advance(0.9)
    assert (await rig.store.get(job_id)).status == S.RUNNING
    await fake_clock.advance(0.1)
    job = await rig.finished(job_id)
    assert job.status == S.TIMED_OUT, (job.status, job.error)
    assert job.stopreq == 2
    assert job.termination == {"exitCode": 137, "oomKilled": False, "reason": "timeout"}
    assert "maxJobDuration" in job.error
    assert rig.statuses.sequence(job.job_id) == [1, 10, 20, 30, 40, 50, 60, 72]


async def test_container_killed_by_a_docker_restart_ends_at_76(rig):
    """Docker went away while the algorithm ran and came back with it dead (SIGKILL): its result
    cannot be trusted, so the job is interrupted rather than failed."""
    rig.fake.script(Outcome(duration=0.3, exit_code=137, outage_after=0.05, outage_for=0.1), image=ALGO)
    job = await rig.finished((await rig.submit()).job_id)
    assert job.status == S.INTERRUPTED, (job.status, job.error)
    assert "Docker restarted" in job.error


async def test_transient_start_error_is_not_blamed_for_a_later_exit_137(rig, fake_clock):
    # the algorithm's start fails once, before the container ran; later the container ends with 137
    # and Docker stays up for the whole watch: the algorithm's own ending (71)
    rig.fake.fail("start", 1, step="algorithm")
    rig.fake.script(Outcome(exit_code=137, logs="killed\n"), image=ALGO)
    job_id = (await rig.submit()).job_id
    await fake_clock.sleeping(0.2)  # the failed start's backoff
    await fake_clock.advance(0.2)
    await fake_clock.sleeping(WATCH_PING)  # the exit is in: runnerd watches whether Docker goes away
    await fake_clock.advance(DOCKER_SHUTDOWN_WATCH - 1)
    assert (await rig.store.get(job_id)).status == S.RUNNING  # still watching, until the window is over
    await fake_clock.advance(1.5)
    job = await rig.finished(job_id)
    (algo,) = rig.fake.by_step("algorithm")
    assert algo.exit is not None and algo.exit.exit_code == 137  # it really ran, once
    assert job.status == S.ALGORITHM_FAILED, (job.status, job.error)
    assert "Docker restarted" not in (job.error or ""), job.error


async def test_a_container_stopped_by_a_dockerd_that_is_still_shutting_down_ends_at_76(rig, fake_clock):
    """dockerd (no live-restore) stops its containers first and may answer its API for seconds
    more: the SIGTERM exit is reported while Docker still answers, and Docker goes away only
    later (seen in CI with several containers to stop). That is a container lost with Docker."""
    rig.fake.script(Outcome(exit_code=143), image=ALGO)
    job_id = (await rig.submit()).job_id
    await fake_clock.sleeping(WATCH_PING)  # the exit is in and Docker still answers
    await fake_clock.advance(DOCKER_SHUTDOWN_WATCH / 2)
    assert (await rig.store.get(job_id)).status == S.RUNNING
    rig.fake.go_down()  # dockerd exits, half-way through its shutdown time
    await fake_clock.advance(WATCH_PING)  # the next ping finds it gone
    rig.fake.up()
    job = await rig.finished(job_id)
    assert job.status == S.INTERRUPTED, (job.status, job.error)
    assert "lost when Docker restarted" in job.error


async def test_stop_arriving_as_the_algorithm_step_begins_ends_at_7(rig):
    """The stop lands just after the job moved to 40, before the algorithm container was started:
    exactly what Scheduler.stop does (stop event of the live job, then stopreq in the store)."""
    stops: list[asyncio.Task] = []

    def stop_at_40(job: Job, old: JobStatus) -> None:
        if job.status == S.RUNNING and not stops:
            rig.engine.scheduler.live[job.job_id].stop.set()
            stops.append(asyncio.get_running_loop().create_task(rig.engine.stop(job.job_id)))

    rig.statuses.also = stop_at_40
    job_id = (await rig.submit()).job_id
    job = await rig.finished(job_id)
    await asyncio.gather(*stops)
    assert job.status == S.STOPPED, (job.status, job.error)
    assert job.stopreq == 1
    assert rig.fake.containers == {}


# ------------------------------------------------------------------------------ restarts (recovery)


async def test_restart_during_the_algorithm_reattaches_and_completes(rig):
    rig.fake.script(Outcome(duration=None, logs="one line\n"), image=ALGO)
    job_id = (await rig.submit()).job_id
    await rig.wait_for(job_id, {40})
    (algo,) = rig.fake.by_step("algorithm")
    await asyncio.wait_for(_until(lambda: algo.status == "running"), WAIT_LIMIT)
    await rig.restart()
    assert algo.status == "running" and algo.id in rig.fake.containers  # shutdown left it running
    await asyncio.wait_for(_until(lambda: job_id in rig.engine.scheduler.live), WAIT_LIMIT)
    rig.fake.finish(algo.id, 0)
    job = await rig.finished(job_id)
    assert job.status == S.COMPLETED, job.error
    assert rig.fake.by_step("algorithm") == [algo]  # re-attached, not run a second time
    assert rig.log_text(job_id).count("one line") == 1  # the log was copied afresh, not doubled
    assert rig.statuses.sequence(job_id) == HAPPY
    assert rig.fake.containers == {}


async def test_algorithm_container_gone_while_runnerd_was_down_ends_at_76(rig):
    rig.fake.script(Outcome(duration=None), image=ALGO)
    job_id = (await rig.submit()).job_id
    await rig.wait_for(job_id, {40})
    (algo,) = rig.fake.by_step("algorithm")
    await asyncio.wait_for(_until(lambda: algo.status == "running"), WAIT_LIMIT)
    await rig.engine.shutdown()
    rig.fake.vanish(algo.id)
    await rig.restart()
    job = await rig.finished(job_id)
    assert job.status == S.INTERRUPTED, (job.status, job.error)
    assert "removed outside runnerd" in job.error
    assert len(rig.fake.by_step("algorithm")) == 1  # an algorithm is never silently run twice


async def test_provision_container_gone_while_runnerd_was_down_is_run_again(rig):
    rig.fake.script(Outcome(duration=None), command="provision.py", times=1)
    job_id = (await rig.submit()).job_id
    await rig.wait_for(job_id, {20})
    await asyncio.wait_for(_until(lambda: any(c.status == "running" for c in rig.fake.by_step("provision"))),
                           WAIT_LIMIT)
    await rig.engine.shutdown()
    (first,) = rig.fake.by_step("provision")
    rig.fake.vanish(first.id)
    await rig.restart()
    job = await rig.finished(job_id)
    assert job.status == S.COMPLETED, job.error
    assert len(rig.fake.by_step("provision")) == 2
    assert rig.statuses.sequence(job_id) == HAPPY
    assert rig.fake.containers == {}


# ------------------------------------------------------------------------------ intake


async def test_entrypoint_with_unbalanced_quote_is_refused_at_submit(rig):
    algorithm = raw("print(1)", image=ALGO, entrypoint='python3 "$ALGO')
    try:
        with pytest.raises(BadRequest):
            await rig.submit(algorithm)
    finally:
        for job in await rig.store.list_for_owner(OWNER):
            await rig.finished(job.job_id)


OUTAGE_BACKOFF = (0.2, 0.4, 0.8)  # the retries of a step within dockerOutageSeconds 1: 1.4 s, past the limit


async def ride_out_the_outage_limit(clock) -> None:
    """Let each backoff of an outage (dockerOutageSeconds 1) pass on the fake clock, in turn."""
    for backoff in OUTAGE_BACKOFF:
        await clock.sleeping(backoff)
        await clock.advance(backoff)


async def _until(predicate) -> None:
    while not predicate():
        await asyncio.sleep(0.01)


# ------------------------------------------------------------------------------ images


async def test_image_volumes_are_masked_with_tmpfs_in_every_step(rig):
    """An image VOLUME would be an anonymous Docker volume on the host disk, outside diskGB."""
    rig.fake.volumes[ALGO] = ["/data", "/cache", "/tmp"]
    rig.fake.volumes[HELPER] = ["/var/lib/helper"]
    job = await rig.finished((await rig.submit()).job_id)
    assert job.status == S.COMPLETED, job.error
    specs = {c.spec.labels["runnerd.step"]: c.spec for c in rig.fake.of_job(job.job_id)}
    algo = specs["algorithm"]
    assert set(algo.tmpfs) == {"/tmp", "/data", "/cache"} and "size=" in algo.tmpfs["/cache"]
    for helper in ("provision", "filter"):
        assert "/var/lib/helper" in specs[helper].tmpfs


async def test_stop_while_an_image_is_being_pulled_ends_at_7(rig, monkeypatch):
    rig.settings = parse_config({**_settings_raw(rig.settings), "imagePull": "if-missing"})
    pulling, release = asyncio.Event(), asyncio.Event()

    async def slow_pull(ref: str) -> None:  # a registry that never answers
        pulling.set()
        await release.wait()

    monkeypatch.setattr(rig.fake, "pull", slow_pull)
    await rig.restart()
    job_id = (await rig.submit(raw("print(1)", image="fake/far-away:1"))).job_id
    await asyncio.wait_for(pulling.wait(), WAIT_LIMIT)
    await rig.engine.stop(job_id)
    job = await rig.finished(job_id)
    release.set()
    assert job.status == S.STOPPED and job.stopreq == 1
    assert rig.statuses.sequence(job_id) == [1, 10, 20, 7]


def _settings_raw(settings: Settings) -> dict:
    env = settings.environments[0]
    return {"helperImage": settings.helperImage, "dockerOutageSeconds": 1, "stopGraceSeconds": 0,
            "diskFloorGB": 0, "sweepIntervalSeconds": 3600, "orphanGraceSeconds": 0,
            "environments": [{"id": env.id, "nCPU": env.nCPU, "ramGB": env.ramGB, "diskGB": env.diskGB,
                              "diskQuota": "none", "maxJobs": env.maxJobs, "maxJobDuration": env.maxJobDuration,
                              "rawAlgorithmImages": list(env.rawAlgorithmImages)}]}


async def test_algorithm_killed_while_runnerd_was_down_ends_at_76(rig):
    """Found stopped by SIGTERM on recovery: most likely a Docker or host restart took it (with
    runnerd's unit Requiring docker.service, both restart together), not the algorithm failing."""
    rig.fake.script(Outcome(duration=None), image=ALGO)
    job_id = (await rig.submit()).job_id
    await rig.wait_for(job_id, {40})
    (algo,) = rig.fake.by_step("algorithm")
    await asyncio.wait_for(_until(lambda: algo.status == "running"), WAIT_LIMIT)
    await rig.restart(while_down=lambda: rig.fake.finish(algo.id, 143))
    job = await rig.finished(job_id)
    assert job.status == S.INTERRUPTED and "while runnerd was down" in job.error, job.error
