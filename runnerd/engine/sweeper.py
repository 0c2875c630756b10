"""Periodic housekeeping: expired results, old rows, containers no job owns, job folders no row owns.

Nomad's dangling-container reconciler is the model: Docker can create a container while the API
call that asked for it fails, so anything labelled runnerd.job that no live job owns is removed
once it is older than a grace period.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

from runnerd.clock import SYSTEM, Clock
from runnerd.containers.runtime import ContainerRuntime
from runnerd.containers.site import JobSite
from runnerd.errors import RuntimeUnavailable
from runnerd.store import JobStore

log = logging.getLogger("runnerd.sweeper")


class Sweeper:
    def __init__(self, store: JobStore, runtime: ContainerRuntime, workspace: JobSite,
                 live_ids: Callable[[], set[str]], grace: float, interval: float, retention: float = 2592000,
                 clock: Clock = SYSTEM):
        self.store = store
        self.clock = clock
        self.runtime = runtime
        self.workspace = workspace
        self.live_ids = live_ids
        self.grace = grace
        self.interval = interval
        self.retention = retention
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="sweeper")

    async def shutdown(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            await self.clock.sleep(self.interval)
            try:
                await self.sweep_once(self.clock.now())
            except Exception:  # housekeeping must never take the daemon down
                log.exception("sweep failed")

    async def sweep_once(self, now: float | None = None) -> dict[str, int]:
        now = time.time() if now is None else now
        expired = await self.expire(now)
        pruned = await self.prune(now)
        containers = await self.remove_orphan_containers(now)
        folders = await self.remove_orphan_folders()
        cleanups = await self.retry_cleanups()
        return {"expired": expired, "pruned": pruned, "containers": containers, "folders": folders,
                "cleanups": cleanups}

    async def expire(self, now: float) -> int:
        """Delete the results of jobs whose storageExpiry has passed; their status says removed: 1."""
        jobs = await self.store.expired(now)
        for job in jobs:
            await self.workspace.remove(job.job_id)
            # The row stays so its owner sees `removed: 1`; what it carried (code, custom data) goes,
            # the restart record too (up to maxRequestBytes; a restart then says restart_unavailable).
            await self.store.update(job.job_id, removed=1, results=[], spec=None, request=None)
            log.info("job %s: results expired and removed", job.job_id)
        return len(jobs)

    async def prune(self, now: float) -> int:
        """Delete the rows of jobs whose results expired more than `retention` ago (until then
        their status still answers removed: 1), and let the database file shrink by what they held."""
        pruned = await self.store.prune(now - self.retention)
        if pruned:
            await self.store.db.reclaim()
            log.info("pruned %d job rows whose results expired over %gs ago", pruned, self.retention)
        return pruned

    async def remove_orphan_containers(self, now: float) -> int:
        try:
            owned = await self.runtime.list_owned()
        except RuntimeUnavailable:
            return 0
        active = self.live_ids() | {j.job_id for j in await self.store.active()}
        known = await self.store.all_ids()
        removed = 0
        for c in owned:
            if c.job_id in active:
                continue
            # A finished job's container can go at once. One whose job is unknown may belong to a
            # job being created right now (its row is written first, but listings race): wait.
            if c.job_id not in known and now - c.created < self.grace:
                continue
            try:
                await self.runtime.remove(c.id)
                removed += 1
                log.info("removed orphan container %s (job %s, step %s)", c.name, c.job_id, c.step)
            except RuntimeUnavailable as exc:
                log.warning("cannot remove orphan container %s: %s", c.name, exc)
        prune = getattr(self.runtime, "prune_networks", None)  # a cluster's per-job networks (#17)
        if prune is not None:
            try:
                await prune()
            except RuntimeUnavailable as exc:
                log.warning("cannot prune the jobs' networks: %s", exc)
        return removed

    async def retry_cleanups(self) -> int:
        """Cleanups that failed when a job ended (or was deleted or expired): the job's status was
        final regardless; its files are removed here once that works."""
        busy = self.live_ids() | {j.job_id for j in await self.store.active()}
        return await self.workspace.retry_cleanups(busy)

    async def remove_orphan_folders(self) -> int:
        folders = self.workspace.job_dirs()  # listed before the ids: a job's row exists before its folder
        known = await self.store.all_ids()
        stray = [d for d in folders if d not in known]
        for job_id in stray:
            await self.workspace.remove(job_id)
            log.info("removed folder of unknown job %s", job_id)
        return len(stray)
