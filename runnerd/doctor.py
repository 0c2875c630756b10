"""`runnerd doctor`: the host checks an operator gets wrong, each with how to fix it.

Every check is a function returning `Result`s (no printing), so tests and other tools can call
them; `collect` runs them all, and `runnerd/cli/doctor_cmd.py` prints them and picks the exit
status (0 when nothing FAILs, WARN allowed; 1 otherwise).
"""

from __future__ import annotations

import asyncio
import os
import pwd
import re
import shutil
import subprocess
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from runnerd.config import ConfigError, Settings, load_config
from runnerd.containers.gpus import gpu_docker_support, nvidia_gpus
from runnerd.containers.spec import runtime_findings

OK, WARN, FAIL = "OK", "WARN", "FAIL"
MIN_DOCKER = (20, 10)
CONTROLLERS = ("memory", "pids", "cpu", "cpuset")
KERNEL_FIX = ("add `cgroup_enable=memory swapaccount=1` (or, for cgroup v2, `systemd.unified_cgroup_hierarchy=1`) "
              "to GRUB_CMDLINE_LINUX in /etc/default/grub, run `update-grub` and reboot")


@dataclass(frozen=True)
class Result:
    check: str
    status: str  # OK | WARN | FAIL
    detail: str
    fix: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def _skipped(check: str, because: str, fix: str) -> Result:
    return Result(check, WARN, f"not checked: {because}", fix)


NO_DOCKER = ("Docker is unreachable", "fix the docker check first")


def _docker_host() -> str:
    """The Docker API the SDK reaches without a base URL: DOCKER_HOST, else the local socket."""
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


# -- config and Docker ------------------------------------------------------------------------

def check_config(path: Path) -> tuple[Result, Settings | None]:
    try:
        settings = load_config(path)
    except ConfigError as exc:
        return Result("config", FAIL, str(exc),
                      f"correct the key named above in {path} (`runnerd check-config {path}` re-checks it), "
                      f"or point --config / RUNNERD_CONFIG at the right file"), None
    envs = ", ".join(e.id for e in settings.environments)
    return Result("config", OK, f"{path}: {len(settings.environments)} environment(s): {envs}"), settings


def check_docker(runtime: Any = None) -> tuple[Result, Any, dict[str, Any] | None]:
    """Reach Docker as the daemon does (the same runtime, honouring DOCKER_HOST); returns the
    result, the runtime and `docker info` (both None when unreachable)."""
    from runnerd.containers.docker_runtime import DockerRuntime

    host = _docker_host()
    runtime = runtime or DockerRuntime(timeout=5)

    async def facts() -> tuple[str, dict[str, Any]]:
        return await runtime.ping(), await runtime.info()

    try:
        version, info = asyncio.run(facts())
    except Exception as exc:  # noqa: BLE001 - RuntimeUnavailable, PermissionError, …: all are the FAIL below
        text = str(exc)
        fix = ("install Docker (`apt-get install docker.io`) and start it (`systemctl start docker`, or `dockerd &`); "
               "check DOCKER_HOST")
        if "ermission denied" in text:
            fix = (f"the socket of {host} is not accessible to this user: run runnerd as root (the systemd unit "
                   f"does) or add the user to the docker group")
        return Result("docker", FAIL, f"cannot reach Docker at {host}: {text[:300]}", fix), None, None
    m = re.match(r"(\d+)\.(\d+)", version)
    if m is None or (int(m.group(1)), int(m.group(2))) < MIN_DOCKER:
        return (Result("docker", FAIL, f"Docker {version} at {host} is older than 20.10",
                       "upgrade Docker to 20.10 or later (`apt-get install docker.io` on Debian 12+ / Ubuntu 22.04+)"),
                runtime, info)
    return Result("docker", OK, f"Docker {version} at {host}"), runtime, info


# -- cgroups ----------------------------------------------------------------------------------

_WARNING_FIXES = (  # (words in a `docker info` warning, how to fix it)
    (("swap", "memory limit", "oom", "kernel memory"), KERNEL_FIX),
    (("cpu cfs", "cpu shares", "cpuset", "pids limit", "cgroup"),
     "boot with cgroup v2 (`systemd.unified_cgroup_hierarchy=1` on the kernel command line) or a kernel with CFS "
     "bandwidth, cpusets and the pids controller; then reboot"),
    (("bridge-nf-call",), "`modprobe br_netfilter && sysctl -w net.bridge.bridge-nf-call-iptables=1 "
                          "net.bridge.bridge-nf-call-ip6tables=1` (persist it in /etc/sysctl.d/)"),
    (("forwarding",),
     "`sysctl -w net.ipv4.ip_forward=1` (persist it in /etc/sysctl.d/), then `systemctl restart docker`"),
    (("tcp://", "encryption", "insecure"),
     "remove the unencrypted `-H tcp://…` listener from dockerd (daemon.json `hosts`); runnerd uses the socket"),
)


def _warning_fix(text: str) -> str:
    t = text.lower()
    return next((fix for words, fix in _WARNING_FIXES if any(w in t for w in words)),
                "see `docker info` and Docker's documentation for this warning")


def check_cgroups(info: dict[str, Any] | None, root: Path = Path("/sys/fs/cgroup")) -> list[Result]:
    """The controllers the limits need, from the cgroup filesystem, and Docker's own warnings."""
    if (root / "cgroup.controllers").exists():
        version = "v2"
        present = set((root / "cgroup.controllers").read_text().split())
    else:
        version = "v1"
        present = {c for c in CONTROLLERS if (root / c).is_dir()}
    missing = [c for c in CONTROLLERS if c not in present]
    if missing:
        results = [Result("cgroups", FAIL, f"cgroup {version} lacks the {', '.join(missing)} controller(s): "
                          f"ramGB/nCPU/pidsLimit cannot be enforced", KERNEL_FIX)]
    else:
        results = [Result("cgroups", OK, f"cgroup {version} with {', '.join(CONTROLLERS)}")]
    if info is None:
        return results + [_skipped("docker warnings", *NO_DOCKER)]
    for key, what in (("MemoryLimit", "memory limits"), ("PidsLimit", "pids limits"),
                      ("CpuCfsQuota", "CPU quotas"), ("CPUSet", "CPU pinning")):
        if info.get(key) is False:
            results.append(Result("cgroups", FAIL, f"Docker reports no support for {what}", KERNEL_FIX))
    for warning in info.get("Warnings") or []:
        results.append(Result("docker warnings", WARN, warning.strip(), _warning_fix(warning)))
    return results


# -- images and GPUs --------------------------------------------------------------------------

def check_helper_image(runtime: Any, settings: Settings) -> Result:
    image = settings.helperImage
    try:
        if asyncio.run(runtime.has_image(image)):
            return Result("helper image", OK, f"{image} is present")
    except Exception as exc:  # noqa: BLE001 - Docker went away between checks
        return Result("helper image", FAIL, f"cannot inspect {image}: {exc}", "fix the docker check first")
    fix = f"`docker pull {image}` (offline: `bash scripts/images.sh python {image}`)"
    if settings.imagePull == "never":
        return Result("helper image", FAIL, f"{image} (helperImage) is not on this host and imagePull is never: "
                      "every job would fail at provisioning", fix)
    return Result("helper image", WARN, f"{image} (helperImage) is not on this host; the first job will pull it "
                  f"(imagePull: {settings.imagePull})", fix + ", so the first job does not wait for the pull")


def check_gpus(settings: Settings, info: dict[str, Any] | None,
               run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> list[Result]:
    wanted = {g: e.id for e in settings.environments for g in e.gpus}
    if not wanted:
        return [Result("gpus", OK, "no GPUs configured")]
    found, problem = nvidia_gpus(run)
    if found is None:
        return [Result("gpus", FAIL, f"environments list GPUs ({', '.join(wanted)}) but {problem}",
                       "install the NVIDIA driver (`apt-get install nvidia-driver` / the vendor's installer) so that "
                       "`nvidia-smi -L` lists the GPUs, or remove the `gpus` and `nGPU` keys")]
    results = []
    absent = sorted(g for g in wanted if g not in found)
    if absent:
        where = ", ".join(f"{g} (environment {wanted[g]})" for g in absent)
        results.append(Result("gpus", FAIL, f"not listed by `nvidia-smi -L`: {where}",
                              "set environments[].gpus to indexes or UUIDs that `nvidia-smi -L` prints"))
    else:
        results.append(Result("gpus", OK, f"nvidia-smi lists {', '.join(sorted(wanted))}"))
    if info is None:
        results.append(_skipped("gpu runtime", *NO_DOCKER))
    elif support := gpu_docker_support(info):
        results.append(Result("gpu runtime", OK, f"Docker can hand out GPUs via {support}"))
    else:
        results.append(Result("gpu runtime", FAIL, "Docker has no nvidia runtime and no NVIDIA CDI spec",
                              "install nvidia-container-toolkit, run `nvidia-ctk runtime configure --runtime=docker` "
                              "and `systemctl restart docker`"))
    return results


# -- data dir, disk and quota -----------------------------------------------------------------

def check_data_dir(data_dir: Path) -> Result:
    fix = (f"pass a writable --data-dir (RUNNERD_DATA_DIR), or create it: `mkdir -p {data_dir}` as the user "
           "runnerd runs as (root under systemd)")
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        probe = data_dir / f".doctor-{uuid.uuid4().hex}"
        probe.write_bytes(b"probe")
        probe.unlink()
    except OSError as exc:
        return Result("data dir", FAIL, f"{data_dir} is not writable: {exc}", fix)
    return Result("data dir", OK, f"{data_dir} is writable")


def _free_gb(path: Path) -> float:
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free / 1024**3


def check_disk(data_dir: Path, settings: Settings) -> list[Result]:
    try:
        free = _free_gb(data_dir)
    except OSError as exc:
        return [Result("disk", FAIL, f"cannot measure free space under {data_dir}: {exc}",
                       "fix the data dir check first")]
    move = f"free space on the filesystem of {data_dir} or move --data-dir to a larger one"
    results = []
    if free < settings.diskFloorGB:
        results.append(Result("disk", WARN, f"{free:.1f} GB free under {data_dir}, below diskFloorGB "
                              f"{settings.diskFloorGB:g}: new jobs will wait in the queue",
                              f"{move}, or lower diskFloorGB in {settings.source}"))
    env = max(settings.environments, key=lambda e: e.diskGB * e.maxJobs)
    need = env.diskGB * env.maxJobs
    if free < need:
        results.append(Result("disk", WARN, f"{free:.1f} GB free under {data_dir}, less than environment {env.id}'s "
                              f"diskGB × maxJobs = {need:g} GB: full jobs would run out of disk",
                              f"{move}, or lower environments[].diskGB / maxJobs for {env.id}"))
    return results or [Result("disk", OK, f"{free:.1f} GB free under {data_dir} (need {need:g} GB at most)")]


def check_disk_quota(settings: Settings, euid: int | None = None,
                     which: Callable[[str], str | None] = shutil.which,
                     loop_control: Path = Path("/dev/loop-control")) -> list[Result]:
    euid = os.geteuid() if euid is None else euid
    by_kind: dict[str, list[str]] = {}
    for e in settings.environments:
        by_kind.setdefault(e.diskQuota, []).append(e.id)
    results = []
    if "loop" in by_kind or "tmpfs" in by_kind:
        kinds = ", ".join(f"{k} ({', '.join(ids)})" for k, ids in sorted(by_kind.items()) if k != "none")
        problems: list[tuple[str, str]] = []
        if euid != 0:
            problems.append(("runnerd is not running as root, so it cannot mount job filesystems",
                             "run runnerd as root (the systemd unit does)"))
        if not which("mount"):
            problems.append(("`mount` is missing", "`apt-get install mount`"))
        if "loop" in by_kind:
            if not which("mkfs.ext4"):
                problems.append(("`mkfs.ext4` is missing (not on PATH)", "`apt-get install e2fsprogs`"))
            if not loop_control.exists():
                problems.append((f"{loop_control} does not exist (no loop devices)",
                                 "`modprobe loop` (in a container: give it the host's /dev/loop*)"))
        alt = "or set diskQuota: tmpfs (RAM) or none (no enforcement) on the environment"
        for what, fix in problems:
            results.append(Result("disk quota", FAIL, f"diskQuota {kinds}: {what}", f"{fix}, {alt}"))
        if not problems:
            results.append(Result("disk quota", OK, f"diskQuota {kinds}: root, mount"
                                  + (", mkfs.ext4 and loop devices" if "loop" in by_kind else "") + " available"))
    if "none" in by_kind:
        results.append(Result("disk quota", WARN, f"diskQuota none ({', '.join(by_kind['none'])}): diskGB is not "
                              "enforced, a job can fill the disk", "set diskQuota: loop on these environments"))
    return results


def check_live_restore(info: dict[str, Any] | None) -> Result:
    """Without live-restore, stopping dockerd stops every container: running algorithms end at 76."""
    if info is None:
        return _skipped("docker live-restore", *NO_DOCKER)
    if info.get("LiveRestoreEnabled"):
        return Result("docker live-restore", OK, "on: restarting dockerd leaves running jobs' containers running")
    return Result("docker live-restore", WARN, "off: restarting or upgrading dockerd stops every container, so "
                  "running algorithms end at 76 (queued and provisioning jobs wait for Docker and go on)",
                  'add `"live-restore": true` to /etc/docker/daemon.json and run `systemctl reload docker`')


def check_host_capacity(settings: Settings, info: dict[str, Any] | None) -> list[Result]:
    """A job needing more CPUs (Docker refuses the quota) or memory than the host has."""
    if info is None:
        return [_skipped("host capacity", *NO_DOCKER)]
    cpus, mem = int(info.get("NCPU") or 0), int(info.get("MemTotal") or 0)
    results = []
    for env in settings.environments:
        if cpus and env.nCPU > cpus:
            results.append(Result("host capacity", FAIL, f"environment {env.id!r} gives each job nCPU {env.nCPU:g} "
                                  f"but this host has {cpus} CPU(s): Docker refuses such a container",
                                  f"lower nCPU of {env.id!r} to at most {cpus}"))
        if mem and env.ram_bytes > mem:
            results.append(Result("host capacity", WARN, f"environment {env.id!r} gives each job ramGB {env.ramGB:g} "
                                  f"but this host has {mem / 1024**3:.1f} GB of memory",
                                  f"lower ramGB of {env.id!r} below {mem / 1024**3:.1f}"))
    return results or [Result("host capacity", OK, f"every environment fits ({cpus} CPUs, {mem / 1024**3:.1f} GB)")]


def check_backend(settings: Settings, manager: Any = None) -> list[Result]:
    """What the backend cannot keep; on a swarm also its manager and nodes (`manager`: a test's)."""
    from runnerd.containers.capabilities import findings  # (ok, detail, fix): what the backend cannot keep
    from runnerd.engine.swarm_checks import swarm_findings

    results = [Result("backend", OK if ok else FAIL, detail, fix) for ok, detail, fix in findings(settings)]
    if settings.backend == "swarm":
        from runnerd.containers.swarm_runtime import SwarmRuntime

        where = settings.swarmManager or _docker_host()
        swarm = manager or SwarmRuntime(node="", base_url=settings.swarmManager or None, timeout=10)
        results += [Result("swarm", *f) for f in asyncio.run(swarm_findings(settings, swarm, where))]
    return results


# -- assets -----------------------------------------------------------------------------------

def check_isolation(settings: Settings, info: dict[str, Any] | None) -> list[Result]:
    """The job user must be nobody on the host; Docker must not remap users (runnerd's folders are
    root-only, and Docker reads bind-mount sources as root)."""
    uid, _ = settings.job_ids
    try:
        owner = pwd.getpwuid(uid).pw_name
    except KeyError:
        owner = None
    results = [Result("job user", WARN, f"jobUser uid {uid} is the host user {owner!r}: that user can read running "
                      "jobs' data through /proc and signal them", "set jobUser to a uid:gid no host user has "
                      "(the default 65532:65532)") if owner else
               Result("job user", OK, f"jobUser {settings.jobUser} is no host user")]
    if info is not None and any("userns" in str(o) for o in info.get("SecurityOptions") or []):
        results.append(Result("docker userns", WARN, "Docker runs with userns-remap, which runnerd does not support: "
                              "remapped container roots cannot read runnerd's root-only job folders",
                              "remove `userns-remap` from /etc/docker/daemon.json (runnerd's jobs run as a non-root "
                              "uid with no capabilities anyway)"))
    results += [Result("oci runtime", *f) for f in runtime_findings(settings.environments, info)]  # runsc (#13)
    return results


def check_assets(assets: Path, settings: Settings | None = None) -> list[Result]:
    from runnerd.catalog import Catalog

    if not assets.is_dir():
        return [Result("assets", WARN, f"the asset catalog {assets} does not exist (no datasets registered)",
                       f"`runnerd assets add FILE --assets {assets}` registers one "
                       "(or pass --assets / RUNNERD_ASSETS)")]
    roots = tuple(Path(r) for r in settings.assetRoots) if settings else ()
    catalog = Catalog(assets, roots)
    results = [Result("assets", WARN, f"malformed DDO skipped: {problem}",
                      "correct or delete that file; `runnerd assets list` shows what loads")
               for problem in catalog.problems()]
    return results + [Result("assets", OK, f"{len(catalog.assets())} asset(s) in {assets}")]


# -- all of them ------------------------------------------------------------------------------

def collect(config: Path, data_dir: Path, assets: Path) -> list[Result]:
    config_result, settings = check_config(config)
    docker_result, runtime, info = check_docker()
    results = [config_result, docker_result, check_live_restore(info), *check_cgroups(info)]
    no_config = ("the config did not load", "fix the config check first")
    if settings is None:
        results.append(_skipped("helper image", *no_config))
    elif runtime is None:
        results.append(_skipped("helper image", *NO_DOCKER))
    else:
        results.append(check_helper_image(runtime, settings))
    results += check_gpus(settings, info) if settings else [_skipped("gpus", *no_config)]
    data_result = check_data_dir(data_dir)
    results.append(data_result)
    if settings is not None:
        results += check_disk(data_dir, settings) if data_result.status == OK else []
        results += check_disk_quota(settings)
        results += check_isolation(settings, info)
        results += check_backend(settings)  # on a swarm the nodes' capacity, not this host's:
        results += check_host_capacity(settings, info) if settings.backend == "docker" else []
    results += check_assets(assets, settings)
    from runnerd.chain.gate import probe  # chain mode (#16): only asked when configured

    results += [Result(f"chain {c.chainId}", FAIL if (why := probe(c)) else OK, why or f"{c.rpcUrl} answers",
                       "check rpcUrl and feeToken of that `chains` entry")
                for c in (settings.chains if settings else ())]
    if runtime is not None:
        asyncio.run(runtime.close())
    return results


def exit_status(results: list[Result]) -> int:
    return 1 if any(r.status == FAIL for r in results) else 0


def format_results(results: list[Result]) -> str:
    return "\n".join(f"{r.status:<4}  {r.check}: {r.detail}"
                     + (f"\n      fix: {r.fix}" if r.status != OK and r.fix else "") for r in results)
