"""JobSite: where a job's /data lives, the seam beside ContainerRuntime (#17).

The runtime says how a step runs; the site says where the job's files are. On one host that is
`engine/workspace.py` (`Workspace`, the local site): a quota filesystem under runnerd's data dir,
bind-mounted into the steps. On a cluster it is a volume on the node the job is pinned to, filled
by the provision step and emptied by the filter pushing results back, so that no step mounts a
path of runnerd's host (docs/architecture-swarm.md). Logs and published results always end up on
runnerd's host, under `paths(job_id)`; only the job's working /data moves.

Workspace conforms, and so does engine/swarm_site.py's SwarmSite (tests/test_swarm_site.py); the
engine (service, runner, sweeper) holds its site as a JobSite.
"""

from __future__ import annotations

from typing import Protocol

from runnerd.config import Environment
from runnerd.containers.runtime import ContainerSpec
from runnerd.domain import PlannedJob, StepKind
from runnerd.layout import JobPaths


# How a cluster step's agent (steps/site_agent.py) exits when it could not reach runnerd's job-site
# routes for its whole retry budget: the step did not run to its end, so it is run again (once).
TRANSFER_FAILED = 70


class JobSite(Protocol):
    remote: bool  # /data is not on runnerd's host: the provision step always runs, to fill it

    def paths(self, job_id: str) -> JobPaths:
        """The job's folders on runnerd's host: logs, step outputs, published results."""

    async def prepare(self, job: PlannedJob, env: Environment) -> JobPaths:
        """Make (idempotently) the job's /data with its quota and the files runnerd writes itself."""

    async def write_log(self, job_id: str, name: str, lines: list[str]) -> None:
        """A log runnerd writes itself, among the job's logs."""

    async def ensure_mounted(self, job: PlannedJob, env: Environment) -> None:
        """Make the job's /data available again (after a reboot of its host) before a step runs."""

    def step_spec(self, job: PlannedJob, env: Environment, kind: StepKind, spec: ContainerSpec) -> ContainerSpec:
        """A step's spec as containers/spec.py built it for runnerd's host, made this site's."""

    async def disk_full(self, job: PlannedJob, env: Environment, slack: int = 1024 * 1024) -> bool:
        """Whether the job's /data is (nearly) full: how a write past diskGB shows (status 74)."""

    async def release_fs(self, job_id: str) -> bool:
        """Free the job's /data once its results are out; never raises (a failure is retried)."""

    async def remove(self, job_id: str) -> bool:
        """Delete everything the job has (DELETE, expiry); never raises."""

    def pending_cleanups(self) -> dict[str, str]:
        """job id -> what is left to remove, for cleanups that failed."""

    async def retry_cleanups(self, busy: set[str]) -> int:
        """Retry failed cleanups of jobs not in `busy`; returns how many succeeded."""

    def job_dirs(self) -> list[str]:
        """The ids of the jobs the site holds anything for (the sweeper reaps the unknown ones)."""
