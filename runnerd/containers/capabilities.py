"""What each container backend can guarantee, declared in one place, and the environments that
need more than their backend has (#17).

A backend never weakens a guarantee silently: an environment whose keys promise something the
configured backend cannot enforce is refused by `runnerd check-config`, `runnerd doctor` and at
start, naming the key (`environments[0].runtime: …`). What no key asks for (the OOM flag, cpuset
pinning) is listed by doctor so the operator knows what the backend reports less precisely.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from enum import Enum
from typing import Iterable

from runnerd.config import ConfigError, Environment, Settings, load_config


class Capability(str, Enum):
    NETWORK_NONE = "network_none"  # a container with loopback only, no interface at all
    NO_ROUTE_OUT = "no_route_out"  # an algorithm without network reaches no address beyond its own job
    NO_SWAP = "no_swap"  # a job's memory limit is not stretched by swap
    OOM_FLAG = "oom_flag"  # the backend says that the kernel's OOM killer ended a container
    CPUSET = "cpuset"  # whole cores pinned to a container
    OCI_RUNTIME = "oci_runtime"  # an OCI runtime (e.g. runsc) chosen per container
    GPU_DEVICES = "gpu_devices"  # GPUs handed out by device id or UUID
    LOOP_QUOTA = "loop_quota"  # diskQuota: loop, a per-job ext4 image on runnerd's own disk
    TMPFS_QUOTA = "tmpfs_quota"  # diskQuota: tmpfs, a RAM-backed /data of a fixed size
    HOST_MOUNTS = "host_mounts"  # steps may bind-mount runnerd's own files (one filesystem)
    BLOCKING_WAIT = "blocking_wait"  # the end of a container is awaited, not polled


@dataclass(frozen=True)
class Capabilities:
    """A backend's declaration: how it meets each capability it has, and why it lacks the others
    (both texts are for operators: doctor and the docs print them)."""

    backend: str
    how: dict[Capability, str]
    why_not: dict[Capability, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        both = set(self.how) & set(self.why_not)
        assert not both, f"{self.backend} both has and lacks {both}"
        assert set(self.how) | set(self.why_not) == set(Capability), f"{self.backend} leaves some undeclared"

    def __contains__(self, capability: object) -> bool:
        return capability in self.how

    def lacking(self, needed: Iterable[Capability]) -> list[Capability]:
        return [c for c in needed if c not in self.how]


LOCAL_DOCKER = Capabilities("docker", how={
    Capability.NETWORK_NONE: "network mode none",
    Capability.NO_ROUTE_OUT: "network mode none",
    Capability.NO_SWAP: "memory+swap set to the memory limit",
    Capability.OOM_FLAG: "State.OOMKilled of the container",
    Capability.CPUSET: "cpuset-cpus",
    Capability.OCI_RUNTIME: "the container's runtime (registered in Docker's daemon.json)",
    Capability.GPU_DEVICES: "device requests by id",
    Capability.LOOP_QUOTA: "a loop-mounted ext4 image per job under the data dir",
    Capability.TMPFS_QUOTA: "a tmpfs of diskGB",
    Capability.HOST_MOUNTS: "bind mounts",
    Capability.BLOCKING_WAIT: "POST /containers/{id}/wait",
})

# Docker Swarm services on API 1.41 (Docker 20.10); the gaps are Docker's own, see
# docs/architecture-swarm.md for the issues behind each.
SWARM = Capabilities("swarm", how={
    Capability.NO_ROUTE_OUT: "a per-job --internal overlay network: one interface, no route out",
    Capability.NO_SWAP: "steps only on nodes labelled runnerd.swap=off, others refused (services cannot set swap "
                        "before API 1.52)",
    Capability.TMPFS_QUOTA: "a node-local tmpfs volume of diskGB",
}, why_not={
    Capability.NETWORK_NONE: "services cannot use network none (moby#44403); the algorithm gets an internal "
                             "network instead",
    Capability.OOM_FLAG: "a task's status carries only the exit code; 137 that runnerd did not cause is reported "
                         "as probably out of memory",
    Capability.CPUSET: "services have no cpuset; nCPU is enforced as a CPU quota only",
    Capability.OCI_RUNTIME: "services cannot choose an OCI runtime; make it the workers' default runtime",
    Capability.GPU_DEVICES: "services have no device requests; GPUs exist only as generic resources",
    Capability.LOOP_QUOTA: "the loop image lives on runnerd's host, and workers share no filesystem with it",
    Capability.HOST_MOUNTS: "workers share no filesystem with runnerd: inputs are fetched and results pushed",
    Capability.BLOCKING_WAIT: "there is no wait for services: tasks are polled",
})

BACKENDS = {c.backend: c for c in (LOCAL_DOCKER, SWARM)}


def for_backend(name: str) -> Capabilities:
    return BACKENDS[name]


@dataclass(frozen=True)
class Refusal:
    path: str  # the key that asks for it, as config errors name keys: environments[0].runtime
    capability: Capability
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def needs(env: Environment) -> list[tuple[str, Capability]]:
    """(key, capability) for every guarantee this environment's keys promise."""
    wanted = [("allowNetwork", Capability.NO_ROUTE_OUT),  # jobs without network, even where it is allowed
              ("ramGB", Capability.NO_SWAP)]  # the key promises memory+swap = memory
    if env.runtime:
        wanted.append(("runtime", Capability.OCI_RUNTIME))
    if env.nGPU or env.gpus:
        wanted.append(("gpus", Capability.GPU_DEVICES))
    if env.diskQuota == "loop":
        wanted.append(("diskQuota", Capability.LOOP_QUOTA))
    elif env.diskQuota == "tmpfs":
        wanted.append(("diskQuota", Capability.TMPFS_QUOTA))
    return wanted


def refusals(settings: Settings, capabilities: Capabilities | None = None) -> list[Refusal]:
    """Every environment key that asks for a capability the backend lacks (empty: all is kept)."""
    caps = capabilities or for_backend(settings.backend)
    out = []
    for i, env in enumerate(settings.environments):
        for key, capability in needs(env):
            if capability not in caps:
                out.append(Refusal(f"environments[{i}].{key}", capability,
                                   f"needs {capability.value}, which the {caps.backend} backend lacks: "
                                   f"{caps.why_not[capability]}"))
    return out


def findings(settings: Settings) -> list[tuple[bool, str, str]]:
    """doctor's `backend` check as (ok, detail, fix): a FAIL per refused key, else one OK that also
    names what the backend lacks although no key asks for it (what it reports less precisely)."""
    caps = for_backend(settings.backend)
    refused = [(False, str(r), f"change that key, or use a backend with {r.capability.value}")
               for r in refusals(settings, caps)]
    unasked = ", ".join(c.value for c in caps.why_not)
    return refused or [(True, f"{caps.backend}: every environment's guarantees hold"
                        + (f"; it lacks (no key asks for them): {unasked}" if unasked else ""), "")]


def load_checked(path: str | os.PathLike[str]) -> Settings:
    """load_config, then refuse the file if an environment needs what its backend lacks (the
    ConfigError names each key, as any other config error does)."""
    settings = load_config(path)
    problems = refusals(settings)
    if problems:
        raise ConfigError(f"{path}: " + "; ".join(str(p) for p in problems))
    return settings
