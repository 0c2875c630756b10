"""The engine's waits run on runnerd.clock: with a FakeClock (tests/fakes.py) each one is checked
by moving the time on, not by waiting it out, and a "not yet" is asserted at an exact moment."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil

import pytest

from runnerd.domain import JobStatus
from runnerd.engine import scheduler as scheduler_module
from runnerd.engine.scheduler import DISK_RECHECK
from runnerd.engine.service import DOCKER_WATCH_DOWN, DOCKER_WATCH_UP
from runnerd.engine.steps import Outage
from runnerd.errors import RuntimeUnavailable
from tests.fakes import FakeClock, Outcome
from tests.test_runner_faults import ALGO, rig  # noqa: F401 - rig is a fixture

S = JobStatus


async def test_outage_backoff_doubles_to_five_seconds_and_gives_up_past_the_limit(fake_clock):
    calls = []

    async def unreachable() -> None:
        calls.append(fake_clock.monotonic())
        raise RuntimeUnavailable("down")

    retry = asyncio.create_task(Outage(20, clock=fake_clock).retry(unreachable))
    expected = [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0]  # 21.2 s in all: past 20, it gives up
    for backoff in expected:
        await fake_clock.sleeping(backoff)
        assert not retry.done()
        await fake_clock.advance(backoff)
    with pytest.raises(RuntimeUnavailable):
        await retry
    assert fake_clock.asked == expected and len(calls) == len(expected) + 1


async def test_outage_that_ends_within_the_limit_returns_the_answer_and_says_docker_is_back(fake_clock):
    seen: list[bool] = []
    answers = iter([RuntimeUnavailable("down"), RuntimeUnavailable("down"), "ok"])

    async def flaky() -> str:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    retry = asyncio.create_task(Outage(1, seen.append, fake_clock).retry(flaky))
    for backoff in (0.2, 0.4):
        await fake_clock.sleeping(backoff)
        await fake_clock.advance(backoff)
    assert await retry == "ok"
    assert seen == [False, False, True]


async def test_fake_clock_wakes_sleepers_in_the_order_due_and_not_before():
    clock = FakeClock()
    woke: list[str] = []

    async def nap(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append(name)

    tasks = [asyncio.create_task(nap(n, s)) for n, s in (("late", 3), ("early", 1), ("middle", 2))]
    await clock.sleeping(3)
    await clock.advance(1.5)
    assert woke == ["early"] and sorted(clock.pending()) == [2, 3]
    await clock.advance(1.5)
    assert woke == ["early", "middle", "late"] and clock.pending() == []
    await asyncio.gather(*tasks)
    start = clock.now()
    await clock.advance(10)
    assert clock.now() == start + 10


async def test_engine_watch_sees_docker_go_and_come_back_at_its_own_pace(rig, fake_clock):
    assert rig.engine.docker_up
    rig.fake.go_down()
    await fake_clock.advance(DOCKER_WATCH_UP - 0.1)
    assert rig.engine.docker_up  # not looked yet
    await fake_clock.advance(0.1)
    assert not rig.engine.docker_up and not rig.engine.scheduler.docker_up
    rig.fake.up()
    await fake_clock.sleeping(DOCKER_WATCH_DOWN)  # while it is away it looks every second
    await fake_clock.advance(DOCKER_WATCH_DOWN)
    assert rig.engine.docker_up and rig.engine.scheduler.docker_up


async def test_a_job_waits_while_the_disk_is_low_and_starts_at_the_next_look(rig, fake_clock, monkeypatch):
    real = shutil.disk_usage
    free = {"bytes": 0}

    def usage(path):
        return real(path)._replace(free=free["bytes"])

    monkeypatch.setattr(scheduler_module.shutil, "disk_usage", usage)
    recheck = DISK_RECHECK + 2  # told apart from the engine's Docker watch (every 5 s) on the clock
    monkeypatch.setattr(scheduler_module, "DISK_RECHECK", recheck)
    rig.engine.scheduler.settings = dataclasses.replace(rig.settings, diskFloorGB=1)
    job_id = (await rig.submit()).job_id
    await fake_clock.sleeping(recheck)
    await rig.engine.scheduler.admit_once()
    assert rig.engine.scheduler.disk_low and (await rig.store.get(job_id)).status == S.QUEUED
    assert fake_clock.pending().count(recheck) == 1  # one look is due, however often it was woken
    free["bytes"] = 10 * 1024**3  # space was freed; nothing wakes the scheduler but its next look
    await fake_clock.advance(recheck - 0.1)
    assert (await rig.store.get(job_id)).status == S.QUEUED
    await fake_clock.advance(0.1)
    job = await rig.finished(job_id)
    assert job.status == S.COMPLETED, job.error
    assert not rig.engine.scheduler.disk_low



@pytest.mark.parametrize("rig", [{"maxJobs": 1, "queueMaxWaitTime": 30}], indirect=True)
async def test_a_queued_job_ends_at_76_exactly_when_its_queue_wait_runs_out(rig, fake_clock):
    rig.fake.script(Outcome(duration=None), image=ALGO)  # holds the only slot
    running = (await rig.submit()).job_id
    await rig.wait_for(running, {40})
    queued = (await rig.submit()).job_id
    await fake_clock.sleeping(30)  # the scheduler's wake-up at the job's queue deadline
    await fake_clock.advance(29.9)
    await rig.engine.scheduler.admit_once()
    assert (await rig.store.get(queued)).status == S.QUEUED  # not a moment early
    await fake_clock.sleeping(0.1)  # the pass set its wake-up again: for what is left of the wait
    await fake_clock.advance(0.1)
    job = await rig.wait_for(queued)
    assert job.status == S.INTERRUPTED and job.termination == {"exitCode": None, "oomKilled": False,
                                                               "reason": "queue_expired"}, job
    assert "queueMaxWaitTime (30s)" in job.error
    assert rig.fake.of_job(queued) == []
    await rig.engine.stop(running)
    assert (await rig.finished(running)).status == S.STOPPED
