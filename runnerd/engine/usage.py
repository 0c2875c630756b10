"""Live resource use of running algorithms (#15): one reader for every running job.

One task samples all watched containers in a single runtime call (cgroup files, microseconds per
container; Docker's one-shot stats only where no cgroup is found) and the jobs' quota filesystems
with statvfs, then sleeps: the rate is bounded by `usageInterval` whatever the number of jobs, and
a slow round delays the next one instead of piling up. Readings are kept in memory; the runner
takes the final figures when the algorithm ends (the last reading, at most one interval old, with
the peaks seen) and stores them with the job and in its attestation.

Nothing here is per owner: the metrics hook gets the environment only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Awaitable, Callable

from runnerd.containers.runtime import ContainerRuntime, ContainerUsage
from runnerd.errors import RuntimeUnavailable

log = logging.getLogger("runnerd.usage")
FORGET_AFTER = 30  # rounds without a reading after which a job is no longer watched


@dataclass(frozen=True)
class JobUsage:
    """What a job used: the latest reading and the peaks seen. Sizes in bytes."""

    cpu_seconds: float = 0.0
    memory_bytes: int = 0
    memory_peak_bytes: int = 0
    pids: int = 0
    pids_peak: int = 0
    disk_bytes: int | None = None  # used on the job's quota filesystem (/data), where it has one
    disk_quota_bytes: int | None = None
    net_rx_bytes: int | None = None  # only where the job has a network
    net_tx_bytes: int | None = None
    samples: int = 0
    updated: float = 0.0  # epoch seconds of the latest reading

    def merge(self, reading: ContainerUsage, now: float) -> "JobUsage":
        # The kernel's high-water mark (v1: max_usage_in_bytes, v2: memory.peak) sees spikes between
        # samples; it counts page cache too, so it is only ever taken with the working set beside it.
        peak = max(self.memory_peak_bytes, reading.memory_bytes, reading.memory_peak_bytes or 0)
        return replace(self, cpu_seconds=max(self.cpu_seconds, reading.cpu_seconds), memory_bytes=reading.memory_bytes,
                       memory_peak_bytes=peak, pids=reading.pids, pids_peak=max(self.pids_peak, reading.pids),
                       net_rx_bytes=reading.net_rx_bytes, net_tx_bytes=reading.net_tx_bytes,
                       samples=self.samples + 1, updated=now)

    def public(self) -> dict[str, Any]:
        """The status object's `usage` (api.md)."""
        return {"cpuSeconds": round(self.cpu_seconds, 3), "memoryBytes": self.memory_bytes,
                "memoryPeakBytes": self.memory_peak_bytes, "pids": self.pids, "pidsPeak": self.pids_peak,
                "diskBytes": self.disk_bytes, "diskQuotaBytes": self.disk_quota_bytes,
                "networkRxBytes": self.net_rx_bytes, "networkTxBytes": self.net_tx_bytes,
                "samples": self.samples, "updated": f"{self.updated:.6f}" if self.updated else None}

    def canonical(self) -> dict[str, Any]:
        """The attestation's form: integers only (CPU in milliseconds), see provenance.py."""
        out = self.public()
        out.pop("updated")
        out["cpuMillis"] = int(round(self.cpu_seconds * 1000))
        out.pop("cpuSeconds")
        return out

    @classmethod
    def from_public(cls, data: Any) -> "JobUsage | None":
        """Back from the stored `usage` JSON (None if absent or malformed)."""
        if not isinstance(data, dict):
            return None
        try:
            def opt(key: str) -> int | None:
                return None if data.get(key) is None else int(data[key])

            return cls(cpu_seconds=float(data.get("cpuSeconds") or 0), memory_bytes=int(data.get("memoryBytes") or 0),
                       memory_peak_bytes=int(data.get("memoryPeakBytes") or 0), pids=int(data.get("pids") or 0),
                       pids_peak=int(data.get("pidsPeak") or 0), disk_bytes=opt("diskBytes"),
                       disk_quota_bytes=opt("diskQuotaBytes"), net_rx_bytes=opt("networkRxBytes"),
                       net_tx_bytes=opt("networkTxBytes"), samples=int(data.get("samples") or 0),
                       updated=float(data.get("updated") or 0))
        except (TypeError, ValueError):
            return None


def disk_usage(path: Path) -> tuple[int, int] | None:
    """(used, size) of the filesystem mounted at `path` (the job's quota fs), or None when the
    job has no filesystem of its own there (diskQuota none: walking it would cost too much)."""
    try:
        if not os.path.ismount(path):
            return None
        st = os.statvfs(path)
    except OSError:
        return None
    return (st.f_blocks - st.f_bfree) * st.f_frsize, st.f_blocks * st.f_frsize


@dataclass
class _Watched:
    job_id: str
    environment: str
    container_id: str | None
    disk: Path | None
    usage: JobUsage = field(default_factory=JobUsage)
    find: Callable[[], Awaitable[str | None]] | None = None  # the container's id, once it has one
    missed: int = 0  # rounds in a row without a reading


# hook(environment, previous usage, new usage): the metrics keep per-environment totals
Hook = Callable[[str, JobUsage, JobUsage], None]


class UsageCollector:
    def __init__(self, runtime: ContainerRuntime, interval: float, hook: Hook | None = None,
                 clock: Callable[[], float] = time.time):
        self.runtime = runtime
        self.interval = interval  # seconds between rounds; 0 turns collection off
        self.hook = hook or (lambda env, old, new: None)
        self.clock = clock
        self._watched: dict[str, _Watched] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.rounds = 0

    @property
    def enabled(self) -> bool:
        return self.interval > 0

    def start(self) -> None:
        if self.enabled and self._task is None:
            self._task = asyncio.create_task(self._loop(), name="usage-collector")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def watch(self, job_id: str, environment: str, container_id: str | None = None, disk: Path | None = None,
              before: JobUsage | None = None, find: Callable[[], Awaitable[str | None]] | None = None) -> None:
        """Sample this job's algorithm container from now on (`before`: figures kept from a run
        before a daemon restart; `find`: how to learn the container's id while it has none yet,
        asked once a round). The first reading comes at once, not an interval later."""
        if not self.enabled:
            return
        self._watched[job_id] = _Watched(job_id, environment, container_id, disk, before or JobUsage(), find)
        self._wake.set()

    def unwatch(self, job_id: str) -> JobUsage | None:
        """Stop sampling; the final figures (None when collection is off or never read)."""
        w = self._watched.pop(job_id, None)
        if w is None:
            return None
        if w.usage.samples:  # it holds no memory any more; its counters stay what they were
            self.hook(w.environment, w.usage, replace(w.usage, memory_bytes=0, pids=0))
        return w.usage if w.usage.samples else None

    def current(self, job_id: str) -> JobUsage | None:
        w = self._watched.get(job_id)
        return w.usage if w is not None and w.usage.samples else None

    async def sample(self) -> None:
        """One round over every watched job (also what the loop runs)."""
        for w in list(self._watched.values()):
            if w.container_id is None and w.find is not None:
                w.container_id = await w.find()
        watched = [w for w in self._watched.values() if w.container_id is not None]
        if not watched:
            return
        readings = await self.runtime.usage([w.container_id for w in watched if w.container_id])
        disks = await asyncio.to_thread(lambda: [disk_usage(w.disk) if w.disk else None for w in watched])
        now = self.clock()
        for w, disk in zip(watched, disks):
            reading = readings.get(w.container_id or "")
            if reading is None and self._watched.get(w.job_id) is w:
                w.missed += 1
                if w.missed >= FORGET_AFTER:  # its run ended without telling (a crash of the runner): let go
                    self.unwatch(w.job_id)
            if reading is None or self._watched.get(w.job_id) is not w:
                continue  # not running (yet, or any more), or unwatched meanwhile
            w.missed = 0
            new = w.usage.merge(reading, now)
            if disk is not None:
                new = replace(new, disk_bytes=disk[0], disk_quota_bytes=disk[1])
            old, w.usage = w.usage, new
            self.hook(w.environment, old, new)
        self.rounds += 1

    async def _loop(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.sample()
            except RuntimeUnavailable:
                pass  # Docker away: the readings wait; the jobs' steps handle the outage
            except Exception:  # a reading must never take the daemon down
                log.exception("usage collection failed; trying again next round")
            self._wake.clear()
            # A round never starts sooner than `interval` after the last began (a new job wakes it).
            delay = max(self.interval - (time.monotonic() - started), 0.05)
            try:
                await asyncio.wait_for(self._wake.wait(), delay)
                await asyncio.sleep(min(0.2, self.interval))  # a burst of new jobs: one round
            except asyncio.TimeoutError:
                pass
