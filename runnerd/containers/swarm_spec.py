"""The pure half of the Swarm backend (#17): a ContainerSpec as the body of a service, and a
service's tasks as a container's state. Nothing here talks to Docker, so each rule is unit-tested
(tests/test_swarm_runtime.py); swarm_runtime.py does the calls."""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from typing import Any, Callable

from runnerd.containers.runtime import LABEL_JOB, ContainerSpec, ContainerState, FileSeed, VolumeMount
from runnerd.domain import PROBABLY_OOM as PROBABLY_OOM
from runnerd.domain import ExitResult
from runnerd.errors import ContainerRefused

LABEL_STOPPED = "runnerd.stopped"  # on a service runnerd stopped (its task is shutting down or ended)
LABEL_EXIT = "runnerd.exit"  # how a stopped task ended: Swarm deletes a task whose iteration is over
UNSTARTED = "unstarted"  # LABEL_EXIT of a task stopped before its process started
LABEL_NETWORK = "runnerd.network"
SWAP_LABEL = "runnerd.swap"  # a node label: `off` is the operator's word that the node has no swap
NOWHERE = "node.id==runnerd-stopped"  # a constraint no node meets
NODE_LOST = "the node it ran on is down"  # inspect's error for a task on a node the manager lost
ENDED = {"complete", "failed", "shutdown", "rejected", "orphaned"}  # task states after which it runs no more
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


def volume_mount(volume: VolumeMount, labels: dict[str, str]) -> dict[str, Any]:
    """A job's node-local /data part as a service mount. Sized: a `local` volume of type tmpfs (the
    quota Swarm keeps: the kernel refuses a write past it). Docker mounts such a volume when its
    first container starts and unmounts it (its bytes gone) when the last one ends, so the job site
    keeps a holder task on it for the job's whole life (engine/swarm_site.py). NoCopy: the image's
    files at the target are never copied in."""
    options: dict[str, Any] = {"NoCopy": True, "Labels": labels}
    if volume.size_bytes:
        data = [f"size={volume.size_bytes}", "mode=0755", "nosuid", "nodev"]
        data += [f"uid={volume.uid}"] if volume.uid is not None else []
        data += [f"gid={volume.gid}"] if volume.gid is not None else []
        tmpfs = {"type": "tmpfs", "device": "tmpfs", "o": ",".join(data)}
        options["DriverConfig"] = {"Name": "local", "Options": tmpfs}
    return {"Type": "volume", "Source": volume.name, "Target": volume.target, "ReadOnly": volume.read_only,
            "VolumeOptions": options}


def config_name(seed: FileSeed) -> str:
    """A file seed's Swarm config, named by its content: the same script is one config for every job."""
    return f"runnerd-file-{hashlib.sha256(seed.content).hexdigest()[:32]}"


def config_ref(seed: FileSeed, config_id: str) -> dict[str, Any]:
    return {"File": {"Name": seed.target, "UID": "0", "GID": "0", "Mode": 0o444},
            "ConfigID": config_id, "ConfigName": config_name(seed)}


def job_network(spec: ContainerSpec, internal: bool = True) -> str:
    """A job's own overlay: internal (the algorithm without network) or with a way out (the
    helper steps, which reach runnerd's job-site routes, and algorithms allowed the network)."""
    return f"runnerd-{'job' if internal else 'net'}-{spec.labels.get(LABEL_JOB) or spec.name}"


def halting(grace: float) -> Callable[[dict[str, Any]], bool]:
    """A service update that stops its task: SIGTERM, SIGKILL after `grace`, and nowhere to run again."""
    def change(spec: dict[str, Any]) -> bool:
        if LABEL_STOPPED in (spec.get("Labels") or {}):
            return False
        task = spec["TaskTemplate"]
        task["ContainerSpec"]["StopGracePeriod"] = int(max(0.0, grace) * 1e9)
        task.setdefault("Placement", {}).setdefault("Constraints", []).append(NOWHERE)
        spec["Labels"] = {**(spec.get("Labels") or {}), LABEL_STOPPED: "1"}
        return True
    return change


def recording(code: str) -> Callable[[dict[str, Any]], bool]:
    """A service update that writes how its stopped task ended (Swarm deletes that task)."""
    def change(spec: dict[str, Any]) -> bool:
        spec["Labels"] = {**(spec.get("Labels") or {}), LABEL_EXIT: code}
        return True
    return change


def to_service(spec: ContainerSpec, image: str, node: str, network: str, labels: dict[str, str],
               configs: dict[str, str] | None = None) -> dict[str, Any]:
    """ContainerSpec → the body of a service create (pure, tested). Refuses what Swarm cannot do
    rather than dropping it: the capability check should have refused the environment first."""
    lacking = [what for what, asked in (("a cpuset", spec.cpuset), ("GPU devices", spec.gpu_device_ids),
                                        ("an OCI runtime", spec.runtime), ("host bind mounts", spec.mounts)) if asked]
    if lacking:
        raise ContainerRefused(f"the swarm backend cannot give {spec.name} {', '.join(lacking)}")
    mounts = [tmpfs_mount(t, o) for t, o in spec.tmpfs.items()]
    mounts += [volume_mount(v, {LABEL_JOB: spec.labels.get(LABEL_JOB, "")}) for v in spec.volumes]
    missing = [seed.target for seed in spec.files if config_name(seed) not in (configs or {})]
    if missing:
        raise ContainerRefused(f"no config made for {', '.join(missing)}")
    if spec.shm_bytes:
        mounts.append({"Type": "tmpfs", "Target": "/dev/shm", "TmpfsOptions": {"SizeBytes": spec.shm_bytes}})
    container: dict[str, Any] = {
        "Image": image, "Args": list(spec.command), "Env": [f"{k}={v}" for k, v in spec.env.items()],
        "User": spec.user, "Labels": labels, "ReadOnly": spec.read_only_rootfs, "Init": True,
        "CapabilityDrop": ["ALL"], "Mounts": mounts,
    }
    if spec.files:
        container["Configs"] = [config_ref(seed, (configs or {})[config_name(seed)]) for seed in spec.files]
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


def on_lost_node(state: ContainerState | None) -> bool:
    """Whether `inspect` said the task's node is lost (its exit is that error, not an exit code)."""
    return state is not None and state.exit is not None and (state.exit.error or "").startswith(NODE_LOST)


def job_mode(completions: int) -> dict[str, Any]:
    return {"ReplicatedJob": {"MaxConcurrent": 1, "TotalCompletions": completions}}


def created_at(text: str) -> float:
    """Docker's RFC 3339 time with nanoseconds, as epoch seconds."""
    head, _, frac = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(head + "+00:00").timestamp() + float(f"0.{frac or 0}")


def service_state(service: dict[str, Any], tasks: list[dict[str, Any]]) -> ContainerState:
    """A service's state as a container's: the task that ran (the latest one placed on a node)."""
    sid, spec = service["ID"], service["Spec"]
    recorded = (spec.get("Labels") or {}).get(LABEL_EXIT)
    if recorded == UNSTARTED:
        return ContainerState(sid, "exited", ExitResult(137, error="stopped by runnerd before it started"))
    if recorded is not None:  # what stop saw: authoritative, as Swarm deletes the stopped task
        return ContainerState(sid, "exited", ExitResult(int(recorded)))
    ran = sorted((t for t in tasks if t.get("NodeID")), key=lambda t: (t.get("JobIteration") or {}).get("Index", 0))
    stopped = LABEL_STOPPED in (spec.get("Labels") or {})
    if not ran:
        if stopped:
            return ContainerState(sid, "exited", ExitResult(137, error="stopped by runnerd before its exit was seen"))
        started = (spec.get("Mode", {}).get("ReplicatedJob") or {}).get("TotalCompletions", 0) > 0
        return ContainerState(sid, "running" if started else "created", None)
    status = ran[-1]["Status"]
    state = status.get("State", "")
    if state not in ENDED:
        return ContainerState(sid, "running", None)  # pending to running: started, from runnerd's side
    code = (status.get("ContainerStatus") or {}).get("ExitCode")
    if state == "complete":
        return ContainerState(sid, "exited", ExitResult(0))
    if code is None:  # never ran (rejected: e.g. the image is not on the node), or the node is lost
        return ContainerState(sid, "dead", ExitResult(-1, error=status.get("Err") or state))
    # a failed task's Err is "task: non-zero exit (N)": the exit code says it all
    error = status.get("Err") if state not in ("failed", "shutdown") else None
    if int(code) == 137 and not stopped:
        error = PROBABLY_OOM  # as honest as Swarm's evidence allows: no OOM flag, a SIGKILL nobody asked for
    return ContainerState(sid, "exited", ExitResult(int(code), False, error))
