"""Scheduler: admits queued jobs into their environment's slots, FIFO, and owns the running set.

Everything here runs on the event loop, so admission and release are atomic with respect to each
other; the store's compare-and-set (QUEUED → STARTED) makes admission atomic against a stop.
Resources held by a job (pinned cores, GPUs; on a cluster its node) come from a `Placer`
(engine/placement.py: the local `Allocator` by default, engine/node_placer.py on a cluster) and are
recorded in its row, so a restart re-adopts them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from runnerd.clock import SYSTEM, Clock
from runnerd.config import Settings
from runnerd.domain import IllegalTransition, Job, JobStatus, Slot
from runnerd.engine.placement import Allocator, Placer
from runnerd.engine.run_handle import termination
from runnerd.engine.runner import JobRunner
from runnerd.engine.terms import applied
from runnerd.store import JobStore

log = logging.getLogger("runnerd.scheduler")

DISK_RECHECK = 5.0  # seconds between looks at the free space while it is under diskFloorGB


@dataclass
class LiveJob:
    job_id: str
    environment: str
    slot: Slot
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class Scheduler:
    def __init__(self, settings: Settings, store: JobStore, runner: JobRunner, data_dir: Path,
                 cores: list[int] | None = None, clock: Clock = SYSTEM, placer: Placer | None = None):
        """`placer` hands out each job's resources (default: this host's `cores` and GPUs)."""
        self.settings = settings
        self.clock = clock
        self.store = store
        self.runner = runner
        self.data_dir = data_dir
        self.placer: Placer = placer if placer is not None else \
            Allocator(cores if cores is not None else sorted(os.sched_getaffinity(0)))
        self.live: dict[str, LiveJob] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._expiry: asyncio.Task[None] | None = None  # wakes the loop at the next queue deadline
        self._recheck: asyncio.Task[None] | None = None  # the wake-up due while the disk is low
        self._one_pass = asyncio.Lock()
        self.admitting = True
        self.disk_low = False
        # Set by the engine as Docker comes and goes: a job admitted into an outage could only
        # wait in a slot (or, past dockerOutageSeconds, die); in the queue it waits for free.
        self.docker_up = True

    # -- control ------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="scheduler")
        self.wake()

    def wake(self) -> None:
        self._wake.set()

    async def shutdown(self) -> None:
        """Stop admitting and stop driving jobs, but leave their containers running: a restarted
        daemon re-attaches to them (recovery)."""
        self.admitting = False
        tasks = [t for t in ([self._task, self._expiry, self._recheck] + [j.task for j in self.live.values()])
                 if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def running_count(self, env_id: str) -> int:
        return sum(1 for j in self.live.values() if j.environment == env_id)

    # -- admission ----------------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.admit_once()
            except Exception:  # keep scheduling; the store may be briefly locked
                log.exception("admission failed; retrying")
                await self.clock.sleep(1)
                self.wake()

    async def _expire_waits(self) -> None:
        """End the queued jobs whose queue wait (queueMaxWaitTime) ran out at 76 with the reason
        `queue_expired`, whatever else keeps them waiting (slots, GPUs, disk, Docker); then wake
        again at the next such deadline."""
        now = self.clock.now()
        expired, upcoming = await self.store.queue_expired(now)
        for queued in expired:
            env = self.settings.environment(queued.environment)
            wait = queued.terms.queue_max_wait or 0
            try:
                job = await self.store.transition(
                    queued.job_id, JobStatus.INTERRUPTED, expect=JobStatus.QUEUED, date_finished=now,
                    error=f"it waited longer than its queueMaxWaitTime ({wait:g}s) for a slot",
                    termination=termination("queue_expired"), expires_at=now + (env.storageExpiry if env else 0))
            except (IllegalTransition, KeyError):
                continue  # admitted, stopped or deleted meanwhile
            log.info("job %s: its queue wait ran out; ended at 76", job.job_id)
            self.runner.hooks.status(job, JobStatus.QUEUED)
        if self._expiry is not None:
            self._expiry.cancel()
        self._expiry = None if upcoming is None else asyncio.create_task(
            self._sleep_then_wake(max(0.0, upcoming - self.clock.now())), name="scheduler-queue-deadline")

    async def admit_once(self) -> None:
        """One admission pass, as the loop runs it when woken: admit what fits now. Tests call it
        to know that the scheduler had its chance (rather than waiting and hoping it ran). One pass
        at a time: two interleaved passes could both see a free slot and fill it twice."""
        async with self._one_pass:
            await self._expire_waits()
            await self._admit()
            if self.admitting and not self.docker_up:  # says why queued jobs do not start (once the pass is over)
                log.info("admission waits for Docker to come back")

    def _wake_later(self, seconds: float) -> None:
        if self._recheck is None or self._recheck.done():
            self._recheck = asyncio.create_task(self._sleep_then_wake(seconds), name="scheduler-recheck")

    async def _sleep_then_wake(self, seconds: float) -> None:
        await self.clock.sleep(seconds)
        self.wake()

    def _disk_ok(self) -> bool:
        free = shutil.disk_usage(self.data_dir).free
        low = free < self.settings.diskFloorGB * 1024**3
        if low != self.disk_low:
            self.disk_low = low
            log.warning("free space under %s is %s the floor (%.1f GB free); %s", self.data_dir,
                        "below" if low else "back above", free / 1024**3,
                        "new jobs wait in the queue" if low else "admitting jobs again")
        return not low

    async def _admit(self) -> None:
        if not self.admitting or not self.docker_up:
            return  # woken again when Docker is back
        await self.placer.update()  # a cluster's nodes may have come, gone or changed size
        for env in self.settings.environments:
            while self.running_count(env.id) < env.maxJobs:
                queued = await self.store.queued(env.id, limit=1)
                if not queued:
                    break
                if not self._disk_ok():
                    self._wake_later(DISK_RECHECK)
                    return
                slot = self.placer.take(applied(env, queued[0].terms))  # the CPUs it asked for
                if slot is None:  # waits for a GPU (or a node's room) to be released
                    if (later := self.placer.retry_after) is not None:
                        self._wake_later(later)  # or for the cluster to grow
                    break
                try:
                    job = await self.store.transition(queued[0].job_id, JobStatus.STARTED, expect=JobStatus.QUEUED,
                                                      slot=slot)
                except (IllegalTransition, KeyError):  # stopped or deleted while we looked
                    self.placer.release(slot)
                    continue
                except BaseException:  # the store failed: never keep cores or GPUs for nothing
                    self.placer.release(slot)
                    raise
                log.info("job %s: admitted to %s (cpuset=%s gpus=%s%s)", job.job_id, env.id, slot.cpuset,
                         ",".join(slot.gpus) or "-", f" node={slot.node}" if slot.node else "")
                self.runner.hooks.status(job, JobStatus.QUEUED)
                self._launch(job, slot)

    def adopt(self, job: Job) -> None:
        """Take over a job found in flight at startup, with the resources it already holds."""
        slot = job.slot or Slot()
        self.placer.hold(slot)
        self._launch(job, slot, recovered=True)

    def _launch(self, job: Job, slot: Slot, recovered: bool = False) -> None:
        live = LiveJob(job.job_id, job.environment, slot)
        if job.stopreq:
            live.stop.set()
        self.live[job.job_id] = live
        live.task = asyncio.create_task(self._drive(job, live, recovered), name=f"job-{job.job_id}")

    async def _drive(self, job: Job, live: LiveJob, recovered: bool) -> None:
        try:
            await self.runner.run(job, live.slot, live.stop, recovered)
        finally:
            self.live.pop(job.job_id, None)
            self.placer.release(live.slot)
            self.wake()

    # -- stop ---------------------------------------------------------------------------------

    async def stop(self, job_id: str) -> None:
        """Ask a job to stop: a running one is killed (after a grace) and still publishes its logs
        and partial outputs; a queued one ends at 7 at once; a finished one is left as it is."""
        if not await self.store.request_stop(job_id):
            return  # terminal already
        live = self.live.get(job_id)
        if live is not None:
            live.stop.set()
            return
        queued = await self.store.get(job_id)
        env = self.settings.environment(queued.environment) if queued else None
        now = time.time()
        try:
            job = await self.store.transition(job_id, JobStatus.STOPPED, expect=JobStatus.QUEUED,
                                              error="stopped by its owner before it started", date_finished=now,
                                              expires_at=now + (env.storageExpiry if env else 0))
        except (IllegalTransition, KeyError):
            return  # admitted meanwhile: the runner sees stopreq when it starts
        self.runner.hooks.status(job, JobStatus.QUEUED)

    async def wait_done(self, job_id: str, timeout: float) -> bool:
        """Wait until a live job's runner has finished (used before deleting it)."""
        live = self.live.get(job_id)
        if live is None or live.task is None:
            return True
        done, _ = await asyncio.wait({live.task}, timeout=timeout)
        return bool(done)
