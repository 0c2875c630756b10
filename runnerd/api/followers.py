"""Live-log followers (`computeLogs?follow=1`): bounded, woken by the log's growth, ended at shutdown.

A follower holds a connection for as long as the job runs, so their number is capped per job,
per owner and in all (config `logFollowersPerJob`, `logFollowersPerOwner`, `logFollowersTotal`).
One watcher task per followed job looks at the log file's size and the job's status, and wakes
every follower of that job when either changes: followers of one job cost one stat() per tick
between them, and none reads the file unless it grew. On shutdown every follower is woken and
ends its response, so an open follow never holds up the daemon's exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from aiohttp import web

from runnerd.config import Settings
from runnerd.domain import JobStatus
from runnerd.errors import TooManyRequests, Unavailable

_TICK = 0.2  # how often a watcher looks at its log file and job status
_NUDGE = 5.0  # followers are woken at least this often, to notice a client that went away


class TooManyFollowers(TooManyRequests):
    http_status = 429
    default_code = "too_many_followers"


@dataclass
class _Watch:
    count: int = 0
    event: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None

    def fire(self) -> None:
        """Wake everyone waiting on the current event; later waits get a fresh one."""
        event, self.event = self.event, asyncio.Event()
        event.set()


class Followers:
    def __init__(self, settings: Settings, status_of: Callable[[str], JobStatus | None]):
        self.settings = settings
        self.status_of = status_of
        self.closing = asyncio.Event()
        self._watches: dict[str, _Watch] = {}
        self._owners: Counter[str] = Counter()
        self._total = 0

    @contextlib.contextmanager
    def follow(self, job_id: str, owner: str, path: Path) -> Iterator[_Watch]:
        """Admit one follower of `job_id` (429 beyond the caps) for the duration of the block."""
        s, owner_lc = self.settings, owner.lower()
        watch = self._watches.get(job_id)
        if self.closing.is_set():
            raise Unavailable("runnerd is shutting down; follow the log again once it is back")
        if watch is not None and watch.count >= s.logFollowersPerJob:
            raise TooManyFollowers(f"job {job_id} already has {watch.count} live-log followers (the most); "
                                   "close one, or read the log without follow", field="follow")
        if self._owners[owner_lc] >= s.logFollowersPerOwner:
            raise TooManyFollowers(f"{owner} already follows {self._owners[owner_lc]} logs (the most); close one",
                                   field="follow")
        if self._total >= s.logFollowersTotal:
            raise TooManyFollowers("this node serves as many live-log followers as it can; try again later",
                                   field="follow")
        if watch is None:
            watch = self._watches[job_id] = _Watch()
            watch.task = asyncio.create_task(self._watch(job_id, path, watch), name=f"log-watch-{job_id}")
        watch.count += 1
        self._owners[owner_lc] += 1
        self._total += 1
        try:
            yield watch
        finally:
            watch.count -= 1
            self._owners[owner_lc] -= 1
            if not self._owners[owner_lc]:
                del self._owners[owner_lc]
            self._total -= 1
            if not watch.count:
                self._watches.pop(job_id, None)
                if watch.task:
                    watch.task.cancel()

    async def _watch(self, job_id: str, path: Path, watch: _Watch) -> None:
        size, idle = -1, 0.0
        while not self.closing.is_set():
            try:
                now = os.stat(path).st_size
            except OSError:
                now = -1  # not written yet
            status = self.status_of(job_id)
            ended = status is None or status.terminal
            idle += _TICK
            if now != size or ended or idle >= _NUDGE:
                size, idle = now, 0.0
                watch.fire()
            if ended:
                return
            await asyncio.sleep(_TICK)
        watch.fire()

    def close(self) -> None:
        """Shutdown: every follower ends its response now."""
        self.closing.set()
        for watch in list(self._watches.values()):
            watch.fire()


FOLLOWERS = web.AppKey("followers", Followers)


def install(app: web.Application, settings: Settings, status_of: Callable[[str], JobStatus | None]) -> None:
    app[FOLLOWERS] = Followers(settings, status_of)

    async def on_shutdown(app: web.Application) -> None:
        app[FOLLOWERS].close()

    app.on_shutdown.append(on_shutdown)
