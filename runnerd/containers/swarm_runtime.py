"""SwarmRuntime: the ContainerRuntime verbs over Docker Swarm services (#17), spoken to a manager.

One step is one `replicated-job` service, pinned with `node.id==X` to the node runnerd chose (runnerd
stays the placer), with no restart. The verbs map as follows (docs/architecture-swarm.md):
  create   a service of zero completions: it exists (and survives runnerd) but runs nothing yet
  start    the same service asked for one completion: Swarm schedules its one task
  wait     polls the service's tasks (Swarm has no blocking wait), 50 ms growing to 1 s
  stop     an update that moves the job where no node is (`node.id==runnerd-stopped`) with the
           grace as its stop grace period: Swarm stops the running task (SIGTERM, then SIGKILL)
           and keeps it, with its exit code and logs, until `remove`
  remove   removes the service, and the job's internal network once no step uses it
Algorithms without network get a per-job `--internal` overlay network (services cannot use
`none`: moby#44403): loopback and one interface, no route out. Exit codes come from the task;
Swarm reports no OOM flag, so `oom_killed` is never set (capabilities.SWARM says so).
"""

from __future__ import annotations

import asyncio
import re
from datetime import datetime
from typing import Any

import docker.errors

from runnerd.containers.capabilities import SWARM
from runnerd.containers.docker_runtime import DockerRuntime, copy_capped
from runnerd.containers.runtime import (
    LABEL_INSTANCE,
    LABEL_JOB,
    LABEL_STEP,
    ContainerSpec,
    ContainerState,
    OwnedContainer,
)
from runnerd.domain import ExitResult
from runnerd.errors import ContainerGone, ContainerRefused, ImageMissing, RuntimeUnavailable

LABEL_STOPPED = "runnerd.stopped"  # on a service runnerd stopped (its task is shutting down or ended)
LABEL_NETWORK = "runnerd.network"
NOWHERE = "node.id==runnerd-stopped"  # a constraint no node meets
_ENDED = {"complete", "failed", "shutdown", "rejected", "orphaned", "remove"}
_SIZE = re.compile(r"([0-9]+)([kmg]?)", re.I)


def _bytes(text: str) -> int:
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise ValueError(f"not a size: {text!r}")
    return int(match.group(1)) * int(1024 ** " kmg".index((match.group(2) or " ").lower()))


def tmpfs_mount(target: str, options: str) -> dict[str, Any]:
    """A tmpfs mount option string (`rw,nosuid,nodev,size=16m,mode=1777`) as a service mount. API 1.41
    takes only the size and mode; Docker mounts service tmpfs nosuid, nodev and noexec itself."""
    opts = dict(o.split("=", 1) for o in options.split(",") if "=" in o)
    tmpfs: dict[str, Any] = {"Mode": int(opts.get("mode", "1777"), 8)}
    if "size" in opts:
        tmpfs["SizeBytes"] = _bytes(opts["size"])
    return {"Type": "tmpfs", "Target": target, "TmpfsOptions": tmpfs}


def job_network(spec: ContainerSpec) -> str:
    return f"runnerd-job-{spec.labels.get(LABEL_JOB) or spec.name}"


def to_service(spec: ContainerSpec, image: str, node: str, network: str, labels: dict[str, str]) -> dict[str, Any]:
    """ContainerSpec → the body of a service create (pure, tested). Refuses what Swarm cannot do
    rather than dropping it: the capability check should have refused the environment first."""
    lacking = [what for what, asked in (("a cpuset", spec.cpuset), ("GPU devices", spec.gpu_device_ids),
                                        ("an OCI runtime", spec.runtime), ("host bind mounts", spec.mounts)) if asked]
    if lacking:
        raise ContainerRefused(f"the swarm backend cannot give {spec.name} {', '.join(lacking)}")
    mounts = [tmpfs_mount(t, o) for t, o in spec.tmpfs.items()]
    if spec.shm_bytes:
        mounts.append({"Type": "tmpfs", "Target": "/dev/shm", "TmpfsOptions": {"SizeBytes": spec.shm_bytes}})
    container: dict[str, Any] = {
        "Image": image, "Args": list(spec.command), "Env": [f"{k}={v}" for k, v in spec.env.items()],
        "User": spec.user, "Labels": labels, "ReadOnly": spec.read_only_rootfs, "Init": True,
        "CapabilityDrop": ["ALL"], "Mounts": mounts,
    }
    if spec.entrypoint is not None:
        container["Command"] = list(spec.entrypoint)
    if spec.working_dir:
        container["Dir"] = spec.working_dir
    if spec.cap_add:
        container["CapabilityAdd"] = list(spec.cap_add)
    if spec.nofile:
        container["Ulimits"] = [{"Name": "nofile", "Soft": spec.nofile, "Hard": spec.nofile}]
    limits: dict[str, int] = {}
    if spec.memory_bytes:
        limits["MemoryBytes"] = spec.memory_bytes
    if spec.nano_cpus:
        limits["NanoCPUs"] = spec.nano_cpus
    if spec.pids_limit:
        limits["Pids"] = spec.pids_limit
    return {
        "ContainerSpec": container,
        "Resources": {"Limits": limits},
        "RestartPolicy": {"Condition": "none"},
        "Placement": {"Constraints": [f"node.id=={node}"]},
        "LogDriver": {"Name": "json-file", "Options": {"max-size": str(spec.log_max_bytes), "max-file": "1"}},
        "Networks": [{"Target": network}],
    }


def _mode(completions: int) -> dict[str, Any]:
    return {"ReplicatedJob": {"MaxConcurrent": 1, "TotalCompletions": completions}}


def _created(text: str) -> float:
    """Docker's RFC 3339 time with nanoseconds, as epoch seconds."""
    head, _, frac = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(head + "+00:00").timestamp() + float(f"0.{frac or 0}")


def _state(service: dict[str, Any], tasks: list[dict[str, Any]]) -> ContainerState:
    """A service's state as a container's: the task that ran (the latest one placed on a node)."""
    sid, spec = service["ID"], service["Spec"]
    ran = sorted((t for t in tasks if t.get("NodeID")), key=lambda t: (t.get("JobIteration") or {}).get("Index", 0))
    stopped = LABEL_STOPPED in (spec.get("Labels") or {})
    if not ran:
        if stopped:
            return ContainerState(sid, "exited", ExitResult(137, error="stopped before it started"))
        started = (spec.get("Mode", {}).get("ReplicatedJob") or {}).get("TotalCompletions", 0) > 0
        return ContainerState(sid, "running" if started else "created", None)
    status = ran[-1]["Status"]
    state = status.get("State", "")
    if state not in _ENDED:
        return ContainerState(sid, "running", None)  # pending to running: started, from runnerd's side
    code = (status.get("ContainerStatus") or {}).get("ExitCode")
    if state == "complete":
        return ContainerState(sid, "exited", ExitResult(0))
    if code is None:  # never ran (rejected: e.g. the image is not on the node), or the node is lost
        return ContainerState(sid, "dead", ExitResult(-1, error=status.get("Err") or state))
    # a failed task's Err is "task: non-zero exit (N)": the exit code says it all
    error = status.get("Err") if state not in ("failed", "shutdown") else None
    return ContainerState(sid, "exited", ExitResult(int(code), False, error))


class SwarmRuntime(DockerRuntime):
    capabilities = SWARM

    def __init__(self, *, node: str, base_url: str | None = None, timeout: float = 60, instance: str = "",
                 pull_timeout: float = 1800, long_workers: int = 512):
        """`base_url` is a manager's API; `node` the node id steps run on when their spec names none."""
        super().__init__(timeout=timeout, base_url=base_url, instance=instance, pull_timeout=pull_timeout,
                         long_workers=long_workers)
        self.node = node

    async def ping(self) -> str:
        info = await self._call(lambda: self._api.info())
        swarm = info.get("Swarm") or {}
        if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
            raise RuntimeUnavailable("this Docker is not a swarm manager")
        return str(info.get("ServerVersion", "?"))

    async def nodes(self) -> list[dict[str, Any]]:
        """The Ready nodes: id, hostname, CPUs, memory, labels (what runnerd's placer accounts)."""
        rows = await self._call(lambda: self._api.nodes())
        return [{"id": n["ID"], "hostname": n["Description"]["Hostname"],
                 "cpus": n["Description"]["Resources"]["NanoCPUs"] / 1e9,
                 "memory": n["Description"]["Resources"]["MemoryBytes"],
                 "labels": (n.get("Spec") or {}).get("Labels") or {}}
                for n in rows if (n.get("Status") or {}).get("State") == "ready"]

    async def ensure_network(self, name: str) -> None:
        await self._call(self._ensure_overlay, name, internal=False, labels={LABEL_NETWORK: "jobs"})

    def _ensure_overlay(self, name: str, internal: bool, labels: dict[str, str]) -> str:
        found = self._api.networks(names=[name])
        if found:
            return str(found[0]["Id"])
        try:
            return str(self._api.create_network(name, driver="overlay", internal=internal, check_duplicate=True,
                                                labels=labels)["Id"])
        except docker.errors.APIError as exc:
            if exc.status_code != 409:
                raise
            return str(self._api.networks(names=[name])[0]["Id"])

    async def create(self, spec: ContainerSpec) -> str:
        try:
            image = (await self._call(lambda: self._api.inspect_image(spec.image)))["Id"]
        except docker.errors.NotFound as exc:
            raise ImageMissing(f"image {spec.image} is not on the swarm manager") from exc
        except docker.errors.APIError as exc:
            raise ImageMissing(f"image {spec.image} cannot be used", detail=str(exc.explanation or exc)) from exc
        labels = {**spec.labels, LABEL_INSTANCE: self.instance} if self.instance else dict(spec.labels)

        def create() -> str:
            api = self._api
            if spec.network == "none":
                network = self._ensure_overlay(job_network(spec), internal=True,
                                               labels={LABEL_NETWORK: "job", LABEL_JOB: spec.labels.get(LABEL_JOB, "")})
            else:
                network = spec.network
            body = to_service(spec, image, spec.node or self.node, network, labels)
            try:
                return str(api.create_service(body, name=spec.name, labels=labels, mode=_mode(0))["ID"])
            except docker.errors.APIError as exc:
                if exc.status_code != 409:
                    raise
                # A service of that name survives from an attempt that crashed before its id was
                # recorded: it never ran (ids are recorded before start), so replacing it is safe.
                api.remove_service(spec.name)
                return str(api.create_service(body, name=spec.name, labels=labels, mode=_mode(0))["ID"])

        try:
            return await self._call(create)
        except docker.errors.APIError as exc:
            raise ContainerRefused(f"Swarm refused service {spec.name}: {exc.explanation or exc}") from exc

    def _update(self, service_id: str, change: Any) -> None:
        """Apply `change(spec)` to the current spec, again if another update came in between."""
        for attempt in range(5):
            service = self._api.inspect_service(service_id)
            spec = service["Spec"]
            if change(spec) is False:
                return
            try:
                self._api.update_service(service_id, service["Version"]["Index"], task_template=spec["TaskTemplate"],
                                         name=spec["Name"], labels=spec.get("Labels"), mode=spec["Mode"])
                return
            except docker.errors.APIError as exc:
                if "out of sequence" not in str(exc.explanation or exc) or attempt == 4:
                    raise

    async def start(self, container_id: str) -> None:
        def begin(spec: dict[str, Any]) -> bool:
            job = spec["Mode"].get("ReplicatedJob") or {}
            if job.get("TotalCompletions"):
                return False  # started already
            spec["Mode"] = _mode(1)
            return True

        try:
            await self._call(self._update, container_id, begin)
        except docker.errors.NotFound as exc:
            raise ContainerGone(container_id) from exc
        except docker.errors.APIError as exc:
            raise ContainerRefused(f"Swarm refused to start the service: {exc.explanation or exc}") from exc

    async def inspect(self, container_id: str) -> ContainerState | None:
        def look() -> ContainerState | None:
            try:
                service = self._api.inspect_service(container_id)
            except docker.errors.NotFound:
                return None
            return _state(service, self._api.tasks(filters={"service": service["ID"]}))

        try:
            return await self._call(look)
        except docker.errors.APIError:
            return None  # a malformed id: certainly no such service

    async def wait(self, container_id: str, timeout: float | None = None) -> ExitResult | None:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        pause = 0.05
        while True:
            state = await self.inspect(container_id)
            if state is None:
                raise ContainerGone(container_id)
            if state.exit is not None:
                return state.exit
            if deadline is not None and loop.time() >= deadline:
                return None
            await asyncio.sleep(pause if deadline is None else max(0.0, min(pause, deadline - loop.time())))
            pause = min(1.0, pause * 1.5)

    async def stop(self, container_id: str, grace: float) -> None:
        state = await self.inspect(container_id)
        if state is None or state.exit is not None:
            return  # gone, or ended by itself: how it ended stays as it was

        def halt(spec: dict[str, Any]) -> bool:
            if LABEL_STOPPED in (spec.get("Labels") or {}):
                return False
            task = spec["TaskTemplate"]
            task["ContainerSpec"]["StopGracePeriod"] = int(max(0.0, grace) * 1e9)
            task.setdefault("Placement", {}).setdefault("Constraints", []).append(NOWHERE)
            spec["Labels"] = {**(spec.get("Labels") or {}), LABEL_STOPPED: "1"}
            return True

        try:
            await self._call(self._update, container_id, halt)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            raise RuntimeUnavailable(f"cannot stop service: {exc.explanation or exc}") from exc

    async def remove(self, container_id: str) -> None:
        def remove() -> None:
            api = self._api
            try:
                service = api.inspect_service(container_id)
            except docker.errors.NotFound:
                return
            except docker.errors.APIError:
                return  # a malformed id
            api.remove_service(service["ID"])
            self._drop_job_network((service["Spec"].get("Labels") or {}).get(LABEL_JOB, ""))

        await self._call(remove)

    def _drop_job_network(self, job_id: str) -> None:
        """The job's internal network, once no service of the job is left. Swarm refuses while a
        removed service's task still holds it; `prune_networks` gets it later."""
        if not job_id or self._api.services(filters={"label": f"{LABEL_JOB}={job_id}"}):
            return
        try:
            self._api.remove_network(f"runnerd-job-{job_id}")
        except docker.errors.APIError:
            pass

    async def prune_networks(self) -> int:
        """Remove per-job networks whose job has no service left; returns how many went."""
        def prune() -> int:
            api, gone = self._api, 0
            busy = {(s["Spec"].get("Labels") or {}).get(LABEL_JOB) for s in api.services(filters={"label": LABEL_JOB})}
            for net in api.networks(filters={"label": f"{LABEL_NETWORK}=job"}):
                if (net.get("Labels") or {}).get(LABEL_JOB) not in busy:
                    try:
                        api.remove_network(net["Id"])
                        gone += 1
                    except docker.errors.APIError:
                        pass
            return gone

        return await self._call(prune)

    async def copy_logs(self, container_id: str, path: str, limit: int, follow: bool) -> int:
        """Through the manager, which gathers them from the worker. With follow, once the task has
        ended (a service's log stream does not end with its task); live copies are left for later."""
        if follow:
            await self.wait(container_id)

        def copy() -> int:
            try:
                stream = self._api.service_logs(container_id, stdout=True, stderr=True, follow=False, is_tty=False)
            except docker.errors.NotFound:
                raise
            except docker.errors.APIError as exc:
                if exc.status_code == 400:  # a malformed id
                    raise docker.errors.NotFound(str(exc)) from exc
                raise
            return copy_capped(stream, path, limit)

        try:
            return await self._call(copy, long=True)
        except docker.errors.NotFound as exc:
            raise ContainerGone(container_id) from exc

    async def list_owned(self) -> list[OwnedContainer]:
        wanted = [LABEL_JOB] + ([f"{LABEL_INSTANCE}={self.instance}"] if self.instance else [])

        def owned() -> list[OwnedContainer]:
            out = []
            for service in self._api.services(filters={"label": wanted}):
                labels = service["Spec"].get("Labels") or {}
                state = _state(service, self._api.tasks(filters={"service": service["ID"]}))
                out.append(OwnedContainer(id=service["ID"], name=service["Spec"]["Name"],
                                          job_id=labels.get(LABEL_JOB, ""), step=labels.get(LABEL_STEP, ""),
                                          status=state.status, created=_created(service["CreatedAt"])))
            return out

        return await self._call(owned)
