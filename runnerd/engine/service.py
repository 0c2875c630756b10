"""Engine: the command side of the daemon (submit, stop, delete) and its start-up/shut-down order.

Start-up: helper image check → recovery (adopt every in-flight job) → scheduler → sweeper. The API
opens only after `start` returns, so /health is 200 exactly when recovery is done.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable

from runnerd import imageref
from runnerd.catalog import Catalog
from runnerd.chain.gate import ChainGate, Ordered, parts_of, refusal
from runnerd.clock import SYSTEM, Clock
from runnerd.config import Settings
from runnerd.containers.runtime import JOB_NETWORK, ContainerRuntime
from runnerd.domain import Job, JobStatus, JobTerms, PlannedJob
from runnerd.engine import credentials
from runnerd.engine.image_gc import ImageGC
from runnerd.engine.images import Images
from runnerd.engine.intake import Intake
from runnerd.engine.owners import StartRate
from runnerd.engine.placement import Placer
from runnerd.engine.quota_pool import QUOTA_POOL_DIR, QuotaPool
from runnerd.engine.runner import JobRunner
from runnerd.engine.scheduler import Scheduler
from runnerd.engine.site_transfer import SiteTransfer
from runnerd.engine.sweeper import Sweeper
from runnerd.engine.terms import bounded
from runnerd.engine.trust import Trust
from runnerd.engine.usage import Hook
from runnerd.engine.workspace import Workspace
from runnerd.containers.site import JobSite
from runnerd.errors import BadRequest, ImageMissing, RuntimeUnavailable, TooManyRequests, Unavailable
from runnerd.hooks import Hooks
from runnerd.identity import NodeIdentity
from runnerd.store import AgreementInUse, JobStore, OrderUsed, OwnerLimit, QueueFull
from runnerd.store import orders as spent_orders

log = logging.getLogger("runnerd.engine")

# How often /health's view of Docker is refreshed: every 5 s, every second while it is away.
DOCKER_WATCH_UP, DOCKER_WATCH_DOWN = 5.0, 1.0

# Statuses a job can be restarted from: stopped, or failed (never a completed or running one).
RESTARTABLE = frozenset({JobStatus(7), JobStatus(31), JobStatus(32), *(JobStatus(c) for c in range(71, 77))})
_REQUEST_KEYS = ("environment", "dataset", "additionalDatasets", "datasets", "algorithm")


def restart_record(params: dict[str, Any]) -> dict[str, Any]:
    """The part of a start request a restart needs (intake validated it before this is kept)."""
    return {k: params[k] for k in _REQUEST_KEYS if params.get(k) is not None}


class Engine:
    def __init__(self, settings: Settings, store: JobStore, runtime: ContainerRuntime, catalog: Catalog,
                 data_dir: Path, hooks: Hooks | None = None, cores: list[int] | None = None,
                 chain: ChainGate | None = None, clock: Clock = SYSTEM, identity: NodeIdentity | None = None,
                 usage_hook: Hook | None = None, site: JobSite | None = None,
                 placer: Placer | None = None):
        self.settings = settings
        self.clock = clock
        self.store = store
        self.runtime = runtime
        self.catalog = catalog
        self.hooks = hooks or Hooks()
        self.quota_pool = QuotaPool(Path(data_dir) / QUOTA_POOL_DIR)
        # where jobs' /data lives: here (a quota filesystem each), or on a cluster node (#17)
        self.workspace: JobSite = site or Workspace(data_dir, settings.job_ids, self.quota_pool)
        self.images = Images(runtime, settings.imagePull, settings.registryAllow)
        self.intake = Intake(settings, catalog, clock)
        self.chain = chain or ChainGate(settings, "0x" + "0" * 40, "0x" + "1" * 64)  # no key: refuses every order
        self.docker_up = False
        self.hooks.docker = self._docker_changed(self.hooks.docker)
        # #15: provenance and usage (a node identity signs), image hygiene, per-job registry credentials
        self.trust = Trust(settings, store, runtime, identity, data_dir, usage_hook) if identity else \
            Trust.off(settings, store, runtime)
        self.credentials = credentials.Credentials()
        self.image_gc = ImageGC(runtime, data_dir, int(settings.imageCacheGB * 1024**3), self._needed_images)
        self.images.on_pulled, self.images.on_used = self._pulled, self.image_gc.used
        self.images.auth_of = self.credentials.get
        self.hooks.status = self._status_changed(self.hooks.status)
        self.runner = JobRunner(settings, store, runtime, self.workspace, self.images, self.hooks, clock, self.trust)
        self.scheduler = Scheduler(settings, store, self.runner, data_dir, cores, clock, placer)
        self.sweeper = Sweeper(store, runtime, self.workspace, lambda: set(self.scheduler.live),
                               settings.orphanGraceSeconds, settings.sweepIntervalSeconds,
                               settings.jobRetentionSeconds, clock)
        self.starts = StartRate(settings.startsPerMinutePerOwner, clock.monotonic)
        self.site_transfer = SiteTransfer(settings, store, data_dir)  # #17: steps on nodes without runnerd's disk
        self._watch: asyncio.Task[None] | None = None
        self._gc: asyncio.Task[None] | None = None

    def _docker_changed(self, downstream: Callable[[bool], None]) -> Callable[[bool], None]:
        def changed(up: bool) -> None:
            self.docker_up = up
            scheduler = getattr(self, "scheduler", None)
            if scheduler is not None and scheduler.docker_up != up:
                scheduler.docker_up = up  # admission pauses while Docker is away
                if up:
                    scheduler.wake()
            downstream(up)
        return changed

    def _status_changed(self, downstream: Callable[[Job, JobStatus], None]) -> Callable[[Job, JobStatus], None]:
        def changed(job: Job, old: JobStatus) -> None:
            if job.status.terminal or job.status >= JobStatus.PROVISIONED:  # its image is on the host by now
                self.credentials.forget(job.job_id)
            downstream(job, old)
        return changed

    async def _pulled(self, ref: str, was_present: bool) -> None:
        await self.image_gc.pulled(ref, was_present)
        await self.image_gc.collect()

    async def _needed_images(self) -> set[str]:
        """What image GC must keep: the helper image and every queued or running job's image."""
        needed = {self.settings.helperImage}
        for job in [*await self.store.queued(), *await self.store.active()]:
            if job.images is not None:
                needed.add(job.images.algorithm)
            planned = await self.store.planned(job.job_id) if job.images is None else None
            if planned is not None:
                c = planned.plan.algorithm.container
                needed.add(imageref.join(c.image, c.tag, c.checksum))
        return needed

    async def _gc_loop(self) -> None:
        while True:
            await self.image_gc.collect()
            await self.clock.sleep(self.settings.sweepIntervalSeconds)

    async def start(self) -> None:
        await self._check_docker()
        try:
            await self.images.resolve_ref(self.settings.helperImage)
        except (ImageMissing, RuntimeUnavailable) as exc:
            log.error("helper image %s is not available (%s); jobs will fail provisioning until it is. "
                      "Run `runnerd doctor`.", self.settings.helperImage, exc)
        for job in await self.store.active():
            log.info("job %s: recovering at status %d", job.job_id, int(job.status))
            self.scheduler.adopt(job)
        for job in await self.store.queued():
            if self.settings.environment(job.environment) is None:  # removed from the config
                now = time.time()
                await self.store.transition(job.job_id, JobStatus.INTERRUPTED, expect=JobStatus.QUEUED,
                                            error=f"environment {job.environment!r} no longer exists",
                                            date_finished=now, expires_at=now)
                log.warning("job %s: its environment %s is gone from the config; ended at 76", job.job_id,
                            job.environment)
        # Containers of jobs that ended (or vanished) while runnerd was down: remove them now.
        await self.sweeper.remove_orphan_containers(time.time())
        await asyncio.to_thread(self.quota_pool.start, self.settings.environments)  # cleans, then fills aside
        self.scheduler.start()
        self.sweeper.start()
        self._watch = asyncio.create_task(self._watch_docker(), name="docker-watch")
        self.trust.usage.start()
        if self.image_gc.enabled:
            self._gc = asyncio.create_task(self._gc_loop(), name="image-gc")

    async def shutdown(self) -> None:
        if self._watch:
            self._watch.cancel()
        if self._gc:
            self._gc.cancel()
        await self.trust.usage.close()
        await self.sweeper.shutdown()
        await self.scheduler.shutdown()
        await asyncio.to_thread(self.quota_pool.close)

    async def _check_docker(self) -> None:
        try:
            await self.runtime.ping()
            if not self.docker_up:  # first contact, or back after an outage (maybe a new dockerd)
                await self.runtime.ensure_network(JOB_NETWORK)
            self.hooks.docker(True)
        except RuntimeUnavailable as exc:
            log.error("Docker is not reachable: %s", exc)
            self.hooks.docker(False)

    async def _watch_docker(self) -> None:
        """Keep /health honest: ping Docker every few seconds, faster while it is down. When it
        comes back, remove at once what could not be removed while it was away."""
        while True:
            await self.clock.sleep(DOCKER_WATCH_UP if self.docker_up else DOCKER_WATCH_DOWN)
            was_up = self.docker_up
            await self._check_docker()
            if self.docker_up and not was_up:
                await self.sweeper.remove_orphan_containers(time.time())

    # -- commands -----------------------------------------------------------------------------

    async def submit(self, params: dict[str, Any], owner: str, restart_of: Job | None = None,
                     terms: JobTerms | None = None) -> Job:
        """A start, or with `restart_of` a restart: both under the same start rate and caps.
        `terms`: what the start asked beyond its plan (bounded by the environment's in _enqueue)."""
        if not self.docker_up:
            raise Unavailable("Docker is not reachable; try again later", "docker_unavailable")
        wait = self.starts.take(owner.lower())  # cheapest check first; taken before any await
        if wait:
            seconds = max(1, math.ceil(wait))
            raise TooManyRequests(
                f"{owner} has used its starts for now (startsPerMinutePerOwner "
                f"{self.settings.startsPerMinutePerOwner:g}); try again in {seconds} s",
                headers={"Retry-After": str(seconds)})
        try:
            if restart_of is not None:
                return await self._restart(restart_of, params, owner)
            return await self._submit(params, owner, terms or JobTerms())
        except Exception:
            self.starts.give_back(owner.lower())  # refused: nothing was stored, the start is not counted
            raise

    async def _submit(self, params: dict[str, Any], owner: str, terms: JobTerms) -> PlannedJob:
        try:  # held in memory for the pull only: never in the row, its stored request or a log (#15)
            auth = credentials.parse(params.get("dockerRegistryAuth"))
        except ValueError as exc:
            raise BadRequest(str(exc), "invalid", "dockerRegistryAuth") from None
        job = self.intake.build(params, owner)
        job.request, job.terms = restart_record(params), terms
        self.credentials.put(job.job_id, auth)
        try:
            return await self._enqueue(job, owner, await self._orders(params, owner, job))
        except Exception:
            self.credentials.forget(job.job_id)
            raise

    async def _orders(self, params: dict[str, Any], owner: str, job: PlannedJob) -> list[Ordered]:
        """Chain mode (#16): the on-chain orders this start pays with, checked (chain/gate.py);
        their keys are spent in the job's insert."""
        env = self.settings.environment(job.environment)
        assert env is not None
        parts = parts_of(params, self.catalog)
        await self.chain.check_start(parts, owner, env, lambda key: spent_orders.used(self.store.db, key))
        return parts

    async def _restart(self, old: Job, params: dict[str, Any], owner: str) -> PlannedJob:
        """Run a stopped or failed job again as a new job: intake runs anew (today's catalog,
        policy and limits) on the inputs, algorithm and environment the original was started
        with; the original is never rewritten. `dataset.transferTxId` of this request, if any,
        is the new job's agreementId, else the original's (the same per-owner rule applies)."""
        if old.status not in RESTARTABLE:
            raise BadRequest(f"job {old.job_id} is at status {int(old.status)} ({old.status.text}); only a stopped "
                             "(7) or failed (31, 32, 71-76) job can be restarted", "not_restartable", "jobId")
        record = await self.store.request_of(old.job_id)
        if not record:
            raise BadRequest(f"job {old.job_id} cannot be restarted: what it was started with is no longer kept; "
                             "start a new job instead", "restart_unavailable", "jobId")
        dataset = params.get("dataset")
        tx = (dataset.get("transferTxId") if isinstance(dataset, dict) else None) or old.agreement_id
        again = {**record, "dataset": {**record["dataset"], "transferTxId": tx}}
        job = self.intake.build(again, owner)
        job.request, job.restarted_from = record, old.job_id
        return await self._enqueue(job, owner, await self._orders(again, owner, job))

    async def _enqueue(self, job: PlannedJob, owner: str, orders: list[Ordered] | None = None) -> PlannedJob:
        env = self.settings.environment(job.environment)
        assert env is not None
        job.terms = bounded(job.terms, env)
        try:
            await self.store.insert(job, env.maxQueue, env.maxJobs, self.settings.maxJobsPerOwner,
                                    int(self.settings.maxResultGBPerOwner * 1024**3),
                                    tuple(o.key for o in orders or ()))
        except OwnerLimit as exc:
            raise TooManyRequests(_owner_limit_text(owner, exc)) from None
        except QueueFull:
            raise Unavailable(f"the queue of {env.id} is full ({env.maxQueue} jobs); try again later",
                              "queue_full") from None
        except OrderUsed as exc:  # a concurrent start spent it after this one's check
            part = next(o for o in orders or () if o.key == exc.args[0])
            raise refusal(part, "this order has already been used for a job") from None
        except AgreementInUse:
            raise BadRequest("`agreementId` already in use for another job that is still running",
                             "agreement_in_use", "dataset.transferTxId") from None
        log.info("job %s: queued in %s for %s%s", job.job_id, env.id, owner,
                 f" (restart of {job.restarted_from})" if job.restarted_from else "")
        self.hooks.status(job, job.status)
        self.scheduler.wake()
        return job

    async def stop(self, job_id: str) -> None:
        await self.scheduler.stop(job_id)

    async def stop_and_wait(self, job_ids: list[str], timeout: float) -> None:
        """Stop each job, then wait (up to `timeout` seconds in all) until each has ended, so the
        answer can show 7 rather than a job still being stopped."""
        for job_id in job_ids:
            await self.scheduler.stop(job_id)
        tasks = {live.task for j in job_ids if (live := self.scheduler.live.get(j)) and live.task}
        if tasks and timeout > 0:
            await asyncio.wait(tasks, timeout=timeout)

    async def delete(self, job_id: str) -> None:
        """Stop if running, then remove its containers, files and row."""
        await self.scheduler.stop(job_id)
        if not await self.scheduler.wait_done(job_id, self.settings.stopGraceSeconds + 60):
            log.warning("job %s: runner did not finish in time; deleting anyway", job_id)
            live = self.scheduler.live.get(job_id)
            if live and live.task:
                live.task.cancel()
        await self.runner.remove_containers(job_id)
        await self.workspace.remove(job_id)
        await self.store.delete(job_id)
        log.info("job %s: deleted", job_id)

    def current_jobs(self, env_id: str) -> int:
        return self.scheduler.running_count(env_id)


def _owner_limit_text(owner: str, exc: OwnerLimit) -> str:
    if exc.limit == "jobs":
        return (f"{owner} already has {exc.used} jobs queued or running (maxJobsPerOwner {exc.cap}); "
                "start more once one has ended, or stop one")
    return (f"the kept results of {owner} occupy {exc.used / 1024**3:.2f} GB, more than maxResultGBPerOwner "
            f"({exc.cap / 1024**3:g} GB); delete finished jobs you no longer need (DELETE) or wait for "
            "their results to expire")
