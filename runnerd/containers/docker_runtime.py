"""DockerRuntime: the only module that imports `docker`. Blocking SDK calls run on a dedicated
thread pool so the event loop never waits on Docker; Docker's errors become runnerd's."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Mapping, TypeVar

import docker
import docker.auth
import docker.errors
import requests.exceptions
import urllib3.exceptions
from docker.types import DeviceRequest, LogConfig, Ulimit
from docker.utils import kwargs_from_env
from docker.types import Mount as DockerMount

from runnerd import imageref
from runnerd.containers import cgroups, runtime
from runnerd.containers.capabilities import LOCAL_DOCKER
from runnerd.containers.logcopy import copy_capped
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

log = logging.getLogger("runnerd.docker")
T = TypeVar("T")

# Every way of not reaching Docker is an outage (RuntimeUnavailable), which the engine waits out:
# no socket, connection refused, reset mid-call or mid-stream (requests and urllib3 errors, or a
# bare socket error from a hijacked stream), timeouts, and docker-py's DockerException, which is
# what building a client raises while the daemon is away ("Error while fetching server API
# version"). APIError (Docker answered) is sorted out before: 4xx are the caller's, 5xx outages.
_TRANSIENT = (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, ConnectionError, TimeoutError,
              docker.errors.DockerException)


def client_options(base_url: str | None, environ: Mapping[str, str]) -> dict[str, Any]:
    """Where and how to reach Docker: `base_url` (a swarm manager, #17) in place of DOCKER_HOST,
    with DOCKER_TLS_VERIFY and DOCKER_CERT_PATH applying to it as they would to DOCKER_HOST (a
    plain DockerClient(base_url=…) would ignore them and talk to a TLS port without TLS)."""
    env = {**environ, "DOCKER_HOST": base_url} if base_url else dict(environ)
    return dict(kwargs_from_env(environment=env))


def to_sdk_kwargs(spec: ContainerSpec) -> dict[str, Any]:
    """ContainerSpec → keyword arguments of APIClient.create_host_config (pure, tested)."""
    if spec.volumes or spec.files:  # a cluster site's spec (#17): refused, never half-realised
        raise ContainerRefused(f"{spec.name}: node volumes and file seeds are for a cluster backend")
    host: dict[str, Any] = {
        "mounts": [DockerMount(m.target, m.source, type="bind", read_only=m.read_only) for m in spec.mounts],
        "tmpfs": dict(spec.tmpfs),
        "network_mode": spec.network,
        "read_only": spec.read_only_rootfs,
        "cap_drop": ["ALL"],
        "cap_add": list(spec.cap_add) or None,
        "security_opt": ["no-new-privileges:true"],
        "init": True,  # tini reaps zombies and forwards SIGTERM to the algorithm
        "log_config": LogConfig(type="json-file", config={"max-size": str(spec.log_max_bytes), "max-file": "1"}),
        "restart_policy": {"Name": "no"},
    }
    if spec.memory_bytes:
        host["mem_limit"] = spec.memory_bytes
        host["memswap_limit"] = spec.memory_bytes  # memory+swap = memory: no swap
    if spec.nano_cpus:
        host["nano_cpus"] = spec.nano_cpus
    if spec.cpuset:
        host["cpuset_cpus"] = spec.cpuset
    if spec.pids_limit:
        host["pids_limit"] = spec.pids_limit
    limits = (("nofile", spec.nofile), ("nproc", spec.nproc))
    if ulimits := [Ulimit(name=name, soft=n, hard=n) for name, n in limits if n]:
        host["ulimits"] = ulimits
    if spec.shm_bytes:
        host["shm_size"] = spec.shm_bytes
    if spec.gpu_device_ids:
        host["device_requests"] = [DeviceRequest(device_ids=list(spec.gpu_device_ids), capabilities=[["gpu"]])]
    if spec.runtime:
        host["runtime"] = spec.runtime
    return host


class DockerRuntime:
    capabilities = LOCAL_DOCKER

    def __init__(self, timeout: float = 60, base_url: str | None = None, instance: str = "",
                 pull_timeout: float = 1800, long_workers: int = 512):
        """`instance` (the node address) is added as a label to every container and scopes
        list_owned, so two runnerd daemons sharing one Docker never reap each other's jobs."""
        self.instance = instance
        self._timeout = timeout
        self._pull_timeout = pull_timeout
        self._base_url = base_url
        self._client: docker.DockerClient | None = None
        self._client_lock = threading.Lock()
        # Two pools: waits, log follows and pulls block a thread for as long as a container runs
        # (or an image downloads); they must never starve the short calls that stop, create or
        # inspect containers, or no deadline could be enforced once enough jobs run.
        self._control = ThreadPoolExecutor(max_workers=32, thread_name_prefix="docker")
        self._long = ThreadPoolExecutor(max_workers=long_workers, thread_name_prefix="docker-wait")

    @property
    def _api(self) -> docker.APIClient:
        """The client, built on first use (and again after an outage). Building one asks Docker
        for its API version, so it blocks and may fail: only ever read it on the pool threads,
        inside `_call`; a failure is RuntimeUnavailable like any other unreachable Docker."""
        client = self._client
        if client is None:
            with self._client_lock:
                client = self._client
                if client is None:
                    kwargs: dict[str, Any] = {"timeout": int(self._timeout), "max_pool_size": 32}
                    try:
                        client = docker.DockerClient(**client_options(self._base_url, os.environ), **kwargs)
                    except _TRANSIENT as exc:
                        raise RuntimeUnavailable(f"Docker is not reachable: {exc}") from exc
                    if client.api.base_url.startswith("http+docker://"):  # a unix socket
                        # No proxy or ~/.netrc lookup applies to a local socket, yet requests
                        # does both on every call: ~0.1 ms of CPU each, ~15 calls a job (#13).
                        client.api.trust_env = False
                    self._client = client
        return client.api

    async def _call(self, fn: Callable[..., T], *args: Any, long: bool = False, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        pool = self._long if long else self._control
        try:
            return await loop.run_in_executor(pool, functools.partial(fn, *args, **kwargs))
        except docker.errors.NotFound:
            raise
        except docker.errors.APIError as exc:
            if exc.status_code is not None and exc.status_code >= 500:
                raise RuntimeUnavailable(f"Docker error: {exc.explanation or exc}") from exc
            raise
        except _TRANSIENT as exc:
            self._client = None  # reconnect next time (the daemon may have restarted)
            raise RuntimeUnavailable(f"Docker is not reachable: {exc}") from exc

    async def close(self) -> None:
        if self._client is not None:
            self._client.close()
        for pool in (self._control, self._long):
            pool.shutdown(wait=False, cancel_futures=True)

    async def ping(self) -> str:
        info = await self._call(lambda: self._api.version())
        return str(info.get("Version", "?"))

    async def ensure_network(self, name: str) -> None:
        def ensure() -> None:
            # Docker's name filter matches substrings ("runnerd" finds "runnerd-job-…"): compare whole names
            if any(n.get("Name") == name for n in self._api.networks(names=[name])):
                return
            try:
                self._api.create_network(name, driver="bridge", check_duplicate=True,
                                         options={"com.docker.network.bridge.enable_icc": "false"},
                                         labels={"runnerd.network": "jobs"})
            except docker.errors.APIError as exc:
                if exc.status_code != 409:  # another runnerd made it meanwhile
                    raise

        await self._call(ensure)

    async def has_image(self, ref: str) -> bool:
        try:
            await self._call(lambda: self._api.inspect_image(ref))
            return True
        except docker.errors.NotFound:
            return False
        except docker.errors.APIError:
            return False  # malformed reference: certainly not present

    async def image_digests(self, ref: str) -> tuple[str, tuple[str, ...]]:
        try:
            data = await self._call(lambda: self._api.inspect_image(ref))
        except docker.errors.NotFound as exc:
            raise ImageMissing(f"image {ref} is not present") from exc
        repo = tuple(d.rpartition("@")[2] for d in data.get("RepoDigests") or () if "@" in d)
        return str(data.get("Id", "")), repo

    async def image_volumes(self, ref: str) -> list[str]:
        try:
            data = await self._call(lambda: self._api.inspect_image(ref))
        except docker.errors.NotFound as exc:
            raise ImageMissing(f"image {ref} is not present") from exc
        return sorted((data.get("Config") or {}).get("Volumes") or {})

    async def pull(self, ref: str, auth: dict[str, str] | None = None) -> None:
        """Pull with a bound on the whole pull and on any silence of the registry. (docker-py's
        own pull has no timeout at all, so a stalling registry would hold a thread forever.)"""
        deadline, stall = self._pull_timeout, min(120.0, self._pull_timeout)

        def pull() -> None:
            api = self._api
            parsed = imageref.parse(ref)  # ValueError: a reference Docker would refuse anyway
            response = None
            try:  # the SDK's private calls (docker is pinned below 8): its own pull takes no timeout
                headers = {"X-Registry-Auth": docker.auth.encode_header(auth)} if auth else None  # this pull only
                response = api._post(api._url("/images/create"),  # type: ignore[attr-defined]
                                     params={"fromImage": parsed.name, "tag": parsed.digest or parsed.tag or "latest"},
                                     stream=True, timeout=(10, stall), headers=headers)
                api._raise_for_status(response)  # type: ignore[attr-defined]
                started = time.monotonic()
                for line in response.iter_lines():  # a silence longer than `stall` raises ReadTimeout
                    message = json.loads(line) if line else {}
                    if message.get("error"):
                        raise ImageMissing(f"cannot pull {ref}", detail=str(message["error"]))
                    if time.monotonic() - started > deadline:
                        raise ImageMissing(f"cannot pull {ref}: it took longer than imagePullTimeout ({deadline:g}s)")
            except (requests.exceptions.Timeout, requests.exceptions.ConnectionError) as exc:
                if "timed out" not in str(exc):  # mid-stream, a read timeout arrives as ConnectionError
                    raise
                raise ImageMissing(f"cannot pull {ref}: no progress for {stall:g}s (registry unreachable or "
                                   f"stalled; imagePullTimeout)") from exc
            finally:
                if response is not None:
                    response.close()  # dockerd cancels the pull when its client goes away

        try:
            await self._call(pull, long=True)
        except RuntimeUnavailable as exc:
            if not isinstance(exc.__cause__, docker.errors.APIError):
                raise  # Docker itself is away: an outage to wait out, not a missing image
            raise ImageMissing(f"cannot pull {ref}", detail=str(getattr(exc.__cause__, "explanation", None)
                                                                or exc)) from exc
        except (docker.errors.APIError, ValueError) as exc:
            raise ImageMissing(f"cannot pull {ref}", detail=str(getattr(exc, "explanation", None) or exc)) from exc

    async def create(self, spec: ContainerSpec) -> str:
        def create() -> str:
            api = self._api
            kwargs: dict[str, Any] = dict(
                image=spec.image,
                command=spec.command,
                name=spec.name,
                user=spec.user,
                environment=spec.env,
                labels={**spec.labels, LABEL_INSTANCE: self.instance} if self.instance else spec.labels,
                working_dir=spec.working_dir or None,
                host_config=api.create_host_config(**to_sdk_kwargs(spec)),
            )
            if spec.entrypoint is not None:
                kwargs["entrypoint"] = spec.entrypoint
            try:
                return str(api.create_container(**kwargs)["Id"])
            except docker.errors.APIError as exc:
                if exc.status_code != 409:
                    raise
                # A container of that name survives from an attempt that crashed before its id was
                # recorded: it never ran (ids are recorded before start), so replacing it is safe.
                api.remove_container(spec.name, force=True)
                return str(api.create_container(**kwargs)["Id"])

        try:
            return await self._call(create)
        except docker.errors.ImageNotFound as exc:
            raise ImageMissing(f"image {spec.image} is not on this host", detail=str(exc.explanation)) from exc
        except docker.errors.APIError as exc:  # a 4xx: _call already turned 5xx into RuntimeUnavailable
            raise ContainerRefused(f"Docker refused container {spec.name}: {exc.explanation or exc}") from exc

    async def start(self, container_id: str) -> None:
        try:
            await self._call(lambda: self._api.start(container_id))
        except docker.errors.NotFound as exc:
            raise ContainerGone(container_id) from exc
        except docker.errors.APIError as exc:  # a 4xx (5xx are RuntimeUnavailable already)
            raise ContainerRefused(f"Docker refused to start the container: {exc.explanation or exc}") from exc

    async def wait(self, container_id: str, timeout: float | None = None) -> ExitResult | None:
        def wait() -> Mapping[str, Any] | None:
            api = self._api
            try:  # a float timeout is fine: the SDK hands it to requests (its stub says int)
                return api.wait(container_id, timeout=timeout)  # type: ignore[arg-type]
            except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError) as exc:
                if timeout is not None and "timed out" in str(exc).lower():
                    return None
                raise

        try:
            answer = await self._call(wait, long=True)
        except docker.errors.NotFound as exc:
            raise ContainerGone(container_id) from exc
        if answer is None:
            return None
        if answer.get("StatusCode") == 0:
            # Success needs no inspect (one Docker call less per step). An OOM kill of a child
            # process that the algorithm survived does not turn a clean exit into a failure.
            return ExitResult(0)
        state = await self.inspect(container_id)
        if state is None or state.exit is None:
            raise ContainerGone(container_id)
        return state.exit

    async def inspect(self, container_id: str) -> ContainerState | None:
        try:
            data = await self._call(lambda: self._api.inspect_container(container_id))
        except docker.errors.NotFound:
            return None
        st = data.get("State", {})
        status = st.get("Status", "")
        exit_result = None
        if status in ("exited", "dead"):
            exit_result = ExitResult(int(st.get("ExitCode", -1)), bool(st.get("OOMKilled")), st.get("Error") or None)
        return ContainerState(data["Id"], status, exit_result)

    async def stop(self, container_id: str, grace: float) -> None:
        try:
            await self._call(lambda: self._api.stop(container_id, timeout=max(0, int(round(grace)))))
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if exc.status_code != 304:  # already stopped
                raise RuntimeUnavailable(f"cannot stop container: {exc.explanation or exc}") from exc

    async def remove(self, container_id: str) -> None:
        try:
            await self._call(lambda: self._api.remove_container(container_id, force=True, v=True))
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # "removal already in progress"
                raise RuntimeUnavailable(f"cannot remove container: {exc.explanation or exc}") from exc

    async def copy_logs(self, container_id: str, path: str, limit: int, follow: bool) -> int:
        def copy() -> int:
            return copy_capped(self._api.logs(container_id, stdout=True, stderr=True, stream=True, follow=follow),
                               path, limit)

        try:
            return await self._call(copy, long=follow)
        except docker.errors.NotFound as exc:
            raise ContainerGone(container_id) from exc

    async def list_owned(self) -> list[OwnedContainer]:
        wanted = [LABEL_JOB] + ([f"{LABEL_INSTANCE}={self.instance}"] if self.instance else [])
        rows = await self._call(lambda: self._api.containers(all=True, filters={"label": wanted}))
        out = []
        for row in rows:
            labels = row.get("Labels") or {}
            names = row.get("Names") or ["?"]
            out.append(OwnedContainer(
                id=row["Id"], name=names[0].lstrip("/"), job_id=labels.get(LABEL_JOB, ""),
                step=labels.get(LABEL_STEP, ""), status=row.get("State", ""), created=float(row.get("Created", 0)),
            ))
        return out

    async def info(self) -> dict[str, Any]:
        """Docker's `info` (cgroup version, CPUs, runtimes) for doctor and the scheduler."""
        return await self._call(lambda: self._api.info())

    async def usage(self, container_ids: list[str]) -> dict[str, runtime.ContainerUsage]:
        return await self._call(lambda: cgroups.read_many(
            container_ids, lambda cid: self._api.stats(cid, stream=False, one_shot=True), docker.errors.NotFound))

    async def container_image(self, container_id: str) -> str | None:
        try:
            return str((await self._call(lambda: self._api.inspect_container(container_id))).get("Image") or "") or None
        except docker.errors.NotFound:
            return None

    async def list_images(self) -> list[runtime.ImageInfo]:
        return [runtime.ImageInfo.from_api(row) for row in await self._call(lambda: self._api.images())]

    async def remove_image(self, ref: str) -> bool:
        try:
            await self._call(lambda: self._api.remove_image(ref, force=False, noprune=False))
            return True
        except docker.errors.APIError:  # 404 gone, 409 in use by a container: both mean "not now"
            return False
