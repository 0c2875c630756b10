"""JobRunner: drives one job through provision → algorithm → filter → publish, recording every
status as it happens. `run` resumes from whatever status the job is in, so the same code serves a
fresh job and one recovered after a crash.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable, TypeVar

from runnerd import logs
from runnerd.clock import SYSTEM, Clock
from runnerd.config import Settings
from runnerd.containers import spec as specs
from runnerd.containers.runtime import ContainerRuntime, ContainerSpec
from runnerd.containers.site import TRANSFER_FAILED, JobSite
from runnerd.domain import PROBABLY_OOM, STOPREQ_TIMEOUT, STOPREQ_USER, Job, JobStatus, ResolvedImages, ResultFile
from runnerd.domain import Slot, StepKind, StepState
from runnerd.engine import reasons
from runnerd.engine.images import Images
from runnerd.engine.publisher import collect_results, log_provision_detail, occupied_bytes, read_report
from runnerd.engine.run_handle import Ending, RunHandle, termination
from runnerd.engine.steps import LogCapture, Outage, StepDriver, StepOutcome
from runnerd.engine.terms import applied
from runnerd.engine.trust import Trust
from runnerd.errors import AssetUnavailable, ContainerRefused, ImageMissing, RuntimeUnavailable, SiteLost
from runnerd.errors import WorkspaceError
from runnerd.hooks import Hooks
from runnerd.layout import JobPaths
from runnerd.store import JobStore

log = logging.getLogger("runnerd.runner")

S = JobStatus
T = TypeVar("T")
_CONFIG_LOG_LIMIT = 1024 * 1024
STOPPED_BY_OWNER = "stopped by its owner"


class JobRunner:
    """Shared by every running job; what belongs to one run is on its RunHandle."""

    def __init__(self, settings: Settings, store: JobStore, runtime: ContainerRuntime, workspace: JobSite,
                 images: Images, hooks: Hooks | None = None, clock: Clock = SYSTEM, trust: Trust | None = None):
        self.settings = settings
        self.clock = clock
        self.trust = trust or Trust.off(settings, store, runtime)  # #15: digests, guard, usage, attestation
        self.store = store
        self.runtime = runtime
        self.workspace = workspace
        self.images = images
        self.hooks = hooks or Hooks()
        self.steps = StepDriver(store, runtime, settings.stopGraceSeconds, settings.dockerOutageSeconds,
                                self.hooks, clock)

    async def _move(self, h: RunHandle, status: JobStatus, **fields: Any) -> None:
        """A step forward of the job being driven: the handle then holds the row as written."""
        h.job = (await self._record(h.job, status, **fields)).with_plan(h.job.plan)

    async def _record(self, job: Job, status: JobStatus, **fields: Any) -> Job:
        old = job.status
        job = await self.store.transition(job.job_id, status, **fields)
        if old != status:
            if status.terminal and status not in (S.COMPLETED, S.STOPPED):  # once, where `-p warning` sees it
                log.warning("job %s: %d %s: %s", job.job_id, int(status), status.text, job.error or "no reason")
            else:
                log.info("job %s: %d %s", job.job_id, int(status), status.text)
            self.hooks.status(job, old)
        return job

    async def run(self, job: Job, slot: Slot, stop: asyncio.Event, recovered: bool = False) -> Job:
        """Drive the job to a terminal status. `recovered`: found in flight at start-up, so
        containers of steps that ended before the crash may still exist and are cleaned up."""
        with logs.about_job(job.job_id):
            return await self._run(job, slot, stop, recovered)

    async def _run(self, row: Job, slot: Slot, stop: asyncio.Event, recovered: bool) -> Job:
        env = self.settings.environment(row.environment)
        if env is None:  # the environment was removed from the config while the job was in flight
            return await self._close(row, self.workspace.paths(row.job_id), 0, S.INTERRUPTED,
                                     f"environment {row.environment!r} no longer exists")
        h: RunHandle | None = None
        try:
            planned = await self.store.planned(row.job_id)
            if planned is None:  # deleted or ended meanwhile: nothing to drive
                return await self.store.get(row.job_id) or row
            env = applied(env, planned.terms)  # its own run time and CPUs, within the environment's
            h = RunHandle(planned, env, slot, self.workspace.paths(row.job_id), stop, recovered,
                          adapt=lambda kind, spec: self.workspace.step_spec(planned, env, kind, spec))
            if h.job.stopreq:
                stop.set()
            return await self._pipeline(h)
        except asyncio.CancelledError:
            raise  # shutdown: leave containers alone, recovery picks the job up
        except RuntimeUnavailable as exc:  # an outage outlasted dockerOutageSeconds outside a step
            log.warning("job %s: Docker unreachable for more than %.0fs: %s", row.job_id,
                        self.settings.dockerOutageSeconds, exc)
            why = f"Docker was unreachable for more than {self.settings.dockerOutageSeconds:.0f}s"
        except Exception as exc:  # noqa: BLE001 - a bug must end the job, never leave it hanging
            why = reasons.internal("the job was interrupted by an internal error", exc, row.job_id, traceback=True)
        return await self._end_anyway(row, why, h)

    async def _end_anyway(self, row: Job, why: str, h: RunHandle | None) -> Job:
        """End a job at 76 whatever state it was left in: ending a job must not be able to fail
        (a job left at 60 would hold its slot, and its queue place, forever)."""
        current = await self.store.get(row.job_id)
        if current is None or current.terminal:
            return current or row
        env = h.env if h else self.settings.environment(row.environment)
        expiry = env.storageExpiry if env else 0
        try:
            if h is not None:
                await h.early_creates_done()
            return await self._close(current, h.paths if h else self.workspace.paths(row.job_id), expiry,
                                     S.INTERRUPTED, why)
        except Exception as exc:  # noqa: BLE001 - the bare transition below is the last resort
            log.error("job %s: ending it failed (%s: %s); ending it without its logs", row.job_id,
                      type(exc).__name__, exc)
        now = time.time()
        return await self._record(current, S.INTERRUPTED, error=why, date_finished=now, results=[],
                                  expires_at=now + expiry)

    def _outage(self) -> Outage:
        return Outage(self.settings.dockerOutageSeconds, self.hooks.docker, self.clock)

    async def _pipeline(self, h: RunHandle) -> Job:
        if h.job.status in (S.STARTED, S.CONFIGURING):
            await self._move(h, S.CONFIGURING)
            resolving = asyncio.ensure_future(self._outage().retry(lambda: self._images_of(h)))
            try:
                # a cluster site talks to its manager: its outages are waited out like Docker's
                await self._outage().retry(lambda: self.workspace.prepare(h.job, h.env))
            except AssetUnavailable as exc:  # its own words are the consumer's (DID and file index only)
                resolving.cancel()
                return await self._finish_early(h, S.DATA_PROVISIONING_FAILED, str(exc))
            except (WorkspaceError, OSError) as exc:
                resolving.cancel()
                return await self._finish_early(h, S.DATA_PROVISIONING_FAILED, reasons.internal(
                    "the job's volume could not be prepared", exc, h.job_id))
            self.trust.prefetch(h.job, h.paths)  # local inputs hashed beside the job (once per file version)
            images = await self._unless_stopped(resolving, h.stop)  # a pull may take long: a stop wins
            if images is None:
                return await self._finish_stopped(h)
            if isinstance(images, Ending):
                return await self._finish_early(h, images.status, images.error)
            await self._move(h, S.CONFIGURING, images=images)
            if h.stop.is_set():
                return await self._finish_stopped(h)
            # Create the algorithm and filter containers while provisioning runs. With nothing to
            # provision the algorithm's create is the critical path; making the filter's beside it
            # measured the same as making it while the algorithm runs (#13, 2 cores), and is simpler.
            h.early = asyncio.gather(
                self.steps.create(h.job_id, StepKind.ALGORITHM, h.algorithm_spec(self.settings)),
                self.steps.create(h.job_id, StepKind.FILTER, h.filter_spec(self.settings)))
            if self.workspace.remote or specs.provision_plan(h.job, self.settings)["downloads"]:
                ending = await self._provision(h)
                if ending is not None:
                    return await self._finish_early(h, ending.status, ending.error, **ending.extra)
            else:  # every input and the code are already in place: a container would have nothing to do
                started = time.monotonic()
                await self.workspace.write_log(h.job_id, "configuration.log", specs.prepared_locally(h.job))
                self.hooks.step(StepKind.PROVISION, time.monotonic() - started)  # the step ran, in runnerd
            await self._move(h, S.PROVISIONED)
        if h.job.status == S.PROVISIONED:
            await h.early_creates_done()
            try:
                await self.steps.create(h.job_id, StepKind.ALGORITHM, h.algorithm_spec(self.settings), strict=True)
            except ImageMissing as exc:  # image removed since
                return await self._finish_early(h, S.ALGORITHM_PROVISIONING_FAILED, str(exc))
            except ContainerRefused as exc:  # a spec Docker refuses (its explanation names host paths)
                return await self._finish_early(h, S.ALGORITHM_PROVISIONING_FAILED, reasons.internal(
                    "Docker refused the algorithm's container", exc, h.job_id))
            if h.stop.is_set():
                return await self._finish_stopped(h)
            await self._move(h, S.RUNNING)
        if h.job.status == S.RUNNING:
            if lost := await self._ensure_site(h):  # after a host reboot
                return await self._finish_early(h, lost.status, lost.error)
            self.trust.follow(h.job, h.paths)
            ending = await self._algorithm(h)
            fields = dict(ending=ending.status, error=ending.error, termination=ending.termination, **ending.extra,
                          **await self.trust.finish(h.job))  # its usage and the image it ran (#15)
            if ending.status in (S.OUTPUT_LIMITS_EXCEEDED, S.INTERRUPTED):
                # What a job that overran its quota wrote is incomplete by definition, and keeping it
                # would move up to diskGB onto the host; an interrupted job's outputs cannot be
                # trusted either (and Docker may still be away): publish their logs only.
                await self._move(h, S.PUBLISHING, results=collect_results(h.paths, with_outputs=False), **fields)
            else:
                await self._move(h, S.FILTERING, **fields)
        if h.job.status == S.FILTERING:
            if lost := await self._ensure_site(h):
                return await self._finish_early(h, lost.status, lost.error)
            await self._filter(h)
        if h.job.status == S.PUBLISHING:
            return await self._publish(h)
        return h.job

    async def _ensure_site(self, h: RunHandle) -> Ending | None:
        """The job's /data is there again (or still, on a cluster node); an Ending if it is lost."""
        try:
            await self._outage().retry(lambda: self.workspace.ensure_mounted(h.job, h.env))
        except SiteLost as exc:
            return Ending(S.INTERRUPTED, f"the job was interrupted: {exc}")
        return None

    # -- steps --------------------------------------------------------------------------------

    async def _provision(self, h: RunHandle) -> Ending | None:
        outcome = await self._helper_step(h, StepKind.PROVISION, h.provision_spec(self.settings),
                                          h.log("configuration.log", _CONFIG_LOG_LIMIT), h.stop)
        if outcome.stopped:
            return Ending(S.STOPPED, STOPPED_BY_OWNER, extra={"stopreq": STOPREQ_USER})
        if outcome.refused:
            return Ending(S.DATA_PROVISIONING_FAILED, f"the provision step could not start: {outcome.refused}")
        if outcome.lost:
            return Ending(S.INTERRUPTED, f"provisioning: {outcome.lost}")
        assert outcome.exit is not None
        report = read_report(h.paths.provision_report) or {}
        log_provision_detail(h.job_id, report.get("detail"))
        if outcome.exit.exit_code == 0:
            return None
        status = S.ALGORITHM_PROVISIONING_FAILED if report.get("failed") == "algorithm" \
            else S.DATA_PROVISIONING_FAILED
        # The report's `error` is the step's consumer-safe text (a label and a fixed reason, no URL).
        reason = report.get("error") or f"the provision step exited with {outcome.exit.exit_code}"
        if outcome.exit.oom_killed:
            reason = "the provision step ran out of memory"
        return Ending(status, str(reason)[:2000])

    async def _helper_step(self, h: RunHandle, kind: StepKind, build: Callable[[], ContainerSpec], capture: LogCapture,
                           stop: asyncio.Event | None = None) -> StepOutcome:
        """Provision and filter are runnerd's own, idempotent code: if their container is lost, or
        on a cluster site its agent could not reach runnerd, they are simply run again (once)."""
        started = time.monotonic()
        for attempt in range(2):
            outcome = await self.steps.run(h.job_id, kind, build, max_seconds=self.settings.helperStepTimeout,
                                           stop=stop, logs=capture)
            # On a cluster a lost step means a lost node, and the job's volumes with it: no rerun there
            again = (outcome.exit is not None and outcome.exit.exit_code == TRANSFER_FAILED) if self.workspace.remote \
                else bool(outcome.lost)
            if not again or attempt == 1:
                break
            log.warning("job %s: %s step %s; running it again", h.job_id, kind.value,
                        f"lost ({outcome.lost})" if outcome.lost else "could not reach runnerd")
            await self.steps.forget(h.job_id, kind)
        self.hooks.step(kind, time.monotonic() - started)
        return outcome

    async def _images_of(self, h: RunHandle) -> ResolvedImages | Ending:
        """Resolve (pull if allowed) the algorithm's and the helper's images, and the VOLUMEs they
        declare; an Ending if one is not available."""
        algo = h.job.plan.algorithm
        raw = None if algo.did else h.env.rawAlgorithmImages  # the consumer's choice
        c = algo.container
        auth = self.images.auth_for(h.job_id)  # a private image's per-job credentials (#15)
        image, helper = await asyncio.gather(self.images.resolve(c.image, c.tag, c.checksum, raw, auth),
                                             self.images.resolve_ref(self.settings.helperImage),
                                             return_exceptions=True)
        if isinstance(helper, ImageMissing):  # an operator problem: say so, and how to fix it
            return Ending(S.DATA_PROVISIONING_FAILED, f"the helper image is not available: {helper} "
                          "(run `runnerd doctor`)")
        if isinstance(image, ImageMissing):
            return Ending(S.ALGORITHM_PROVISIONING_FAILED, str(image))
        if isinstance(image, BaseException):
            raise image
        if isinstance(helper, BaseException):
            raise helper
        try:
            volumes, helper_volumes = await asyncio.gather(self.images.volumes(image), self.images.volumes(helper))
        except ImageMissing as exc:  # removed in between
            return Ending(S.ALGORITHM_PROVISIONING_FAILED, str(exc))
        return ResolvedImages(image, tuple(volumes), tuple(helper_volumes))

    @staticmethod
    async def _unless_stopped(task: asyncio.Future[T], stop: asyncio.Event) -> T | None:
        """The task's result, or None (and the task cancelled) if a stop comes first."""
        stopper = asyncio.ensure_future(stop.wait())
        waiting: set[asyncio.Future[Any]] = {task, stopper}
        done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if task in done:
            return task.result()
        task.cancel()
        return None

    async def _algorithm(self, h: RunHandle) -> Ending:
        env = h.env
        started = time.monotonic()
        outcome = await self.steps.run(h.job_id, StepKind.ALGORITHM, h.algorithm_spec(self.settings),
                                       max_seconds=env.maxJobDuration, stop=h.stop,
                                       logs=h.log("algorithm.log", env.log_bytes, follow=True))
        self.hooks.step(StepKind.ALGORITHM, time.monotonic() - started)
        if outcome.lost or outcome.refused:
            return Ending(S.INTERRUPTED, f"the algorithm was interrupted: {outcome.lost or outcome.refused}",
                          termination("lost"))
        result = outcome.exit
        if result is None:  # stopped before its container started
            return Ending(S.STOPPED, STOPPED_BY_OWNER, termination("stopped"), {"stopreq": STOPREQ_USER})
        if outcome.stopped:
            return Ending(S.STOPPED, STOPPED_BY_OWNER, termination("stopped", result), {"stopreq": STOPREQ_USER})
        if outcome.timed_out:
            return Ending(S.TIMED_OUT, f"the algorithm ran longer than maxJobDuration ({env.maxJobDuration:g}s)",
                          termination("timeout", result), {"stopreq": STOPREQ_TIMEOUT})
        if result.oom_killed:
            return Ending(S.OUT_OF_MEMORY, f"the algorithm used more than ramGB ({env.ramGB:g} GB) and was killed",
                          termination("oom", result))
        if result.exit_code == 137 and result.error == PROBABLY_OOM:  # no OOM flag: say what is likely
            return Ending(S.OUT_OF_MEMORY, "the algorithm was killed by a SIGKILL runnerd did not send: most likely "
                          f"it used more than ramGB ({env.ramGB:g} GB); this backend reports no OOM flag",
                          termination("oom_probable", result))
        if result.exit_code != 0 and await self.workspace.disk_full(h.job, env):
            return Ending(S.OUTPUT_LIMITS_EXCEEDED, f"the algorithm filled its disk quota (diskGB {env.diskGB:g})",
                          termination("disk_quota", result))
        if result.exit_code in (137, 143):
            signal = "SIGKILL" if result.exit_code == 137 else "SIGTERM"
            return Ending(S.ALGORITHM_FAILED, f"the algorithm was killed by {signal} (exit code {result.exit_code}),"
                          " not by runnerd", termination("signal", result))
        if result.exit_code != 0:
            return Ending(S.ALGORITHM_FAILED, f"the algorithm exited with code {result.exit_code}",
                          termination("exit_code", result))
        return Ending(S.COMPLETED, None, termination("exited", result))

    async def _filter(self, h: RunHandle) -> None:
        await self.trust.write_guard(h.job, h.paths)  # the digests its egress guard checks outputs against
        outcome = await self._helper_step(h, StepKind.FILTER, h.filter_spec(self.settings),
                                          h.log("filtering.log", _CONFIG_LOG_LIMIT))
        ending, error = h.job.ending or S.COMPLETED, h.job.error
        publish_outputs = True
        if outcome.lost or outcome.exit is None or outcome.exit.exit_code != 0:
            publish_outputs = False
            report = read_report(h.paths.results_report) or {}
            if outcome.exit is not None and outcome.exit.exit_code == 3 and report.get("reason") == "limits":
                why, status = f"outputs rejected: {report.get('error', 'limits exceeded')}", S.OUTPUT_LIMITS_EXCEEDED
            else:
                code = outcome.exit.exit_code if outcome.exit else "?"
                cause = outcome.lost or outcome.refused or report.get("error") or f"exit code {code}"
                why, status = f"results filtering failed: {cause}", S.FILTERING_FAILED
            if ending == S.COMPLETED:
                ending, error = status, why
            else:
                error = f"{error}; {why}" if error else why
        await self._move(h, S.PUBLISHING, ending=ending, error=error,
                         results=collect_results(h.paths, with_outputs=publish_outputs))

    # -- endings ------------------------------------------------------------------------------

    async def _publish(self, h: RunHandle) -> Job:
        job = h.job
        if not job.results:
            job.results = _logs_only(h.paths)
        now = time.time()
        results = await self.trust.attest(job, h.env, h.paths, job.results, now)  # + the attestation (#15)
        await asyncio.gather(self.workspace.release_fs(job.job_id), self.steps.settle(job.job_id))
        # A container created early but never started (the filter after a quota overrun), or,
        # after a crash, one whose removal was lost.
        await self.remove_containers(job.job_id, only_unstarted=not h.recovered)
        return await self._record(job, job.ending or S.COMPLETED, date_finished=now, results=results,
                                  expires_at=now + h.env.storageExpiry, result_bytes=occupied_bytes(h.paths))

    async def _finish_stopped(self, h: RunHandle) -> Job:
        """A stop that came before the algorithm ran: nothing ran, only logs are kept."""
        return await self._finish_early(h, S.STOPPED, STOPPED_BY_OWNER, stopreq=STOPREQ_USER)

    async def _finish_early(self, h: RunHandle, status: JobStatus, error: str | None, **extra: Any) -> Job:
        """End a job that never reached (or lost) its algorithm: publish only its logs."""
        await h.early_creates_done()
        return await self._close(h.job, h.paths, h.env.storageExpiry, status, error, **extra)

    async def _close(self, job: Job, paths: JobPaths, expiry: float, status: JobStatus, error: str | None,
                     **extra: Any) -> Job:
        """End the job with only its logs published (also for a job that has no handle)."""
        await self.steps.settle(job.job_id)
        await self.remove_containers(job.job_id)
        results = _logs_only(paths)
        await self.workspace.release_fs(job.job_id)  # never fails: a failed cleanup is retried later
        now = time.time()
        return await self._record(job, status, error=error, date_finished=now, results=results,
                                  expires_at=now + expiry, result_bytes=occupied_bytes(paths), **extra)

    async def remove_containers(self, job_id: str, only_unstarted: bool = False) -> None:
        """Remove the containers of a job's recorded steps (all, or only those never started)."""
        for rec in (await self.store.steps(job_id)).values():
            if only_unstarted and rec.state not in (StepState.CREATING, StepState.CREATED):
                continue
            if rec.container_id:
                await self.steps.remove(rec.container_id)


def _logs_only(paths: JobPaths) -> list[ResultFile]:
    """The logs a job publishes when it has nothing else; none rather than a job that cannot end."""
    try:
        return collect_results(paths, with_outputs=False)
    except OSError as exc:
        log.error("cannot list the logs of %s: %s", paths.root.name, exc)
        return []
