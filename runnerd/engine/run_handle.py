"""RunHandle: one job being driven, from the moment the runner takes it until it returns (Nomad's
taskHandle). It holds what every step of the run needs (the job as last written, with its plan;
its environment; the slot it holds; its paths; the stop signal) and what the run itself keeps
(whether it was recovered, the containers created ahead of time), so that no per-job state lives
on the shared runner and no step derives any of it again.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Callable

from runnerd.config import Environment, Settings
from runnerd.containers import spec as specs
from runnerd.containers.runtime import ContainerSpec
from runnerd.domain import ExitResult, JobStatus, PlannedJob, Slot, StepKind
from runnerd.engine.steps import LogCapture
from runnerd.layout import JobPaths


@dataclass
class Ending:
    """How a step ends the job: the status, its error, the terminationDetails, other columns."""

    status: JobStatus
    error: str | None = None
    termination: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def termination(reason: str, result: ExitResult | None = None) -> dict[str, Any]:
    """A job's `terminationDetails`: why its algorithm's container ended (`reason`), with the exit
    code and OOM flag it ended with (None and False when it never ran to an exit)."""
    return {"exitCode": result.exit_code if result else None,
            "oomKilled": result.oom_killed if result else False, "reason": reason}


@dataclass
class RunHandle:
    job: PlannedJob  # the row as last written, with the plan it runs
    env: Environment
    slot: Slot
    paths: JobPaths
    stop: asyncio.Event
    recovered: bool = False  # found in flight at start-up: containers of steps that ended may remain
    early: asyncio.Future[Any] | None = None  # the algorithm's and the filter's creates, made ahead of time
    # the job site's version of each step spec (JobSite.step_spec): the local site keeps it as built
    adapt: Callable[[StepKind, ContainerSpec], ContainerSpec] = lambda _kind, spec: spec

    @property
    def job_id(self) -> str:
        return self.job.job_id

    @property
    def helper_volumes(self) -> tuple[str, ...]:
        return self.job.images.helper_volumes if self.job.images else ()

    def log(self, name: str, limit: int, follow: bool = False) -> LogCapture:
        return LogCapture(str(self.paths.log(name)), limit, follow)

    def provision_spec(self, settings: Settings) -> Callable[[], ContainerSpec]:
        job, paths, volumes, adapt = self.job, self.paths, self.helper_volumes, self.adapt
        return lambda: adapt(StepKind.PROVISION, specs.build_provision(job, settings, paths, volumes))

    def algorithm_spec(self, settings: Settings) -> Callable[[], ContainerSpec]:
        """From the images resolved at 20; a job recovered from a version that did not record them
        falls back on its container section."""
        job, env, paths, slot, adapt = self.job, self.env, self.paths, self.slot, self.adapt
        c = job.plan.algorithm.container
        ref = job.images.algorithm if job.images else specs.image_reference(c.image, c.tag, c.checksum)
        volumes = job.images.volumes if job.images else ()
        return lambda: adapt(StepKind.ALGORITHM, specs.build_algorithm(job, env, settings, paths, ref, slot, volumes))

    def filter_spec(self, settings: Settings) -> Callable[[], ContainerSpec]:
        job, env, paths, volumes, adapt = self.job, self.env, self.paths, self.helper_volumes, self.adapt
        return lambda: adapt(StepKind.FILTER, specs.build_filter(job, env, settings, paths, volumes))

    async def early_creates_done(self) -> None:
        """Wait for the creates made ahead of time (a failure is left for the step's run to report)."""
        task, self.early = self.early, None
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)
