"""The narrow interface between the engine and a container runtime, and the Docker-agnostic
container spec that `spec.py` builds. `docker_runtime.DockerRuntime` is the real implementation;
tests also run the same contract against an in-memory fake."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from runnerd.domain import ExitResult

# Every container runnerd creates carries these labels, so ownership can be found from Docker alone.
LABEL_JOB = "runnerd.job"
LABEL_STEP = "runnerd.step"
LABEL_INSTANCE = "runnerd.instance"  # which daemon (node address) created it; added by the runtime
# The network of steps that may reach out (provision; algorithms where allowed): a bridge of its
# own with inter-container traffic off, so a job cannot reach other containers on the host.
JOB_NETWORK = "runnerd"


@dataclass(frozen=True)
class Mount:
    source: str  # host path
    target: str  # path in the container
    read_only: bool = True


@dataclass(frozen=True)
class VolumeMount:
    """A named volume of the node a cluster step runs on (#17): a part of the job's /data there,
    never a path of runnerd's host. With `size_bytes` it is a tmpfs of that size (the quota)."""

    name: str
    target: str
    read_only: bool = True
    size_bytes: int | None = None
    uid: int | None = None  # the owner of the volume's root (the job's uid writes its /data parts)
    gid: int | None = None


@dataclass(frozen=True)
class FileSeed:
    """A small read-only file the runtime places in the container (on Swarm: a config), in place of
    a bind mount of runnerd's own step scripts."""

    target: str
    content: bytes


@dataclass(frozen=True)
class ContainerSpec:
    """Everything needed to create one step's container. Sizes in bytes, CPUs in cores."""

    name: str
    image: str
    command: list[str]
    labels: dict[str, str]
    user: str
    env: dict[str, str] = field(default_factory=dict)
    entrypoint: list[str] | None = None  # None: keep the image's; [] is not allowed by Docker
    working_dir: str | None = "/data"  # None: the image's WORKDIR
    mounts: tuple[Mount, ...] = ()
    tmpfs: dict[str, str] = field(default_factory=dict)  # path -> mount options
    network: str = "none"  # "none" or a Docker network name
    read_only_rootfs: bool = True
    cap_add: tuple[str, ...] = ()
    memory_bytes: int | None = None  # memory+swap is set to the same value: no swap
    nano_cpus: int | None = None
    cpuset: str | None = None
    pids_limit: int | None = None
    nofile: int | None = None
    nproc: int | None = None  # RLIMIT_NPROC; only where the container has a kernel of its own (gVisor)
    shm_bytes: int | None = None
    gpu_device_ids: tuple[str, ...] = ()
    log_max_bytes: int = 10 * 1024 * 1024  # Docker's own json-file cap: protects the host disk
    runtime: str | None = None
    node: str | None = None  # where a cluster backend runs it (a Swarm node id); None: the runtime's default
    volumes: tuple[VolumeMount, ...] = ()  # a cluster backend's node-local /data parts (#17)
    files: tuple[FileSeed, ...] = ()  # a cluster backend's files in place of host bind mounts


@dataclass(frozen=True)
class ContainerState:
    """What `inspect` tells about a container that exists."""

    id: str
    status: str  # created | running | exited | dead | paused | restarting | removing
    exit: ExitResult | None  # set once the container has exited


@dataclass(frozen=True)
class OwnedContainer:
    id: str
    name: str
    job_id: str
    step: str
    status: str
    created: float  # epoch seconds


@dataclass(frozen=True)
class ContainerUsage:
    """One reading of a running container's resource use (#15). Counters are totals since start."""

    cpu_seconds: float
    memory_bytes: int  # the working set now (usage less inactive page cache, as `docker stats` shows)
    memory_peak_bytes: int | None  # the kernel's high-water mark, where the cgroup keeps one
    pids: int
    net_rx_bytes: int | None = None  # None: no network, or not readable
    net_tx_bytes: int | None = None


@dataclass(frozen=True)
class ImageInfo:
    """A local image, as image garbage collection sees it."""

    id: str
    tags: tuple[str, ...]
    size: int  # bytes
    created: float  # epoch seconds
    repo_digests: tuple[str, ...] = ()  # `name@sha256:…`

    @classmethod
    def from_api(cls, row: dict[str, Any]) -> "ImageInfo":
        """From one entry of the Engine API's image list (`GET /images/json`)."""
        return cls(str(row.get("Id", "")), tuple(t for t in row.get("RepoTags") or () if t != "<none>:<none>"),
                   int(row.get("Size") or 0), float(row.get("Created") or 0),
                   tuple(d for d in row.get("RepoDigests") or () if "@" in d))


class ContainerRuntime(Protocol):
    """Lifecycle verbs. Every method may raise errors.RuntimeUnavailable (daemon down, timeout);
    stop and remove treat an already stopped or missing container as success."""

    async def ping(self) -> str:
        """Return the runtime's version; raise RuntimeUnavailable if it does not answer."""

    async def ensure_network(self, name: str) -> None:
        """Create the jobs' bridge network (inter-container communication off) if it is missing."""

    async def has_image(self, ref: str) -> bool: ...

    async def image_digests(self, ref: str) -> tuple[str, tuple[str, ...]]:
        """A present image's id and its repo digests (`sha256:…` each); raises ImageMissing when it
        is not present."""

    async def image_volumes(self, ref: str) -> list[str]:
        """The paths an image declares as VOLUME (Docker would back each with an anonymous volume
        on the host disk, outside any quota; runnerd masks them with a tmpfs)."""

    async def pull(self, ref: str, auth: dict[str, str] | None = None) -> None:
        """Pull an image; raises errors.ImageMissing with the reason when it cannot. `auth`
        ({username, password} or {identitytoken}): a job's registry credentials, sent to the
        registry for this pull only and never logged or kept."""

    async def create(self, spec: ContainerSpec) -> str:
        """Create (not start) a container; returns its id. A container with the same name that
        already exists is removed first, so a create retried after a crash is safe."""

    async def start(self, container_id: str) -> None: ...

    async def wait(self, container_id: str, timeout: float | None = None) -> ExitResult | None:
        """Block until the container exits and return how; None if `timeout` seconds passed first."""

    async def inspect(self, container_id: str) -> ContainerState | None:
        """None if the container does not exist."""

    async def stop(self, container_id: str, grace: float) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds."""

    async def remove(self, container_id: str) -> None: ...

    async def copy_logs(self, container_id: str, path: str, limit: int, follow: bool) -> int:
        """Append the container's stdout+stderr to `path`, at most `limit` bytes (a marker line
        notes a cut); with follow, until the container exits. Returns the bytes written."""

    async def list_owned(self) -> list[OwnedContainer]:
        """Every container of this daemon (runnerd.job label, and runnerd.instance where the
        runtime sets one), running or not."""

    async def usage(self, container_ids: list[str]) -> dict[str, ContainerUsage]:
        """One reading for each of these containers that is running (others are left out), in one
        call: the usage collector reads all running jobs at once, at a bounded rate."""

    async def container_image(self, container_id: str) -> str | None:
        """The id (`sha256:…`) of the image a container was created from: what Docker really
        runs, whatever a tag points at now. None if the container does not exist."""

    async def list_images(self) -> list[ImageInfo]:
        """Every local image (image garbage collection decides which of them are runnerd's)."""

    async def remove_image(self, ref: str) -> bool:
        """Remove one image reference (untag, and delete the image if no other tag or container
        holds it); never forced. False if Docker refused (a container uses it) or it is gone."""
