"""Issue #10 items 6, 9 and 15 through the real engine with the FakeRuntime (tests/fakes.py):
Docker outages a job must survive, cleanups that must never keep a job from ending, and `error`
texts that must never carry an exception's text or a host path. (The rig is test_runner_faults'.)
"""

from __future__ import annotations

import asyncio
import logging
import os

import pytest

from runnerd import logs
from runnerd.domain import JobStatus, StepKind
from runnerd.engine.runner import JobRunner
from runnerd.engine.service import DOCKER_WATCH_UP
from runnerd.engine.workspace import Workspace
from runnerd.errors import ContainerRefused
from runnerd.logs import LineFormatter
from tests.fakes import FakeContainer, FakeRuntime, Outcome
from tests.test_runner_faults import (  # noqa: F401 - rig is a fixture
    ALGO, HAPPY, WAIT_LIMIT, _until, ride_out_the_outage_limit, rig)

S = JobStatus
SECRET = "XYZZY-host-secret /srv/operator/private"  # a distinctive text no consumer may ever see
DEPTH = 6000


def _no_leak(text: str | None) -> None:
    assert text, "an error text was expected"
    for fragment in ("XYZZY", "/srv/operator", "fake outage", "fake failure", "Traceback", "Error:"):
        assert fragment not in text, text


# ------------------------------------------------------------------------------ outages (item 15)


@pytest.mark.parametrize("rig", [{"maxJobs": 1}], indirect=True)
async def test_queued_job_stays_queued_while_docker_is_down_then_completes(rig, fake_clock):
    rig.fake.script(Outcome(duration=None), image=ALGO)
    running = (await rig.submit()).job_id
    await rig.wait_for(running, {40})
    queued = (await rig.submit()).job_id
    rig.fake.go_down()  # the running job outlasts dockerOutageSeconds (1s) and frees its slot
    await ride_out_the_outage_limit(fake_clock)  # past the limit, the step gives up
    first = await rig.finished(running)
    assert first.status == S.INTERRUPTED, first.error
    assert not rig.engine.scheduler.docker_up
    await rig.engine.scheduler.admit_once()  # the slot is free and the scheduler has had its pass
    assert (await rig.store.get(queued)).status == S.QUEUED
    assert rig.fake.of_job(queued) == []
    rig.fake.script(Outcome(), image=ALGO)
    rig.fake.up()  # the engine's watcher notices at its next look, the scheduler admits it
    await fake_clock.advance(DOCKER_WATCH_UP)
    job = await rig.finished(queued)
    assert job.status == S.COMPLETED, job.error
    assert rig.statuses.sequence(queued) == HAPPY


async def test_outage_while_the_image_is_resolved_is_ridden_out(rig):
    rig.fake.fail("has_image", 2)  # the algorithm's image lookup, before any container exists
    job = await rig.finished((await rig.submit()).job_id)
    assert job.status == S.COMPLETED, job.error
    assert rig.statuses.sequence(job.job_id) == HAPPY


async def test_every_line_logged_while_a_job_runs_names_it(rig):
    """The runner sets the job for logging (logs.JOB) for the whole run: a line whose text does not
    name the job, like an outage retried in a step or a background task, still says `job=` (#12)."""
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(LineFormatter(timestamps=False).format(record))
    logging.getLogger("runnerd").addHandler(handler)
    try:
        rig.fake.fail("has_image", 2)  # retried inside the run: "Docker unavailable (...); retrying"
        rig.fake.fail("start", 1, step="algorithm")
        job = await rig.finished((await rig.submit()).job_id)
    finally:
        logging.getLogger("runnerd").removeHandler(handler)
    assert job.status == S.COMPLETED, job.error
    retries = [line for line in lines if "Docker unavailable" in line]
    assert len(retries) >= 3 and job.job_id not in retries[0].split(" level=")[0]  # its text does not name it
    assert all(line.endswith(f" job={job.job_id}") for line in retries), retries
    assert logs.JOB.get() is None  # and it does not leak out of the run


async def test_outage_past_the_limit_outside_a_step_ends_at_76_with_a_plain_reason(rig, fake_clock):
    rig.fake.fail("has_image", 1000)
    job_id = (await rig.submit()).job_id
    await ride_out_the_outage_limit(fake_clock)
    job = await rig.finished(job_id)
    assert job.status == S.INTERRUPTED
    assert "Docker was unreachable" in job.error
    _no_leak(job.error)


async def test_unstarted_algorithm_container_that_vanished_is_created_again(rig):
    """Created ahead of time while provisioning ran, then gone (a dockerd that lost it): it
    never ran, so it is simply created again."""
    rig.fake.script(Outcome(duration=None), command="provision.py")
    job_id = (await rig.submit()).job_id
    await asyncio.wait_for(_until(lambda: rig.fake.by_step("algorithm")
                                  and any(c.status == "running" for c in rig.fake.by_step("provision"))), WAIT_LIMIT)
    (algo,) = rig.fake.by_step("algorithm")
    rig.fake.vanish(algo.id)
    (provision,) = rig.fake.by_step("provision")
    rig.fake.finish(provision.id, 0)
    job = await rig.finished(job_id)
    assert job.status == S.COMPLETED, job.error
    first, second = rig.fake.by_step("algorithm")
    assert first.started_at is None and second.started_at is not None
    assert rig.fake.containers == {}


async def test_algorithm_lost_with_docker_says_so_plainly(rig):
    rig.fake.script(Outcome(duration=0.3, exit_code=143, outage_after=0.05, outage_for=0.1), image=ALGO)
    job = await rig.finished((await rig.submit()).job_id)
    assert job.status == S.INTERRUPTED
    assert job.error == "the algorithm was interrupted: its container was lost when Docker restarted"


async def test_outage_past_the_limit_in_a_step_names_no_docker_message(rig, fake_clock):
    rig.fake.script(Outcome(duration=None, outage_after=0.05), image=ALGO)
    job_id = (await rig.submit()).job_id
    await ride_out_the_outage_limit(fake_clock)
    job = await rig.finished(job_id)
    assert job.status == S.INTERRUPTED and "Docker was unreachable for more than 1s" in job.error
    _no_leak(job.error)
    rig.fake.up()


# ------------------------------------------------------------------------------ cleanup (item 9)


def _deep_tree(runtime: FakeRuntime, c: FakeContainer) -> None:
    """What an algorithm can write with diskQuota none: a tree deeper than any recursion limit,
    with links out of it on the way down."""
    (outputs,) = [m.source for m in c.spec.mounts if m.target == "/data/outputs"]
    victim = os.path.join(outputs.split("/jobs/")[0], "victim")
    fd = os.open(outputs, os.O_RDONLY | os.O_DIRECTORY)
    for level in range(DEPTH):
        if level % 1000 == 0:
            os.symlink(victim, "link", dir_fd=fd)
        os.mkdir("d", dir_fd=fd)
        nested = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nested
    os.close(os.open("bottom", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd))
    os.close(fd)


async def test_a_6000_deep_tree_neither_wedges_the_job_nor_its_delete(rig):
    jobs = rig.data / "jobs"
    victim = rig.data / "victim"
    victim.mkdir()
    (victim / "keep").write_text("not the job's")
    rig.fake.script(Outcome(on_start=_deep_tree), image=ALGO)
    job = await rig.finished((await rig.submit()).job_id)
    assert job.status == S.COMPLETED, job.error
    assert not (jobs / job.job_id / "fs").exists()  # the tree went with the job's filesystem
    assert (victim / "keep").read_text() == "not the job's"  # links were removed, not followed
    await rig.engine.delete(job.job_id)
    assert not (jobs / job.job_id).exists()
    assert await rig.store.get(job.job_id) is None
    # and the next job of the environment runs as usual
    rig.fake.script(Outcome(), image=ALGO)
    assert (await rig.finished((await rig.submit()).job_id)).status == S.COMPLETED


async def test_a_failed_cleanup_never_keeps_a_job_from_ending_and_is_retried(rig, monkeypatch):
    real = Workspace._release_fs
    failures = []

    def failing(self, paths):
        if not failures:
            failures.append(paths)
            raise OSError(SECRET)
        return real(self, paths)

    monkeypatch.setattr(Workspace, "_release_fs", failing)
    job = await rig.finished((await rig.submit()).job_id)
    assert failures, "the cleanup was not attempted"
    assert job.status == S.COMPLETED, job.error
    assert (rig.data / "jobs" / job.job_id / "fs").exists()  # left for the sweeper
    swept = await rig.engine.sweeper.sweep_once()
    assert swept["cleanups"] == 1
    assert not (rig.data / "jobs" / job.job_id / "fs").exists()
    assert (await rig.engine.sweeper.sweep_once())["cleanups"] == 0  # done once, not again


async def test_a_failed_delete_cleanup_still_deletes_and_the_sweeper_finishes_it(rig, monkeypatch):
    job = await rig.finished((await rig.submit()).job_id)
    real = Workspace._release_fs
    monkeypatch.setattr(Workspace, "_release_fs", lambda self, p: (_ for _ in ()).throw(RecursionError(SECRET)))
    await rig.engine.delete(job.job_id)  # does not raise
    assert await rig.store.get(job.job_id) is None
    assert (rig.data / "jobs" / job.job_id).exists()
    monkeypatch.setattr(Workspace, "_release_fs", real)
    await rig.engine.sweeper.sweep_once()
    assert not (rig.data / "jobs" / job.job_id).exists()


# ------------------------------------------------------------------------------ error texts (item 6)


async def test_a_volume_that_cannot_be_prepared_names_no_host_detail(rig, monkeypatch, caplog):
    def broken(self, job, env):
        raise OSError(28, f"No space left on device: {SECRET}")

    monkeypatch.setattr(Workspace, "_prepare", broken)
    caplog.set_level(logging.ERROR, logger="runnerd")
    job = await rig.finished((await rig.submit()).job_id)
    assert job.status == S.DATA_PROVISIONING_FAILED
    assert job.error.startswith("the job's volume could not be prepared (reference ")
    _no_leak(job.error)
    reference = job.error.split("reference ")[1].split(";")[0]
    assert any(reference in r.getMessage() and "XYZZY" in r.getMessage() for r in caplog.records)


async def test_an_internal_error_names_neither_the_exception_nor_its_text(rig, monkeypatch, caplog):
    async def bug(self, *args, **kwargs):
        raise KeyError(SECRET)

    monkeypatch.setattr(JobRunner, "_algorithm", bug)
    caplog.set_level(logging.ERROR, logger="runnerd")
    job = await rig.finished((await rig.submit()).job_id)
    assert job.status == S.INTERRUPTED
    assert "internal error" in job.error and "reference" in job.error
    _no_leak(job.error)
    reference = job.error.split("reference ")[1].split(";")[0]
    assert any(reference in r.getMessage() and "XYZZY" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("step,status", [("provision", S.DATA_PROVISIONING_FAILED),
                                         ("algorithm", S.ALGORITHM_PROVISIONING_FAILED)])
async def test_a_container_docker_refuses_names_no_docker_explanation(rig, monkeypatch, step, status):
    create = rig.fake.create

    async def refusing(spec):
        if spec.labels.get("runnerd.step") == step:
            raise ContainerRefused(f"invalid mount config: bind source path does not exist: {SECRET}")
        return await create(spec)

    monkeypatch.setattr(rig.fake, "create", refusing)
    job = await rig.finished((await rig.submit()).job_id)
    assert job.status == status, job.error
    assert "Docker refused" in job.error and "reference" in job.error
    _no_leak(job.error)
    steps = await rig.store.steps(job.job_id)
    assert all("XYZZY" not in (rec.error or "") for kind, rec in steps.items() if kind in StepKind)
