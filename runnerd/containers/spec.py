"""Pure builders of each step's ContainerSpec: job + environment + settings in, spec out.

This is where the containment rules of SPEC §3 live, in one readable place; nothing here talks to
Docker or the disk, so every rule is unit-tested by inspecting the spec.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from runnerd import imageref, layout
from runnerd.config import Environment, Settings
from runnerd.containers.runtime import JOB_NETWORK, LABEL_JOB, LABEL_STEP, ContainerSpec, Mount
from runnerd.domain import Job, LocalFile, PlannedJob, RawCode, RemoteFile, Slot, StepKind
from runnerd.layout import JobPaths, did_dir

STEPS_DIR = Path(__file__).resolve().parent.parent / "steps"
HELPER_MEMORY = 512 * 1024 * 1024  # provision/filter are ours and stream; they need little
HELPER_PIDS = 64
HELPER_TMPFS = {"/tmp": "rw,nosuid,nodev,noexec,size=16m,mode=1777"}
# gVisor (a runtime named runsc…) runs the algorithm on a kernel of its own, and Docker's pids limit
# lands on the host tasks of the whole sandbox: its own ~55, ~4 per mount and ~5 per process of the
# algorithm (measured, ptrace platform: 62 forked processes peaked at 385; threads cost far less),
# so 8 per task leaves room for transients; a sandbox that hits it dies
# (exit 2) instead of failing a fork. So there pidsLimit is RLIMIT_NPROC, which gVisor's kernel
# enforces per sandbox (fork and clone fail with EAGAIN, as under runc's pids limit), and the host
# limit stays as a backstop sized for the sandbox. (Under runc RLIMIT_NPROC would count every job
# of jobUser on the host together, so it is not used there.)
GVISOR_HOST_PIDS_BASE, GVISOR_HOST_PIDS_PER_TASK = 160, 8


def own_kernel(runtime: str) -> bool:
    """Whether containers of this OCI runtime get a kernel of their own (gVisor's runsc)."""
    return runtime.rsplit("/", 1)[-1].startswith("runsc")


def runtime_findings(environments: Iterable[Environment], info: dict[str, Any] | None) -> list[tuple[str, str, str]]:
    """doctor's `oci runtime` check, as (OK|FAIL|WARN, detail, fix): an environment's runtime that
    dockerd (`docker info`, None when unreachable: one WARN) does not list fails every job of it."""
    wanted = sorted({env.runtime for env in environments if env.runtime})
    if wanted and info is None:
        return [("WARN", "not checked: Docker is unreachable", "fix the docker check first")]
    have = (info or {}).get("Runtimes") or {}
    return [("OK", f"{name!r} is registered with Docker", "") if name in have else
            ("FAIL", f"environment runtime {name!r} is not registered with Docker (it has: "
             f"{', '.join(sorted(have)) or 'none'})",
             "`bash scripts/runsc.sh` registers gVisor's runsc without restarting dockerd" if own_kernel(name) else
             "add it to `runtimes` in /etc/docker/daemon.json and reload dockerd (`systemctl reload docker`)")
            for name in wanted]


STEP_MODULES = {StepKind.PROVISION: ("netpolicy.py",)}  # stdlib modules a step script imports from its folder


def volume_masks(volumes: tuple[str, ...] | list[str], mounts: tuple[Mount, ...], tmpfs: dict[str, str],
                 size_mb: int) -> dict[str, str]:
    """A tmpfs over every VOLUME the image declares: Docker would otherwise back each with an
    anonymous volume on the host disk, writable even with a read-only root and outside diskGB.
    (A path runnerd mounts something at already replaces the volume.)"""
    taken = {m.target for m in mounts} | set(tmpfs)
    return {v: f"rw,nosuid,nodev,size={size_mb}m,mode=1777" for v in volumes if v not in taken}


def container_name(job_id: str, step: StepKind) -> str:
    return f"runnerd-{job_id}-{step.value}"


def _labels(job: Job, step: StepKind) -> dict[str, str]:
    return {LABEL_JOB: job.job_id, LABEL_STEP: step.value}


def algorithm_command(entrypoint: str) -> list[str]:
    """Ocean's rule: `$ALGO` becomes the algorithm's path, then shell-like splitting (no shell)."""
    return shlex.split(entrypoint.replace("$ALGO", layout.ALGORITHM))


def image_reference(image: str, tag: str, checksum: str) -> str:
    """`image@sha256:…` when the checksum pins a digest, else `image:tag` (SPEC §3)."""
    return imageref.join(image, tag, checksum)


def provision_plan(job: PlannedJob, settings: Settings) -> dict[str, Any]:
    """What the provision step must download, and where, for this job. Each download carries the
    label the consumer sees instead of its URL, and its own allow-list: provisionAllow lets the
    operator's own DDO URLs reach the LAN; a URL the consumer sent (algorithm.meta.url) gets none."""
    operator_allow = list(settings.provisionAllow)
    downloads: list[dict[str, object]] = []
    for item in job.plan.inputs:  # inputs are always the catalog's (the operator's) DDOs
        for index, f in enumerate(item.files):
            if isinstance(f, RemoteFile):
                downloads.append({
                    "kind": "dataset", "label": f"dataset {item.did} file {index}", "url": f.url,
                    "sha256": f.sha256, "dest": f"{layout.INPUTS}/{did_dir(item.did)}/{index}",
                    "allow": operator_allow,
                })
    algo = job.plan.algorithm
    if isinstance(algo.code, RemoteFile):
        consumer = algo.consumer_code
        downloads.append({"kind": "algorithm", "label": "algorithm" if consumer else f"algorithm {algo.did}",
                          "url": algo.code.url, "sha256": algo.code.sha256, "dest": layout.ALGORITHM,
                          "allow": [] if consumer else operator_allow, "consumer": consumer})
    return {
        "downloads": downloads,
        "timeout": settings.provisionTimeout,
        "retries": settings.provisionRetries,
        "maxBytes": int(settings.maxDownloadGB * 1024**3),
        "report": layout.STEP_REPORT,
        # every download's sha256, for the attestation and the inputs' egress guards (#15)
        "hash": settings.provenance or any(i.guard for i in job.plan.inputs),
    }


def prepared_locally(job: PlannedJob) -> list[str]:
    """The configurationLog of a job with nothing to download (its provision step is skipped):
    what runnerd prepared itself, named like the provision step names its downloads (`dataset
    <did> file <i>`), never by a host path."""
    lines = [f"dataset {item.did} file {index}: local file, mounted read-only"
             for item in job.plan.inputs for index, f in enumerate(item.files) if isinstance(f, LocalFile)]
    algo = job.plan.algorithm
    label = f"algorithm {algo.did}" if algo.did else "algorithm"
    code = algo.code
    if isinstance(code, RawCode):
        lines.append(f"{label}: raw code, {len(code.text.encode('utf-8'))} bytes")
    elif isinstance(code, LocalFile):
        lines.append(f"{label}: local file, mounted read-only")
    lines.append("nothing to download: provisioned without a container")
    return lines


def _helper_step(job: Job, step: StepKind, settings: Settings, plan: dict[str, Any], data: Mount, out: Path,
                 network: str, volumes: tuple[str, ...]) -> ContainerSpec:
    """Provision and filter: runnerd's own stdlib script in helperImage, its plan in the env,
    its report and products in `out` (mounted at /runnerd/out), hardened like the algorithm."""
    script = f"{step.value}.py"
    code = (Mount(str(STEPS_DIR / f), f"{layout.STEP_DIR}/{f}") for f in (script, *STEP_MODULES.get(step, ())))
    mounts = (data, Mount(str(out), layout.STEP_OUT, read_only=False), *code)
    return ContainerSpec(
        name=container_name(job.job_id, step),
        image=settings.helperImage,
        command=["python3", f"{layout.STEP_DIR}/{script}"],
        labels=_labels(job, step),
        user=settings.jobUser,
        env={"RUNNERD_PLAN": json.dumps(plan), "PYTHONDONTWRITEBYTECODE": "1", **NO_GPUS},
        mounts=mounts,
        tmpfs={**HELPER_TMPFS, **volume_masks(volumes, mounts, HELPER_TMPFS, 16)},
        network=network,
        memory_bytes=HELPER_MEMORY,
        nano_cpus=1_000_000_000,
        pids_limit=HELPER_PIDS,
        nofile=1024,
    )


def build_provision(job: PlannedJob, settings: Settings, paths: JobPaths,
                    volumes: tuple[str, ...] = ()) -> ContainerSpec:
    plan = provision_plan(job, settings)
    # The only step that may reach the network, and only when there is something to fetch.
    return _helper_step(job, StepKind.PROVISION, settings, plan, Mount(str(paths.fs), layout.DATA, read_only=False),
                        paths.provision_out, JOB_NETWORK if plan["downloads"] else "none", volumes)


def algorithm_env(job: PlannedJob) -> dict[str, str]:
    algo = job.plan.algorithm
    return {
        "DIDS": json.dumps([did_dir(i.did) for i in job.plan.inputs]),
        "TRANSFORMATION_DID": did_dir(algo.did) if algo.did else "",
        "VOLUME": layout.DATA,
        "INPUTS": layout.INPUTS,
        "OUTPUTS": layout.OUTPUTS,
        "LOGS": layout.LOGS,
        "secret": job.plan.secret,
        "HOME": "/tmp",  # the root filesystem is read-only; HOME must be writable
    }


NO_GPUS = {"NVIDIA_VISIBLE_DEVICES": "void"}  # where nvidia is Docker's default runtime, CUDA images
# ask for every GPU (NVIDIA_VISIBLE_DEVICES=all in their ENV); "void" hands out none


def build_algorithm(job: PlannedJob, env: Environment, settings: Settings, paths: JobPaths, image_ref: str,
                    slot: Slot, volumes: tuple[str, ...] = ()) -> ContainerSpec:
    algo = job.plan.algorithm
    argv = algorithm_command(algo.container.entrypoint)
    mounts = [
        Mount(str(paths.fs / "inputs"), layout.INPUTS),
        Mount(str(paths.fs / "ddos"), layout.DDOS),
        Mount(str(paths.fs / "transformations"), layout.TRANSFORMATIONS),
        Mount(str(paths.fs / "outputs"), layout.OUTPUTS, read_only=False),
        Mount(str(paths.fs / "logs"), layout.LOGS, read_only=False),
    ]
    # Local datasets and algorithms are bind-mounted read-only where Ocean puts them, never copied,
    # from the job's pins (engine/pins.py): the files runnerd opened and checked, under neutral names.
    for i, item in enumerate(job.plan.inputs):
        for index, f in enumerate(item.files):
            if isinstance(f, LocalFile):
                target = f"{layout.INPUTS}/{did_dir(item.did)}/{index}"
                mounts.append(Mount(str(paths.pinned_input(i, index)), target))
    if isinstance(algo.code, LocalFile):
        mounts.append(Mount(str(paths.pinned_algorithm), layout.ALGORITHM))
    tmp = {"/tmp": f"rw,nosuid,nodev,size={env.tmpSizeMB}m,mode=1777"}
    return ContainerSpec(
        name=container_name(job.job_id, StepKind.ALGORITHM),
        image=image_ref,
        # Like Ocean's Kubernetes pods, the entrypoint string replaces the image's ENTRYPOINT.
        entrypoint=argv[:1],
        command=argv[1:],
        labels=_labels(job, StepKind.ALGORITHM),
        user=settings.jobUser,
        env={**algorithm_env(job), **({} if slot.gpus else NO_GPUS)},
        working_dir=None,  # the image's own WORKDIR, as Ocean's operator leaves it
        mounts=tuple(mounts),
        tmpfs={**tmp, **volume_masks(volumes, tuple(mounts), tmp, env.tmpSizeMB)},
        network=JOB_NETWORK if job.plan.network else "none",
        read_only_rootfs=env.readOnlyRootfs,
        cap_add=tuple(env.capAdd),
        memory_bytes=env.ram_bytes,
        nano_cpus=int(env.nCPU * 1e9),
        cpuset=slot.cpuset,
        pids_limit=(env.pidsLimit * GVISOR_HOST_PIDS_PER_TASK + GVISOR_HOST_PIDS_BASE if own_kernel(env.runtime)
                    else env.pidsLimit),
        nproc=env.pidsLimit if own_kernel(env.runtime) else None,
        nofile=env.nofileLimit,
        shm_bytes=env.shmSizeMB * 1024 * 1024,
        gpu_device_ids=slot.gpus,
        log_max_bytes=max(env.log_bytes * 2, 1024 * 1024),
        runtime=env.runtime or None,
    )


GUARD_FILE = "guard.json"  # beside the filter's report: the input digests its egress guard checks against


def filter_plan(env: Environment, hashing: bool = False, guarded: bool = False) -> dict[str, Any]:
    plan: dict[str, Any] = {
        "src": layout.OUTPUTS,
        "dest": f"{layout.STEP_OUT}/outputs",
        "maxFiles": env.maxOutputFiles,
        "maxBytes": env.disk_bytes,
        "report": layout.STEP_REPORT,
    }
    if hashing:  # each output's sha256, for the attestation (#15)
        plan["hash"] = True
    if guarded:  # the digests are known only once provisioned: runnerd writes them before the filter starts
        plan["guardFile"] = f"{layout.STEP_OUT}/{GUARD_FILE}"
    return plan


def build_filter(job: PlannedJob, env: Environment, settings: Settings, paths: JobPaths,
                 volumes: tuple[str, ...] = ()) -> ContainerSpec:
    # Outputs read-only: the filter decides what leaves; it never changes what the algorithm wrote.
    plan = filter_plan(env, settings.provenance, any(i.guard for i in job.plan.inputs))
    return _helper_step(job, StepKind.FILTER, settings, plan, Mount(str(paths.fs / "outputs"),
                        layout.OUTPUTS), paths.results, "none", volumes)
