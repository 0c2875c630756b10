"""SwarmRuntime: the ContainerRuntime verbs over Docker Swarm services (#17), spoken to a manager.

One step is one `replicated-job` service, pinned with `node.id==X` to the node runnerd chose (runnerd
stays the placer), with no restart. The verbs map as follows (docs/architecture-swarm.md):
  create   a service of zero completions: it exists (and survives runnerd) but runs nothing yet
  start    the same service asked for one completion: Swarm schedules its one task
  wait     polls the service's tasks (Swarm has no blocking wait), 50 ms growing to 1 s
  stop     an update that moves the job where no node is (`node.id==runnerd-stopped`) with the
           grace as its stop grace period: Swarm stops the running task (SIGTERM, then SIGKILL).
           It deletes that task moments after it ended (its iteration is over), so stop waits for
           the end, as `docker stop` does, and writes the exit code on the service
  remove   removes the service, and the job's internal network once no step uses it
Algorithms without network get a per-job `--internal` overlay network (services cannot use
`none`: moby#44403): loopback and one interface, no route out. Exit codes come from the task;
Swarm reports no OOM flag, so `oom_killed` is never set (capabilities.SWARM says so).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import docker.errors

from runnerd.containers.capabilities import SWARM
from runnerd.containers.docker_runtime import DockerRuntime
from runnerd.containers.logcopy import WithoutStreamErrors, copy_capped
from runnerd.containers.runtime import (
    LABEL_INSTANCE,
    JOB_NETWORK,
    LABEL_JOB,
    LABEL_STEP,
    ContainerSpec,
    ContainerState,
    FileSeed,
    OwnedContainer,
)
from runnerd.containers.swarm_spec import ENDED, LABEL_NETWORK, NODE_LOST, SWAP_LABEL, UNSTARTED, config_name
from runnerd.containers.swarm_spec import created_at, halting, job_mode, job_network, on_lost_node, recording
from runnerd.containers.swarm_spec import service_state, to_service
from runnerd.domain import ExitResult
from runnerd.errors import ContainerGone, ContainerRefused, ImageMissing, RuntimeUnavailable

log = logging.getLogger("runnerd.swarm")


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
        """The Ready, active nodes: id, hostname, CPUs, memory, labels (what runnerd's placer accounts)."""
        rows = await self._call(lambda: self._api.nodes())
        return [{"id": n["ID"], "hostname": n["Description"]["Hostname"],
                 "cpus": n["Description"]["Resources"]["NanoCPUs"] / 1e9,
                 "memory": n["Description"]["Resources"]["MemoryBytes"],
                 "labels": (n.get("Spec") or {}).get("Labels") or {}}
                for n in rows if (n.get("Status") or {}).get("State") == "ready"
                and (n.get("Spec") or {}).get("Availability", "active") == "active"]  # not drained or paused

    async def ensure_network(self, name: str) -> None:
        await self._call(self._ensure_overlay, name, internal=False, labels={LABEL_NETWORK: "jobs"})

    def _ensure_overlay(self, name: str, internal: bool, labels: dict[str, str]) -> str:
        found = [n for n in self._api.networks(names=[name]) if n.get("Name") == name]  # the filter is a substring
        if found:
            return str(found[0]["Id"])
        try:
            return str(self._api.create_network(name, driver="overlay", internal=internal, check_duplicate=True,
                                                labels=labels)["Id"])
        except docker.errors.APIError as exc:
            if exc.status_code != 409:
                raise
            return str(next(n for n in self._api.networks(names=[name]) if n.get("Name") == name)["Id"])

    def _ensure_config(self, seed: FileSeed) -> str:
        """The config holding this file (made once per content; left in place: a few KB each)."""
        name = config_name(seed)
        found = self._api.configs(filters={"name": name})
        if found := [c for c in found if c["Spec"]["Name"] == name]:
            return str(found[0]["ID"])
        try:
            return str(self._api.create_config(name, seed.content, labels={LABEL_NETWORK: "file"})["ID"])
        except docker.errors.APIError as exc:
            if exc.status_code != 409:
                raise
            return str(self._api.configs(filters={"name": name})[0]["ID"])

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
            node_id = spec.node or self.node
            try:
                node = api.inspect_node(node_id)
            except docker.errors.NotFound as exc:
                raise ContainerRefused(f"no swarm node {node_id}") from exc
            if ((node.get("Spec") or {}).get("Labels") or {}).get(SWAP_LABEL) != "off":
                # Services cannot set swap before API 1.52: only a swap-free node keeps ramGB a limit
                raise ContainerRefused(f"swarm node {node_id} is not labelled {SWAP_LABEL}=off; runnerd runs "
                                       "jobs only on nodes without swap")
            job_labels = {LABEL_NETWORK: "job", LABEL_JOB: spec.labels.get(LABEL_JOB, "")}
            if spec.network == "none":
                network = self._ensure_overlay(job_network(spec), internal=True, labels=job_labels)
            elif spec.network == JOB_NETWORK:  # a bridge with icc off on one host; an overlay has no such
                # switch, so each job's network-using steps get an overlay of their own
                network = self._ensure_overlay(job_network(spec, internal=False), internal=False, labels=job_labels)
            else:
                network = spec.network
            body = to_service(spec, image, node_id, network, labels, {config_name(f): self._ensure_config(f)
                                                                       for f in spec.files})
            try:
                return str(api.create_service(body, name=spec.name, labels=labels, mode=job_mode(0))["ID"])
            except docker.errors.APIError as exc:
                if exc.status_code != 409:
                    raise
                # A service of that name survives from an attempt that crashed before its id was
                # recorded: it never ran (ids are recorded before start), so replacing it is safe;
                # stopped first all the same (removing a service leaves a running task running).
                self._remove_ended(spec.name)
                return str(api.create_service(body, name=spec.name, labels=labels, mode=job_mode(0))["ID"])

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
            spec["Mode"] = job_mode(1)
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
            tasks = self._api.tasks(filters={"service": service["ID"]})
            state = service_state(service, tasks)
            if state.status == "running":
                # Swarm keeps a lost node's tasks "running" (jobs are not rescheduled): a task
                # whose node is down is lost, as far as anyone can know.
                nodes = {t["NodeID"] for t in tasks if t.get("NodeID") and t["Status"].get("State") not in ENDED}
                for node_id in nodes:
                    try:
                        node = self._api.inspect_node(node_id)
                    except docker.errors.NotFound:
                        return ContainerState(state.id, "dead", ExitResult(-1, error=f"{NODE_LOST}: {node_id}"))
                    # `unknown`: a manager that just restarted has not heard from the node yet
                    if (node.get("Status") or {}).get("State") not in ("ready", "unknown"):
                        name = (node.get("Description") or {}).get("Hostname") or node_id
                        return ContainerState(state.id, "dead", ExitResult(-1, error=f"{NODE_LOST}: {name}"))
            return state

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
            if on_lost_node(state):
                log.warning("service %s: %s", container_id, state.exit and state.exit.error)  # the node's name
                raise ContainerGone(container_id, why=f"{NODE_LOST} (a cluster node lost mid-job)")
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
        tasks = await self._call(lambda: self._api.tasks(filters={"service": container_id}))
        # A task stopped before its process started ends at "shutdown" with exit code 0: that is no
        # success, so what state it had when the stop came decides how its 0 is read.
        was_running = any(t["Status"].get("State") in ("starting", "running") for t in tasks)

        try:
            await self._call(self._update, container_id, halting(grace))
            code = await self._stopped_exit(container_id, grace + self._timeout)
            if not was_running and code in (None, 0):
                await self._call(self._update, container_id, recording(UNSTARTED))
            elif code is not None:
                await self._call(self._update, container_id, recording(str(code)))
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            raise RuntimeUnavailable(f"cannot stop service: {exc.explanation or exc}") from exc

    async def _stopped_exit(self, service_id: str, bound: float) -> int | None:
        """The exit code of the task a stop ends, polled until it ended (None: it was never placed,
        or Swarm deleted it before it was seen)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + bound
        while loop.time() < deadline:
            tasks = await self._call(lambda: self._api.tasks(filters={"service": service_id}))
            ran = [t for t in tasks if t.get("NodeID")]
            if not ran:
                return None
            ended = [t["Status"] for t in ran if t["Status"].get("State") in ENDED]
            codes = [s["ContainerStatus"]["ExitCode"] for s in ended if (s.get("ContainerStatus") or {}).get(
                "ExitCode") not in (None, -1)]
            if codes:
                return int(codes[0])
            if len(ended) == len(ran):
                return None
            await asyncio.sleep(0.05)
        return None

    def _remove_ended(self, name: str) -> None:
        """Remove a service once no task of it runs (on this dockerd, removing a service leaves a
        running task running: moby#44312): moved where no node is, then waited for, then removed."""
        self._update(name, halting(0))
        deadline = time.monotonic() + self._timeout
        while time.monotonic() < deadline and any(t.get("NodeID") and t["Status"].get("State") not in ENDED
                                                  for t in self._api.tasks(filters={"service": name})):
            time.sleep(0.2)
        self._api.remove_service(name)

    async def remove(self, container_id: str) -> None:
        # A running task survives its service's removal (moby#44312; on the lab its container was
        # still up 30 s later, the job's volumes held): stopped first, as `docker rm -f` kills. One
        # on a lost node is only moved nowhere: its node stops it on return, the sweeper removes it.
        state = await self.inspect(container_id)
        if on_lost_node(state):
            await self._call(self._update, container_id, halting(0))
            return
        if state is not None and state.exit is None and state.status == "running":
            await self.stop(container_id, grace=0)

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
        for name in (f"runnerd-job-{job_id}", f"runnerd-net-{job_id}"):
            try:
                self._api.remove_network(name)
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
        """Through the manager, which gathers them from the worker. A service's log stream does not
        end with its task, so `follow` re-reads the log while the task runs (every 1 s, slowing to
        5 s) and appends what is new; a last read once it ended makes the copy whole."""
        if not follow:
            return await self._copy_from(container_id, path, limit, 0)
        written, pause = 0, 1.0
        while True:
            state = await self.inspect(container_id)
            if state is None:
                raise ContainerGone(container_id)
            written += await self._copy_from(container_id, path, limit, written)
            if state.exit is not None or written >= limit:
                return written
            await asyncio.sleep(pause)
            pause = min(5.0, pause * 1.5)

    async def _copy_from(self, container_id: str, path: str, limit: int, skip: int) -> int:
        """Append the service's log from byte `skip` on (`limit` counts the whole log)."""
        def copy() -> int:
            try:
                stream = self._api.service_logs(container_id, stdout=True, stderr=True, follow=False, is_tty=False)
            except docker.errors.NotFound:
                raise
            except docker.errors.APIError as exc:
                if exc.status_code == 400:  # a malformed id
                    raise docker.errors.NotFound(str(exc)) from exc
                raise
            return copy_capped(WithoutStreamErrors(stream), path, limit, skip)

        try:
            return await self._call(copy, long=True)
        except docker.errors.NotFound as exc:
            raise ContainerGone(container_id) from exc

    async def task_state(self, container_id: str) -> str | None:
        """The Swarm state of the service's latest task (`pending`, `running`, `complete`…); None
        without one. `inspect` calls a pending task running (started, from the engine's side); the
        job site must know it really runs (a holder keeping the job's volumes mounted)."""
        try:
            tasks = await self._call(lambda: self._api.tasks(filters={"service": container_id}))
        except docker.errors.NotFound:
            return None
        ran = sorted(tasks, key=lambda t: (t.get("JobIteration") or {}).get("Index", 0))
        return str(ran[-1]["Status"].get("State")) if ran else None

    async def list_owned(self) -> list[OwnedContainer]:
        wanted = [LABEL_JOB] + ([f"{LABEL_INSTANCE}={self.instance}"] if self.instance else [])

        def owned() -> list[OwnedContainer]:
            out = []
            for service in self._api.services(filters={"label": wanted}):
                labels = service["Spec"].get("Labels") or {}
                state = service_state(service, self._api.tasks(filters={"service": service["ID"]}))
                out.append(OwnedContainer(id=service["ID"], name=service["Spec"]["Name"],
                                          job_id=labels.get(LABEL_JOB, ""), step=labels.get(LABEL_STEP, ""),
                                          status=state.status, created=created_at(service["CreatedAt"])))
            return out

        return await self._call(owned)

