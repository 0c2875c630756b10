"""StepDriver: one step's container from create to removal, resumable after a crash.

Each Docker action is preceded by a step record in the store (creating → created → running →
exited), so a restarted daemon knows exactly where it was: a `creating` container never ran and is
replaced; a `running` one is re-attached (or started, if the crash fell between the record and the
start); an `exited` one has its result collected. A container that vanished is `abandoned`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, TypeVar

from runnerd.clock import SYSTEM, Clock
from runnerd.containers.runtime import ContainerRuntime, ContainerSpec
from runnerd.domain import ExitResult, StepKind, StepState
from runnerd.engine import reasons
from runnerd.errors import ContainerGone, ContainerRefused, ImageMissing, RuntimeUnavailable
from runnerd.hooks import Hooks
from runnerd.store import JobStore, StepRecord

log = logging.getLogger("runnerd.steps")
T = TypeVar("T")

# Exit codes of a container killed by SIGTERM/SIGKILL (128 + signal, as tini reports them).
_KILLED = (137, 143)
# How long after such an exit runnerd watches whether dockerd is going away: its shutdown stops
# containers with their stop timeout (10 s) within its shutdown-timeout (15 s by default).
DOCKER_SHUTDOWN_WATCH = 20.0
_WATCH_PING = 0.5  # how often Docker is pinged during that watch
LOST_WITH_DOCKER = "its container was lost when Docker restarted"


@dataclass(frozen=True)
class StepOutcome:
    exit: ExitResult | None = None
    timed_out: bool = False
    stopped: bool = False
    lost: str | None = None  # why the container's result cannot be trusted
    refused: str | None = None  # Docker refused to create the container (configuration problem)
    started_at: float | None = None


@dataclass(frozen=True)
class LogCapture:
    path: str
    limit: int
    follow: bool  # stream while the container runs (the algorithm) or copy once at the end


class Outage:
    """Retry a runtime call while Docker is unreachable, with backoff, for at most `limit` seconds
    in total across the step; then give up (the job ends at 76)."""

    def __init__(self, limit: float, on_change: Callable[[bool], None] | None = None, clock: Clock = SYSTEM):
        self.limit, self.spent, self.seen = limit, 0.0, False
        self._on_change = on_change
        self._clock = clock

    async def retry(self, call: Callable[[], Awaitable[T]]) -> T:
        delay = 0.2
        while True:
            try:
                result = await call()
                if self.seen and self._on_change:
                    self._on_change(True)
                return result
            except RuntimeUnavailable as exc:
                self.seen = True
                if self._on_change:
                    self._on_change(False)
                if self.spent >= self.limit:
                    raise
                log.warning("Docker unavailable (%s); retrying in %.1fs", exc, delay)
                await self._clock.sleep(delay)
                self.spent += delay
                delay = min(delay * 2, 5.0)


class StepDriver:
    def __init__(self, store: JobStore, runtime: ContainerRuntime, stop_grace: float, outage_limit: float,
                 hooks: Hooks | None = None, clock: Clock = SYSTEM):
        self.store = store
        self.clock = clock
        self.runtime = runtime
        self.stop_grace = stop_grace
        self.outage_limit = outage_limit
        self.hooks = hooks  # docker(up) and container_start(seconds)
        self._removals: dict[str, list[asyncio.Task[None]]] = {}  # job id -> container removals under way

    async def create(self, job_id: str, kind: StepKind, build: Callable[[], ContainerSpec],
                     strict: bool = False) -> None:
        """Create a later step's container ahead of time (while the current step runs), so that
        its start is all that is left on the critical path. Unless `strict`, a failure is left
        for `run` to retry and report; with `strict`, ImageMissing is raised."""
        rec = (await self.store.steps(job_id)).get(kind)
        if rec is not None and rec.state != StepState.CREATING:
            return
        try:
            await self._create(rec, job_id, kind, build, Outage(self.outage_limit if strict else 0, clock=self.clock))
        except (ImageMissing, ContainerRefused):
            if strict:
                raise
        except Exception as exc:  # noqa: BLE001 - `run` retries the creation and reports properly
            log.debug("job %s: early create of %s failed: %s", job_id, kind.value, exc)

    async def _create(self, rec: StepRecord | None, job_id: str, kind: StepKind,
                      build: Callable[[], ContainerSpec], outage: Outage) -> StepRecord:
        spec = build()
        rec = StepRecord(job_id, kind, StepState.CREATING, spec.name)
        await self.store.save_step(rec)
        rec.container_id = await outage.retry(lambda: self.runtime.create(spec))
        rec.state = StepState.CREATED
        await self.store.save_step(rec)
        return rec

    async def run(self, job_id: str, kind: StepKind, build: Callable[[], ContainerSpec], *,
                  max_seconds: float | None = None, stop: asyncio.Event | None = None,
                  logs: LogCapture | None = None) -> StepOutcome:
        """Run (or resume) the step and return how it ended. `max_seconds` counts from the
        container's start, across restarts of runnerd."""
        outage = Outage(self.outage_limit, self.hooks.docker if self.hooks else None, self.clock)
        rec = (await self.store.steps(job_id)).get(kind)
        if rec is not None and rec.state == StepState.EXITED:
            return StepOutcome(ExitResult(rec.exit_code or 0, bool(rec.oom_killed)), started_at=rec.started_at)
        if rec is not None and rec.state == StepState.ABANDONED:
            return StepOutcome(lost=rec.error or "its container was lost", started_at=rec.started_at)
        try:
            asked = time.monotonic()
            if rec is None or rec.state == StepState.CREATING:
                rec = await self._create(rec, job_id, kind, build, outage)
            assert rec.container_id is not None
            cid = rec.container_id
            reattach = rec.state == StepState.RUNNING
            if rec.state == StepState.CREATED:
                if stop is not None and stop.is_set():
                    await self.remove(cid)
                    return StepOutcome(stopped=True)
                rec = await self._start(rec, job_id, kind, build, outage)
                assert rec.container_id is not None  # _start returns a record with its container
                cid = rec.container_id
                outage.seen = False  # only an outage while it runs can explain how it ends
                if self.hooks:
                    self.hooks.container_start(time.monotonic() - asked)
            elif reattach:
                state = await outage.retry(lambda: self.runtime.inspect(cid))
                if state is None:
                    raise ContainerGone(cid)
                if state.status == "created":  # the crash fell between our record and `start`
                    rec.started_at = self.clock.now()
                    await self.store.save_step(rec)
                    await outage.retry(lambda: self.runtime.start(cid))
            return await self._wait(rec, max_seconds, stop, logs, outage, reattach)
        except ContainerGone as exc:
            return await self._abandon(rec, exc.why or "its container was removed outside runnerd")
        except ContainerRefused as exc:  # Docker's explanation names host paths: the log keeps it
            return StepOutcome(refused=reasons.internal(f"Docker refused the {kind.value} step's container", exc,
                                                        job_id))
        except ImageMissing as exc:
            return StepOutcome(refused=str(exc))
        except RuntimeUnavailable as exc:
            log.warning("job %s: %s step: Docker unreachable for more than %.0fs: %s", job_id, kind.value,
                        self.outage_limit, exc)
            return await self._abandon(rec, f"Docker was unreachable for more than {self.outage_limit:.0f}s")

    async def _start(self, rec: StepRecord, job_id: str, kind: StepKind, build: Callable[[], ContainerSpec],
                     outage: Outage) -> StepRecord:
        """Start a created container. One that is gone before it ever started (it vanished with a
        dockerd restart, or its Docker lost its data) never ran: it is created again, once."""
        for attempt in range(2):
            cid = rec.container_id
            assert cid is not None
            rec.state, rec.started_at = StepState.RUNNING, self.clock.now()
            await self.store.save_step(rec)
            try:
                await outage.retry(functools.partial(self.runtime.start, cid))
                return rec
            except ContainerGone:
                if attempt == 1:
                    raise
                log.warning("job %s: the %s container vanished before it started; creating it again", job_id,
                            kind.value)
                fresh = await self._create(rec, job_id, kind, build, outage)
                rec.container_id, rec.state, rec.started_at = fresh.container_id, fresh.state, None
        raise AssertionError("unreachable")

    async def _wait(self, rec: StepRecord, max_seconds: float | None, stop: asyncio.Event | None,
                    logs: LogCapture | None, outage: Outage, reattach: bool) -> StepOutcome:
        cid = rec.container_id
        assert cid is not None
        log_task = None
        if logs is not None and logs.follow:
            if reattach:
                open(logs.path, "wb").close()  # Docker still has the whole log: copy it again
            log_task = asyncio.create_task(self._copy_logs(cid, logs))
        deadline = (rec.started_at or self.clock.now()) + max_seconds if max_seconds else None
        timed_out = stopped = False
        try:
            result = await self._wait_exit(cid, deadline, stop, outage)
            if result is None:  # deadline passed or stop requested: end it, then collect its exit
                timed_out = not (stop is not None and stop.is_set())
                stopped = not timed_out
                await outage.retry(lambda: self.runtime.stop(cid, self.stop_grace))
                result = await outage.retry(lambda: self.runtime.wait(cid, timeout=self.stop_grace + 60))
                if result is None:
                    raise RuntimeUnavailable("the container did not stop")
        except BaseException:
            if log_task is not None:  # shutdown or failure: the container (and its log) live on
                log_task.cancel()
            raise
        if log_task is not None:
            try:  # the log stream ends with the container; give the copier a moment to drain it
                await asyncio.wait_for(log_task, timeout=10)
            except (asyncio.TimeoutError, Exception):  # noqa: BLE001 - logs are best effort
                log_task.cancel()
        if logs is not None and not logs.follow:
            open(logs.path, "wb").close()  # a copy interrupted by a crash is redone, not appended to
            await self._copy_logs(cid, logs)
        if result.exit_code in _KILLED and not result.oom_killed and not (timed_out or stopped):
            # SIGTERM/SIGKILL that neither runnerd nor the OOM killer sent. If Docker went away
            # (dockerd stopping without live-restore stops its containers first, then exits), the
            # container was lost with it: 76. Otherwise it is the step's own ending (e.g. the
            # algorithm killed itself, or someone ran `docker stop`): a non-zero exit like any other.
            if reattach:  # it ended while runnerd was down: with Docker or the host, most likely
                return await self._abandon(rec, f"its container was stopped while runnerd was down, most likely by "
                                                f"a Docker or host restart (exit code {result.exit_code})")
            if outage.seen or not await self._docker_stays_up(DOCKER_SHUTDOWN_WATCH):
                log.warning("job %s: %s step ended with exit code %d while Docker went away", rec.job_id,
                            rec.kind.value, result.exit_code)
                return await self._abandon(rec, LOST_WITH_DOCKER)
        rec.state, rec.finished_at = StepState.EXITED, self.clock.now()
        rec.exit_code, rec.oom_killed, rec.error = result.exit_code, result.oom_killed, result.error
        await self.store.save_step(rec)
        # Off the critical path: the next step starts while this container is removed.
        self._removals.setdefault(rec.job_id, []).append(asyncio.create_task(self.remove(cid)))
        return StepOutcome(result, timed_out=timed_out, stopped=stopped, started_at=rec.started_at)

    async def _wait_exit(self, cid: str, deadline: float | None, stop: asyncio.Event | None,
                         outage: Outage) -> ExitResult | None:
        """The container's exit, or None when the deadline passed or a stop was requested first."""
        while True:
            remaining = None if deadline is None else max(0.0, deadline - self.clock.now())
            if remaining == 0.0 or (stop is not None and stop.is_set()):
                return None
            waiter = asyncio.create_task(outage.retry(lambda: self.runtime.wait(cid)))
            # the deadline is a sleep on the clock (not wait's timeout), so a test can move it
            others: list[asyncio.Task[Any]] = []
            if stop is not None:
                others.append(asyncio.create_task(stop.wait()))
            if remaining is not None:
                others.append(asyncio.create_task(self.clock.sleep(remaining)))
            try:
                done, _ = await asyncio.wait({waiter, *others}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in others:
                    task.cancel()
            if waiter in done:
                return waiter.result()
            waiter.cancel()  # the thread blocked in Docker's wait returns once the container stops
            return None

    async def _docker_stays_up(self, window: float) -> bool:
        """Whether Docker keeps answering for `window` seconds. A dockerd that stops (without
        live-restore) first stops its containers, in parallel, each with a grace period, and may
        answer its API meanwhile: a SIGTERM/SIGKILL exit followed by dockerd going away within its
        shutdown time means the container was lost with it, not that the algorithm failed."""
        started = self.clock.monotonic()
        while True:
            try:
                await self.runtime.ping()
            except RuntimeUnavailable:
                self._docker_down()
                return False
            if self.clock.monotonic() - started >= window:
                return True
            await self.clock.sleep(_WATCH_PING)

    async def _copy_logs(self, cid: str, logs: LogCapture) -> None:
        try:
            await self.runtime.copy_logs(cid, logs.path, logs.limit, logs.follow)
        except (ContainerGone, RuntimeUnavailable, OSError) as exc:  # logs are best effort
            log.warning("could not copy logs of %s: %s", cid[:12], exc)

    async def _abandon(self, rec: StepRecord | None, why: str) -> StepOutcome:
        if rec is not None:
            rec.state, rec.error, rec.finished_at = StepState.ABANDONED, why, self.clock.now()
            await self.store.save_step(rec)
            if rec.container_id:
                await self.remove(rec.container_id)
        return StepOutcome(lost=why, started_at=rec.started_at if rec else None)

    async def remove(self, cid: str) -> None:
        """Remove a container; if Docker is away, leave it to the sweep that runs when it is back."""
        try:
            await self.runtime.remove(cid)
        except RuntimeUnavailable as exc:  # removed by the sweep that runs when Docker is back
            self._docker_down()
            log.warning("could not remove container %s: %s", cid[:12], exc)

    def _docker_down(self) -> None:
        if self.hooks:
            self.hooks.docker(False)

    async def settle(self, job_id: str) -> None:
        """Wait for the job's background container removals (before it is declared finished)."""
        tasks = self._removals.pop(job_id, [])
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def forget(self, job_id: str, kind: StepKind) -> None:
        """Drop a step's record so that it runs afresh (provision and filter are safe to repeat)."""
        await self.store.delete_step(job_id, kind)
