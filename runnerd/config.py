"""environments.yaml: every key declared once (default, unit, check, help), loaded into frozen settings.

A bad file is refused with the key path named (`environments[1].ramGB: …`), never half-applied.
The KEY tables below are also what `docs/configuration.md` is checked against.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml


class ConfigError(Exception):
    """A config file that cannot be used. The message names the file and the key path."""


@dataclass(frozen=True)
class Key:
    name: str
    default: Any
    kind: str  # bool | int | number | str | list[str] | list[int] | enum
    help: str
    unit: str = ""
    minimum: float | None = None
    choices: tuple[str, ...] = ()
    required: bool = False


GLOBAL_KEYS: tuple[Key, ...] = (
    Key("chainIds", [8996], "list[int]", "chain ids this node answers for (Ocean clients key environments by them)"),
    Key("helperImage", "python:3.12-slim", "str", "image with python3 that runs the provision and filter steps"),
    Key("imagePull", "if-missing", "enum", "when to pull an algorithm or helper image",
        choices=("never", "if-missing", "always")),
    Key("unsignedStatus", False, "bool", "allow unsigned GET /api/services/compute (old ocean.js clients)"),
    Key("provisionAllow", [], "list[str]",
        "hosts or CIDRs the provision step may fetch from even though they are loopback/private/link-local"),
    Key("registryAllow", [], "list[str]",
        "registry hosts (host, host:port, IP or CIDR) a raw algorithm's image may name although they are IP "
        "literals, localhost or local-network names"),
    Key("assetRoots", [], "list[str]", "extra directories whose files `file` assets may point at"),
    Key("accessInputs", False, "bool", "also take additional inputs named through a dataset's access service "
        "(still under the policy of the dataset's compute services, if any)"),
    Key("publicUrl", "", "str", "base URL put in algorithmLogUrl/resultsUrls (default: the request's own origin)"),
    Key("resultUrlTtl", 86400, "int", "lifetime of the capability tokens in result URLs", unit="s", minimum=60),
    Key("maxRequestBytes", 4 * 1024 * 1024, "int", "largest accepted request body", unit="bytes", minimum=1024),
    Key("maxConnections", 256, "int", "open client connections; beyond, a new one gets 503 and is closed", minimum=1),
    Key("requestHeaderSeconds", 10, "number", "time from a request's first byte to the end of its headers (408)",
        unit="s", minimum=0.1),
    Key("requestBodySeconds", 30, "number", "time for a whole request body to arrive after its headers (408)",
        unit="s", minimum=0.1),
    Key("keepAliveSeconds", 15, "number", "an idle keep-alive connection is closed after this", unit="s", minimum=0.1),
    Key("jobUser", "65532:65532", "str",
        "uid:gid every job container runs as: never root, and best a uid no host user has"),
    Key("stopGraceSeconds", 5, "number", "SIGTERM-to-SIGKILL grace when a job is stopped or times out", unit="s",
        minimum=0),
    Key("provisionTimeout", 60, "number", "connect/read timeout of each download in the provision step", unit="s",
        minimum=1),
    Key("provisionRetries", 2, "int", "extra attempts for a download that failed for a transient reason",
        minimum=0),
    Key("maxDownloadGB", 10, "number", "largest single file the provision step downloads", unit="GB",
        minimum=0.000001),
    Key("diskFloorGB", 1, "number",
        "free space under the data dir below which new jobs wait in the queue", unit="GB", minimum=0),
    Key("orphanGraceSeconds", 300, "int", "age before a labelled container no job owns is removed", unit="s",
        minimum=0),
    Key("sweepIntervalSeconds", 60, "number", "how often expired results and orphans are swept", unit="s",
        minimum=1),
    Key("dockerOutageSeconds", 600, "number",
        "how long a job waits for an unreachable Docker before it ends at 76", unit="s", minimum=1),
    Key("helperStepTimeout", 3600, "number", "longest a provision or filter step may run", unit="s", minimum=1),
    Key("imagePullTimeout", 1800, "number", "longest an image pull may take (a registry silent for 2 min also "
        "ends it); the job then ends at 32", unit="s", minimum=10),
    Key("dockerTimeout", 60, "number", "timeout of one Docker API call (waits excluded)", unit="s", minimum=1),
    Key("maxJobsPerOwner", 10, "int", "jobs one consumerAddress may have queued or running at once, all "
        "environments together; more answer 429 owner_limit (0: no limit)", minimum=0),
    Key("startsPerMinutePerOwner", 30, "number", "starts one consumerAddress may make per minute (a token "
        "bucket holding as many); more answer 429 owner_limit with Retry-After (0: no limit)", minimum=0),
    Key("maxResultGBPerOwner", 20, "number", "disk the kept results of one consumerAddress may occupy; while "
        "they exceed it, its starts answer 429 owner_limit (0: no limit)", unit="GB", minimum=0),
    Key("jobRetentionSeconds", 2592000, "number", "how long the row of a job whose results expired stays "
        "(its status reads removed: 1) before the sweeper deletes it", unit="s", minimum=0),
    Key("stopWaitSeconds", 5, "number", "how long a stop (PUT) waits for its jobs to end before it answers",
        unit="s", minimum=0),
    Key("logFollowersPerJob", 4, "int", "live-log followers (`computeLogs?follow`) one job may have at once",
        minimum=1),
    Key("logFollowersPerOwner", 8, "int", "live-log followers one address may have at once, over all its jobs",
        minimum=1),
    Key("logFollowersTotal", 256, "int", "live-log followers the daemon serves at once", minimum=1),
)

ENV_KEYS: tuple[Key, ...] = (
    Key("id", None, "str", "unique environment id clients send as `environment`", required=True),
    Key("description", "", "str", "free text shown to clients as `desc`"),
    Key("nCPU", 1, "number", "CPUs per job (whole cores are pinned while free ones remain)", minimum=0.01),
    Key("ramGB", 2, "number", "memory per job; swap is off (memory+swap = memory)", unit="GB", minimum=0.006),
    Key("diskGB", 5, "number", "hard quota on everything the job writes under /data", unit="GB", minimum=0.01),
    Key("diskQuota", "loop", "enum", "how diskGB is enforced: loop (per-job ext4 file), tmpfs (RAM), none (soft)",
        choices=("loop", "tmpfs", "none")),
    Key("gpus", [], "list[str]", "GPU device ids or UUIDs this environment may hand out"),
    Key("nGPU", 0, "int", "GPUs per job, each held exclusively", minimum=0),
    Key("gpuType", "", "str", "GPU model shown to clients"),
    Key("cpuType", "", "str", "CPU model shown to clients (default: read from /proc/cpuinfo)"),
    Key("maxJobs", 2, "int", "jobs running at once; more wait in the queue at status 1", minimum=1),
    Key("maxQueue", 100, "int", "queued jobs beyond which a start answers 503", minimum=0),
    Key("maxJobDuration", 3600, "number", "algorithm run time before it is killed (status 72)", unit="s",
        minimum=1),
    Key("storageExpiry", 604800, "number", "time results are kept after the job ends", unit="s", minimum=0),
    Key("priceMin", 0, "number", "price shown to clients (runnerd does not charge)", minimum=0),
    Key("rawAlgorithmImages", ["python:3.12-slim"], "list[str]",
        "images a raw algorithm (algorithm.meta) may run: name[:tag-glob], name@sha256:…, sha256:… or *"),
    Key("allowNetwork", False, "bool", "algorithms may have network, if every input's allowNetworkAccess agrees"),
    Key("pidsLimit", 512, "int", "process/thread limit of the algorithm container", minimum=8),
    Key("nofileLimit", 4096, "int", "open-file limit of the algorithm container", minimum=64),
    Key("tmpSizeMB", 64, "int", "size of the algorithm's tmpfs /tmp (also its HOME)", unit="MB", minimum=1),
    Key("shmSizeMB", 64, "int", "size of /dev/shm", unit="MB", minimum=1),
    Key("maxOutputFiles", 1000, "int", "most files the results filter publishes", minimum=1),
    Key("maxLogMB", 10, "number", "algorithm log cap; the rest is dropped and marked", unit="MB", minimum=0.001),
    Key("readOnlyRootfs", True, "bool", "relaxation switch: false gives the algorithm a writable root filesystem"),
    Key("capAdd", [], "list[str]", "relaxation switch: capabilities given back to the algorithm (default none)"),
    Key("runtime", "", "str", "OCI runtime for algorithm containers, e.g. runsc (default: Docker's)"),
)


@dataclass(frozen=True)
class Environment:
    id: str
    description: str
    nCPU: float
    ramGB: float
    diskGB: float
    diskQuota: str
    gpus: tuple[str, ...]
    nGPU: int
    gpuType: str
    cpuType: str
    maxJobs: int
    maxQueue: int
    maxJobDuration: float
    storageExpiry: float
    priceMin: float
    rawAlgorithmImages: tuple[str, ...]
    allowNetwork: bool
    pidsLimit: int
    nofileLimit: int
    tmpSizeMB: int
    shmSizeMB: int
    maxOutputFiles: int
    maxLogMB: float
    readOnlyRootfs: bool
    capAdd: tuple[str, ...]
    runtime: str

    @property
    def ram_bytes(self) -> int:
        return int(self.ramGB * 1024**3)

    @property
    def disk_bytes(self) -> int:
        return int(self.diskGB * 1024**3)

    @property
    def log_bytes(self) -> int:
        return int(self.maxLogMB * 1024**2)


@dataclass(frozen=True)
class Settings:
    chainIds: tuple[int, ...]
    helperImage: str
    imagePull: str
    unsignedStatus: bool
    provisionAllow: tuple[str, ...]
    registryAllow: tuple[str, ...]
    assetRoots: tuple[str, ...]
    accessInputs: bool
    publicUrl: str
    resultUrlTtl: int
    maxRequestBytes: int
    maxConnections: int
    requestHeaderSeconds: float
    requestBodySeconds: float
    keepAliveSeconds: float
    jobUser: str
    stopGraceSeconds: float
    provisionTimeout: float
    provisionRetries: int
    maxDownloadGB: float
    diskFloorGB: float
    orphanGraceSeconds: int
    sweepIntervalSeconds: float
    dockerOutageSeconds: float
    helperStepTimeout: float
    imagePullTimeout: float
    dockerTimeout: float
    maxJobsPerOwner: int
    startsPerMinutePerOwner: float
    maxResultGBPerOwner: float
    jobRetentionSeconds: float
    stopWaitSeconds: float
    logFollowersPerJob: int
    logFollowersPerOwner: int
    logFollowersTotal: int
    environments: tuple[Environment, ...] = field(default_factory=tuple)
    source: str = "<defaults>"

    def environment(self, env_id: str) -> Environment | None:
        return next((e for e in self.environments if e.id == env_id), None)


_HOSTNAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")
# A rawAlgorithmImages entry, checked for shape only (runnerd.imageref matches it): *, a digest, or
# [host[:port]/]name[:tag] where any part may use * globs, optionally pinned @sha256:<digest>.
_IMAGE_PATTERN = re.compile(r"\*|sha256:[0-9a-f]{64}|(\[[0-9a-f:.]+\](:[0-9]{1,5})?/)?[a-z0-9*][a-z0-9._/:*-]{0,254}"
                            r"(@sha256:[0-9a-f]{64})?")


def _fail(path: str, message: str) -> ConfigError:
    return ConfigError(f"{path}: {message}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _coerce(key: Key, value: Any, path: str) -> Any:
    unit = f" ({key.unit})" if key.unit else ""
    if key.kind == "bool":
        if not isinstance(value, bool):
            raise _fail(path, f"must be true or false, got {value!r}")
        return value
    if key.kind in ("int", "number"):
        if not _is_number(value) or (key.kind == "int" and not float(value).is_integer()):
            want = "a whole number" if key.kind == "int" else "a number (fractions allowed, e.g. 0.25)"
            raise _fail(path, f"must be {want}{unit}, got {value!r}")
        if key.minimum is not None and value < key.minimum:
            raise _fail(path, f"must be at least {key.minimum}{unit}, got {value!r}")
        return int(value) if key.kind == "int" else float(value)
    if key.kind in ("str", "enum"):
        if not isinstance(value, str):
            raise _fail(path, f"must be a string, got {value!r}")
        if key.kind == "enum" and value not in key.choices:
            raise _fail(path, f"must be one of {', '.join(key.choices)}; got {value!r}")
        return value
    if key.kind in ("list[str]", "list[int]"):
        if not isinstance(value, list):
            raise _fail(path, f"must be a list, got {value!r}")
        item_ok: Callable[[Any], bool] = (
            (lambda v: isinstance(v, str) and v != "")
            if key.kind == "list[str]"
            else (lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0)
        )
        for i, item in enumerate(value):
            if not item_ok(item):
                want = "a non-empty string" if key.kind == "list[str]" else "a positive integer"
                raise _fail(f"{path}[{i}]", f"must be {want}, got {item!r}")
        return tuple(value)
    raise AssertionError(key.kind)


def _read_block(keys: tuple[Key, ...], raw: dict[str, Any], path: str) -> dict[str, Any]:
    known = {k.name for k in keys}
    for name in raw:
        if name not in known:
            hint = f"; known keys: {', '.join(sorted(known))}"
            raise _fail(f"{path}{name}", f"unknown key{hint}")
    out: dict[str, Any] = {}
    for key in keys:
        if key.name in raw and raw[key.name] is not None:
            out[key.name] = _coerce(key, raw[key.name], f"{path}{key.name}")
        elif key.required:
            raise _fail(f"{path}{key.name}", "is required")
        else:
            default = key.default
            out[key.name] = tuple(default) if isinstance(default, list) else default
    return out


def _check_environment(env: dict[str, Any], path: str) -> None:
    if not env["id"].strip():
        raise _fail(f"{path}id", "must not be empty")
    if env["nGPU"] > len(env["gpus"]):
        raise _fail(f"{path}nGPU", f"asks for {env['nGPU']} GPUs per job but `gpus` lists {len(env['gpus'])}")
    if len(set(env["gpus"])) != len(env["gpus"]):
        raise _fail(f"{path}gpus", "lists a device twice")
    for i, pattern in enumerate(env["rawAlgorithmImages"]):
        if not _IMAGE_PATTERN.fullmatch(pattern) or "//" in pattern or pattern.endswith(("/", ":")):
            raise _fail(f"{path}rawAlgorithmImages[{i}]", "must be *, sha256:<64 hex>, or an image name with an "
                        f"optional tag (globs allowed: python:3.12-*, ghcr.io/acme/*); got {pattern!r}")
    if env["diskQuota"] == "tmpfs" and env["diskGB"] > 64:
        raise _fail(f"{path}diskQuota", "tmpfs keeps outputs in RAM; use loop for quotas above 64 GB")


def _registry_entry_ok(entry: str) -> bool:
    """host, host:port, an IP ([v6]:port too) or a CIDR."""
    bracketed = re.fullmatch(r"\[([0-9a-f:.]+)\](:[0-9]{1,5})?", entry)
    if bracketed:
        entry = bracketed.group(1)
    elif entry.count(":") == 1:
        entry, _, port = entry.partition(":")
        if not re.fullmatch(r"[0-9]{1,5}", port):
            return False
    try:
        ipaddress.ip_network(entry, strict=False)
        return True
    except ValueError:
        return "/" not in entry and bool(_HOSTNAME.fullmatch(entry))


def _check_global(values: dict[str, Any]) -> None:
    user = values["jobUser"]
    match = re.fullmatch(r"([0-9]{1,9}):([0-9]{1,9})", user)
    if match is None or int(match.group(1)) == 0 or int(match.group(2)) == 0:
        raise _fail("jobUser", f"must be numeric uid:gid, neither of them root (0), e.g. 65532:65532; got {user!r}")
    for i, entry in enumerate(values["provisionAllow"]):
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            if not _HOSTNAME.fullmatch(entry.lower()):
                raise _fail(f"provisionAllow[{i}]", f"must be a host name, IP or CIDR; got {entry!r}") from None
    for i, entry in enumerate(values["registryAllow"]):
        if not _registry_entry_ok(entry.lower()):
            raise _fail(f"registryAllow[{i}]", f"must be a host, host:port, IP or CIDR; got {entry!r}")
    if values["publicUrl"] and not values["publicUrl"].startswith(("http://", "https://")):
        raise _fail("publicUrl", f"must start with http:// or https://; got {values['publicUrl']!r}")
    if not values["chainIds"]:
        raise _fail("chainIds", "must list at least one chain id")


def parse_config(raw: Any, source: str = "<config>") -> Settings:
    """Validate a parsed YAML document and build Settings; raises ConfigError naming the key."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"the top level must be a mapping of keys, got {type(raw).__name__}")
    raw = dict(raw)
    envs_raw = raw.pop("environments", None)
    values = _read_block(GLOBAL_KEYS, raw, "")
    _check_global(values)
    if envs_raw is None:
        raise _fail("environments", "is required: list at least one compute environment")
    if not isinstance(envs_raw, list) or not envs_raw:
        raise _fail("environments", "must be a non-empty list")
    envs: list[Environment] = []
    for i, env_raw in enumerate(envs_raw):
        path = f"environments[{i}]."
        if not isinstance(env_raw, dict):
            raise _fail(f"environments[{i}]", f"must be a mapping, got {env_raw!r}")
        env = _read_block(ENV_KEYS, env_raw, path)
        _check_environment(env, path)
        if any(e.id == env["id"] for e in envs):
            raise _fail(f"{path}id", f"duplicate environment id {env['id']!r}")
        envs.append(Environment(**env))
    return Settings(**values, environments=tuple(envs), source=source)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice (YAML would silently keep the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_config(path: str | os.PathLike[str]) -> Settings:
    """Read and validate one environments.yaml file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such file (pass --config or set RUNNERD_CONFIG)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read: {exc}") from None
    try:
        raw = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from None
    try:
        return parse_config(raw, str(p))
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None


def default_config_path() -> Path:
    """./environments.yaml if present, else /etc/runnerd/environments.yaml (SPEC §1)."""
    local = Path("environments.yaml")
    return local if local.exists() else Path("/etc/runnerd/environments.yaml")
