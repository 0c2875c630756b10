"""SwarmSite: a job's /data on the Swarm node it is pinned to, never on runnerd's host (#17).

No worker shares a filesystem with runnerd, so the job's /data is five node-local volumes (inputs,
ddos, transformations, outputs, logs: Docker 20.10 has no volume subpaths, and the algorithm must
see its inputs read-only and its outputs writable), each a tmpfs of its size: the quota Swarm
keeps. Docker mounts such a volume when the first container using it starts and unmounts it, its
bytes gone, when the last one ends; so a holder task (`step=site`, a sleeping python in the
helper image, every volume mounted read-only) keeps them for the job's whole life, and removing it
is what wipes the job's data on the node.

Data moves over runnerd's job-site routes (engine/site_transfer.py), never over a shared disk:
the provision step's agent (steps/site_agent.py) fetches what runnerd writes itself (DDOs, custom
data, raw code, the local `file` datasets from the job's pins) and then runs provision.py; the
filter's agent pushes /runnerd/out (the published outputs and the report) back. Each has a token
for its own job and step only. Logs, reports and results live on runnerd's host as with the local
site (`self.host`, a Workspace without a quota filesystem, keeps those folders and their cleanups).

`step_spec` turns a step spec built for the local site (containers/spec.py, unchanged) into the
node's: each host mount is matched to its node-side counterpart, and a mount with none is refused,
so no step can ever mount a path of runnerd's host.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from pathlib import Path
from typing import Callable, Protocol

from runnerd import layout
from runnerd.config import Environment, Settings
from runnerd.containers.runtime import (
    JOB_NETWORK,
    LABEL_JOB,
    LABEL_STEP,
    ContainerSpec,
    FileSeed,
    VolumeMount,
)
from runnerd.containers.spec import HELPER_TMPFS, NO_GPUS, STEPS_DIR
from runnerd.containers.swarm_spec import ENDED
from runnerd.domain import ExitResult, PlannedJob, StepKind
from runnerd.engine import pins
from runnerd.engine.workspace import Workspace
from runnerd.errors import (
    ContainerGone,
    ContainerRefused,
    ImageMissing,
    RuntimeUnavailable,
    SiteLost,
    WorkspaceError,
)
from runnerd.layout import JobPaths

log = logging.getLogger("runnerd.swarm_site")
PARTS = ("inputs", "ddos", "transformations", "outputs", "logs")  # layout.FS_SUBDIRS, one volume each
HOLDER = "site"  # the holder service's step label
AGENT = STEPS_DIR / "site_agent.py"
AGENT_FILES = (AGENT, STEPS_DIR / "sitetar.py")  # the agent and the tar rules it shares with runnerd
HOLDER_MEMORY = 32 * 1024 * 1024
DDOS_BYTES = 16 * 1024 * 1024
PROVISION_OUT_BYTES = 16 * 1024 * 1024  # its out holds its report only
PROBE, WRITTEN, PROBE_TIMEOUT = "diskprobe", ("outputs", "logs"), 60.0
# exits 3 when a volume has less than argv[1] bytes free (statvfs, as Workspace.disk_full reads its filesystem)
FULL_PROBE = ("import os, sys\nslack = int(sys.argv[1])\nfree = [os.statvfs(p) for p in sys.argv[2:]]\n"
              "sys.exit(3 if any(st.f_bavail * st.f_frsize < slack for st in free) else 0)")
ENDED_TASK = ENDED | {"remove"}  # a task that runs no more (`remove`: its service is being removed)
HOLD_TIMEOUT = 120.0  # seconds for the holder to run on the node (it pulls nothing: images are local there)


class NodeRuntime(Protocol):
    """What the site needs of the Swarm runtime: the step verbs, and a task's real state."""

    async def create(self, spec: ContainerSpec) -> str: ...

    async def start(self, container_id: str) -> None: ...

    async def remove(self, container_id: str) -> None: ...

    async def task_state(self, container_id: str) -> str | None: ...

    async def wait(self, container_id: str, timeout: float | None = None) -> ExitResult | None: ...


def volume_name(job_id: str, part: str) -> str:
    return f"rd-{job_id}-{part}"


def holder_name(job_id: str) -> str:
    return f"runnerd-{job_id}-{HOLDER}"


class SwarmSite:
    remote = True  # the provision step always runs: it is what fills the job's volumes

    def __init__(self, data_dir: Path, settings: Settings, runtime: NodeRuntime,
                 token: Callable[[str, StepKind], str], site_url: str):
        self.settings = settings
        self.runtime = runtime
        self.token = token
        self.site_url = site_url.rstrip("/")
        self.uid, self.gid = settings.job_ids
        self.host = Workspace(data_dir, settings.job_ids)  # the host side: logs, reports, results, pins
        self._releasing: set[asyncio.Future[bool]] = set()  # holders being removed (a reference each)

    def paths(self, job_id: str) -> JobPaths:
        return self.host.paths(job_id)

    # -- the node side ------------------------------------------------------------------------

    def volumes(self, job: PlannedJob, env: Environment, parts: tuple[str, ...] = PARTS,
                read_only: bool = False, sizes: dict[str, int] | None = None) -> tuple[VolumeMount, ...]:
        sizes = sizes or self._sizes(job, env)
        return tuple(VolumeMount(volume_name(job.job_id, part), f"{layout.DATA}/{part}", read_only, sizes[part],
                                 self.uid, self.gid) for part in parts)

    def _sizes(self, job: PlannedJob, env: Environment) -> dict[str, int]:
        """Each volume's tmpfs size. What the provision step fetches is bounded by maxDownloadGB
        per file; the local files are as large as they are. outputs and logs get diskGB each:
        without subpaths one quota cannot span two volumes (docs/architecture-swarm.md)."""
        p = self.paths(job.job_id)
        local = sum(f.stat().st_size for f in p.pinned.iterdir()) if p.pinned.is_dir() else 0
        fetched = int(self.settings.maxDownloadGB * 1024**3)
        return {"inputs": fetched + local + 1024 * 1024, "transformations": fetched + local + 1024 * 1024,
                "ddos": DDOS_BYTES, "outputs": env.disk_bytes, "logs": env.disk_bytes}

    def node_of(self, job: PlannedJob) -> str | None:
        return job.slot.node if job.slot is not None else None

    async def prepare(self, job: PlannedJob, env: Environment) -> JobPaths:
        """runnerd's host folders and the job's pins, then the holder that makes (and keeps) the
        job's volumes on its node; returns once the holder runs there."""
        p = await asyncio.to_thread(self._prepare_host, job)
        await self._hold(job, env)
        return p

    def _prepare_host(self, job: PlannedJob) -> JobPaths:
        p = self.paths(job.job_id)
        for d in (p.root, p.logs, p.provision_out, p.results):
            d.mkdir(parents=True, exist_ok=True)
            os.chmod(d, 0o700)  # runnerd only: no step mounts any of them
        pins.pin_all(job, p, self.uid, self.gid)  # what the provision step's agent is sent
        return p

    def holder_spec(self, job: PlannedJob, env: Environment) -> ContainerSpec:
        return ContainerSpec(
            name=holder_name(job.job_id), image=self.settings.helperImage,
            # a finite life, as a backstop: a holder its runnerd never removes frees the node's RAM
            command=["python3", "-c", f"import time; time.sleep({self._lifetime(env):.0f})"],
            labels={LABEL_JOB: job.job_id, LABEL_STEP: HOLDER}, user=self.settings.jobUser, env=dict(NO_GPUS),
            working_dir=None, volumes=self.volumes(job, env, read_only=True), tmpfs=dict(HELPER_TMPFS),
            memory_bytes=HOLDER_MEMORY, nano_cpus=100_000_000, pids_limit=8, nofile=64, node=self.node_of(job))

    def _lifetime(self, env: Environment) -> float:
        """Longer than any job can hold its volumes: both helper steps, the algorithm, an outage
        while each of the three runs, and a day's margin for a job waiting on a stopped runnerd."""
        s = self.settings
        return 2 * s.helperStepTimeout + env.maxJobDuration + 3 * s.dockerOutageSeconds + 86400

    async def _hold(self, job: PlannedJob, env: Environment) -> None:
        name = holder_name(job.job_id)
        state = await self.runtime.task_state(name)
        if state == "running":
            return  # prepared before a restart of runnerd: the volumes still hold the job's data
        if state is None or state in ENDED_TASK:  # else a holder is on its way (runnerd restarted meanwhile)
            await self.runtime.create(self.holder_spec(job, env))
            await self.runtime.start(name)
        loop = asyncio.get_running_loop()
        deadline, pause = loop.time() + HOLD_TIMEOUT, 0.05
        while (state := await self.runtime.task_state(name)) != "running":
            if state in ENDED_TASK or loop.time() > deadline:
                raise WorkspaceError(f"the job's volumes could not be made on its node (holder task: {state})")
            await asyncio.sleep(pause)
            pause = min(1.0, pause * 1.5)

    async def ensure_mounted(self, job: PlannedJob, env: Environment) -> None:
        """The job's volumes exist while its holder runs; a holder that ended (its node restarted)
        took the job's data with it, and that is not repaired by mounting anything again."""
        state = await self.runtime.task_state(holder_name(job.job_id))
        if state != "running":
            log.warning("job %s: its holder task is %s: the job's volumes on its node are gone", job.job_id, state)
            raise SiteLost("the job's data on its cluster node was lost (the node or its Docker restarted)")

    def step_spec(self, job: PlannedJob, env: Environment, kind: StepKind, spec: ContainerSpec) -> ContainerSpec:
        """The node's version of a step spec built for the local site. Provision and filter run
        their script under the agent, which moves their data over the job-site routes."""
        p, sizes = self.paths(job.job_id), self._sizes(job, env)
        volumes: list[VolumeMount] = []
        files: list[FileSeed] = []
        tmpfs, out_bytes = dict(spec.tmpfs), 0
        for m in spec.mounts:
            src = Path(m.source)
            if src == p.fs:  # provision: all of /data
                volumes += self.volumes(job, env, read_only=m.read_only, sizes=sizes)
            elif src.parent == p.fs and src.name in PARTS and m.target == f"{layout.DATA}/{src.name}":
                volumes += self.volumes(job, env, (src.name,), read_only=m.read_only, sizes=sizes)
            elif src.parent == p.pinned:
                continue  # a local file: the provision step's agent put it in the inputs volume
            elif src in (p.provision_out, p.results) and m.target == layout.STEP_OUT:
                out_bytes = PROVISION_OUT_BYTES if src == p.provision_out else env.disk_bytes + 1024 * 1024
                tmpfs[m.target] = f"rw,nosuid,nodev,size={out_bytes},mode=1777"
            elif src.parent == STEPS_DIR:
                files.append(FileSeed(m.target, src.read_bytes()))
            else:  # never silently: a host path with no node-side counterpart is a bug here
                raise WorkspaceError(f"{spec.name}: no node-side counterpart for the mount at {m.target}")
        changes: dict[str, object] = {}
        # The kernel charges a tmpfs page to the memory cgroup of whoever writes it, and nothing
        # can reclaim it (no swap): a container's limit must also hold what it may write to the
        # job's volumes, or a big input or output would read as an OOM kill.
        writes = sum(v.size_bytes or 0 for v in volumes if not v.read_only) + out_bytes
        if spec.memory_bytes and writes:
            changes["memory_bytes"] = spec.memory_bytes + writes
        if kind in (StepKind.PROVISION, StepKind.FILTER):
            files += [FileSeed(f"{layout.STEP_DIR}/{f.name}", f.read_bytes()) for f in AGENT_FILES]
            changes |= {"command": ["python3", f"{layout.STEP_DIR}/{AGENT.name}"], "network": JOB_NETWORK,
                        "env": {**spec.env, "RUNNERD_SITE_URL": self.site_url, "RUNNERD_JOB": job.job_id,
                                "RUNNERD_STEP": kind.value, "RUNNERD_SITE_TOKEN": self.token(job.job_id, kind),
                                # ride out a restart of runnerd (its recovery included) mid-transfer
                                "RUNNERD_SITE_RETRY_SECONDS": f"{max(60.0, self.settings.dockerOutageSeconds):g}"}}
        return dataclasses.replace(spec, mounts=(), volumes=tuple(volumes), files=tuple(files), tmpfs=tmpfs,
                                   node=self.node_of(job), **changes)  # type: ignore[arg-type]

    async def disk_full(self, job: PlannedJob, env: Environment, slack: int = 1024 * 1024) -> bool:
        """Asked after an algorithm failed: a probe on the job's node reads the free space of the
        volumes it writes (outputs, logs), as the local site reads its quota filesystem. An
        unanswered probe is "not full": the job then ends as the failure it is, never lost."""
        probe = dataclasses.replace(
            self.holder_spec(job, env), name=f"runnerd-{job.job_id}-{PROBE}", labels={LABEL_JOB: job.job_id,
                                                                                 LABEL_STEP: PROBE},
            command=["python3", "-c", FULL_PROBE, str(slack), *(f"{layout.DATA}/{p}" for p in WRITTEN)],
            volumes=self.volumes(job, env, WRITTEN, read_only=True))
        try:
            cid = await self.runtime.create(probe)
            try:
                await self.runtime.start(cid)
                result = await self.runtime.wait(cid, timeout=PROBE_TIMEOUT)
            finally:
                await self.runtime.remove(cid)
        except (RuntimeUnavailable, ContainerRefused, ContainerGone, ImageMissing) as exc:
            log.warning("job %s: could not read its volumes' free space on its node: %s", job.job_id, exc)
            return False
        return result is not None and result.exit_code == 3

    # -- the host side, and teardown ----------------------------------------------------------

    async def write_log(self, job_id: str, name: str, lines: list[str]) -> None:
        await self.host.write_log(job_id, name, lines)

    async def _release_node(self, job_id: str) -> bool:
        try:
            await self.runtime.remove(holder_name(job_id))  # its volumes unmount: the job's bytes go
            return True
        except RuntimeUnavailable as exc:  # the orphan sweep removes a finished job's services later
            log.warning("job %s: cannot remove its holder on the node yet: %s", job_id, exc)
            return False

    async def release_fs(self, job_id: str) -> bool:
        """The job's results are out: its holder goes (its volumes with it) beside the job's end,
        not before it (stopping a task takes seconds on Swarm; measured 3.5 s of a job's 8 on the
        lab). Should runnerd stop first, the orphan sweep removes a finished job's holder."""
        task = asyncio.ensure_future(self._release_node(job_id))
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)
        return await self.host.release_fs(job_id)

    async def remove(self, job_id: str) -> bool:
        node = await self._release_node(job_id)
        return await self.host.remove(job_id) and node

    def pending_cleanups(self) -> dict[str, str]:
        return self.host.pending_cleanups()

    async def retry_cleanups(self, busy: set[str]) -> int:
        return await self.host.retry_cleanups(busy)

    def job_dirs(self) -> list[str]:
        return self.host.job_dirs()
