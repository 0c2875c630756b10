"""environments.yaml: every key declared once, loaded into frozen settings.

A key is one line in `Settings` or `Environment`: its field, type, default, unit, minimum and help
(`key(...)`). GLOBAL_KEYS and ENV_KEYS, the tables that validation, scripts/gen_config_docs.py and
the docs tests read, are derived from those fields. A bad file is refused with the key path named
(`environments[1].ramGB: …`), never half-applied.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from runnerd import imageref
from runnerd.configkeys import ConfigError as ConfigError
from runnerd.configkeys import Key as Key
from runnerd.configkeys import fail, keys_of, read_block, key


@dataclass(frozen=True)
class Environment:
    id: str = key(None, "unique environment id clients send as `environment`", required=True)
    description: str = key("", "free text shown to clients as `desc`")
    nCPU: float = key(1, "CPUs per job (whole cores are pinned while free ones remain)", minimum=0.01)
    ramGB: float = key(2, "memory per job; swap is off (memory+swap = memory)", unit="GB", minimum=0.006)
    diskGB: float = key(5, "hard quota on everything the job writes under /data", unit="GB", minimum=0.01)
    diskQuota: Literal["loop", "tmpfs", "none"] = key("loop", "how diskGB is enforced: loop (per-job ext4 file), "
                                                      "tmpfs (RAM), none (soft)")
    gpus: tuple[str, ...] = key([], "GPU device ids or UUIDs this environment may hand out")
    nGPU: int = key(0, "GPUs per job, each held exclusively", minimum=0)
    gpuType: str = key("", "GPU model shown to clients")
    cpuType: str = key("", "CPU model shown to clients (default: read from /proc/cpuinfo)")
    maxJobs: int = key(2, "jobs running at once; more wait in the queue at status 1", minimum=1)
    maxQueue: int = key(100, "queued jobs beyond which a start answers 503", minimum=0)
    maxJobDuration: float = key(3600, "algorithm run time before it is killed (status 72)", unit="s", minimum=1)
    queueMaxWaitTime: float = key(0, "longest wait at status 1; then it ends (76); 0: no bound", unit="s", minimum=0)
    storageExpiry: float = key(604800, "time results are kept after the job ends", unit="s", minimum=0)
    priceMin: float = key(0, "provider fee per minute, in fee-token units; > 0 needs chain mode", minimum=0)
    rawAlgorithmImages: tuple[str, ...] = key(["python:3.12-slim"], "images a raw algorithm (algorithm.meta) may "
                                              "run: name[:tag-glob], name@sha256:…, sha256:… or *")
    allowNetwork: bool = key(False, "algorithms may have network, if every input's allowNetworkAccess agrees")
    pidsLimit: int = key(512, "process/thread limit of the algorithm container", minimum=8)
    nofileLimit: int = key(4096, "open-file limit of the algorithm container", minimum=64)
    tmpSizeMB: int = key(64, "size of the algorithm's tmpfs /tmp (also its HOME)", unit="MB", minimum=1)
    shmSizeMB: int = key(64, "size of /dev/shm", unit="MB", minimum=1)
    maxOutputFiles: int = key(1000, "most files the results filter publishes", minimum=1)
    maxLogMB: float = key(10, "algorithm log cap; the rest is dropped and marked", unit="MB", minimum=0.001)
    readOnlyRootfs: bool = key(True, "relaxation switch: false gives the algorithm a writable root filesystem")
    capAdd: tuple[str, ...] = key([], "relaxation switch: capabilities given back to the algorithm (default none)")
    runtime: str = key("", "OCI runtime for algorithm containers, e.g. runsc (default: Docker's)")

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
class Chain:
    """One entry of `chains`: chain mode for one chain id (#16); the fee address is the node key's."""
    chainId: int = key(None, "the chain (one of chainIds)", required=True, minimum=1)
    rpcUrl: str = key(None, "JSON-RPC endpoint (http or https) of a node of that chain", required=True)
    feeToken: str = key(None, "ERC-20 the provider fees are paid in (the zero address: no fee)", required=True)
    confirmations: int = key(1, "blocks an order needs (its own included) before it counts", minimum=1)
    rpcTimeout: float = key(10, "timeout of one JSON-RPC call (a check: 3 times that)", unit="s", minimum=0.1)


@dataclass(frozen=True)
class Settings:
    chainIds: tuple[int, ...] = key([8996], "chain ids this node answers for (Ocean clients key environments by them)")
    helperImage: str = key("python:3.12-slim", "image with python3 that runs the provision and filter steps")
    imagePull: Literal["never", "if-missing", "always"] = key("if-missing", "when to pull an algorithm or helper image")
    backend: Literal["docker", "swarm"] = key("docker", "where jobs run: docker (this host) or swarm (#17)")
    swarmManager: str = key("", "backend swarm: a manager's Docker API (unix:///…, tcp://host:2376 with "
                            "DOCKER_TLS_VERIFY and DOCKER_CERT_PATH); empty: DOCKER_HOST or the local socket")
    siteURL: str = key("", "backend swarm: this runnerd's API as the swarm's workers reach it (e.g. "
                       "http://10.0.0.5:8030): their provision and filter steps move the job's data through it")
    unsignedStatus: bool = key(False, "allow unsigned GET /api/services/compute (old ocean.js clients)")
    provisionAllow: tuple[str, ...] = key([], "hosts or CIDRs the provision step may fetch from even though they are "
                                          "loopback/private/link-local")
    registryAllow: tuple[str, ...] = key([], "registry hosts (host, host:port, IP or CIDR) a raw algorithm's image "
                                         "may name although they are IP literals, localhost or local-network names")
    assetRoots: tuple[str, ...] = key([], "extra directories whose files `file` assets may point at")
    accessInputs: bool = key(False, "also take additional inputs named through a dataset's access service (still "
                             "under the policy of the dataset's compute services, if any)")
    publicUrl: str = key("", "base URL put in algorithmLogUrl/resultsUrls (default: the request's own origin)")
    resultUrlTtl: int = key(86400, "lifetime of the capability tokens in result URLs", unit="s", minimum=60)
    maxRequestBytes: int = key(4 * 1024 * 1024, "largest accepted request body", unit="bytes", minimum=1024)
    maxConnections: int = key(256, "open client connections; beyond, a new one gets 503 and is closed", minimum=1)
    requestHeaderSeconds: float = key(10, "time from a request's first byte to the end of its headers (408)",
                                      unit="s", minimum=0.1)
    requestBodySeconds: float = key(30, "time for a whole request body to arrive after its headers (408)",
                                    unit="s", minimum=0.1)
    keepAliveSeconds: float = key(15, "an idle keep-alive connection is closed after this", unit="s", minimum=0.1)
    jobUser: str = key("65532:65532", "uid:gid every job container runs as: never root, best a uid no host user has")
    stopGraceSeconds: float = key(5, "SIGTERM-to-SIGKILL grace when a job is stopped or times out", unit="s", minimum=0)
    provisionTimeout: float = key(60, "connect/read timeout of a download in the provision step", unit="s", minimum=1)
    provisionRetries: int = key(2, "extra attempts for a download that failed for a transient reason", minimum=0)
    maxDownloadGB: float = key(10, "largest single file the provision step downloads", unit="GB", minimum=0.000001)
    diskFloorGB: float = key(1, "free space under the data dir below which new jobs wait in the queue",
                             unit="GB", minimum=0)
    orphanGraceSeconds: int = key(300, "age before a labelled container no job owns is removed", unit="s", minimum=0)
    sweepIntervalSeconds: float = key(60, "how often expired results and orphans are swept", unit="s", minimum=1)
    dockerOutageSeconds: float = key(600, "how long a job waits for an unreachable Docker before it ends at 76",
                                     unit="s", minimum=1)
    helperStepTimeout: float = key(3600, "longest a provision or filter step may run", unit="s", minimum=1)
    imagePullTimeout: float = key(1800, "longest an image pull may take (a registry silent for 2 min also ends it); "
                                  "the job then ends at 32", unit="s", minimum=10)
    dockerTimeout: float = key(60, "timeout of one Docker API call (waits excluded)", unit="s", minimum=1)
    maxJobsPerOwner: int = key(10, "jobs one consumerAddress may have queued or running at once, all environments "
                               "together; more answer 429 owner_limit (0: no limit)", minimum=0)
    startsPerMinutePerOwner: float = key(30, "starts one consumerAddress may make per minute (a token bucket holding "
                                         "as many); more answer 429 owner_limit with Retry-After (0: no limit)",
                                         minimum=0)
    maxResultGBPerOwner: float = key(20, "disk the kept results of one consumerAddress may occupy; while they exceed "
                                     "it, its starts answer 429 owner_limit (0: no limit)", unit="GB", minimum=0)
    jobRetentionSeconds: float = key(2592000, "how long the row of a job whose results expired stays (its status "
                                     "reads removed: 1) before the sweeper deletes it", unit="s", minimum=0)
    stopWaitSeconds: float = key(5, "how long a stop (PUT) waits for its jobs to end before it answers",
                                 unit="s", minimum=0)
    logFollowersPerJob: int = key(4, "live-log followers (`computeLogs?follow`) one job may have at once", minimum=1)
    logFollowersPerOwner: int = key(8, "live-log followers one address may have at once, over all its jobs", minimum=1)
    logFollowersTotal: int = key(256, "live-log followers the daemon serves at once", minimum=1)
    provenance: bool = key(True, "sign an attestation of each job whose algorithm ran (result type attestation)")
    usageInterval: float = key(2, "seconds between readings of running jobs' usage (0: off)", unit="s", minimum=0)
    imageCacheGB: float = key(0, "disk for images runnerd pulled; the LRU beyond it go (0: off)", unit="GB", minimum=0)
    environments: tuple[Environment, ...] = field(default_factory=tuple)
    source: str = "<defaults>"
    chains: tuple[Chain, ...] = ()  # chain mode (#16): one per chain id, none by default

    def environment(self, env_id: str) -> Environment | None:
        return next((e for e in self.environments if e.id == env_id), None)

    def chain(self, chain_id: int) -> Chain | None:
        return next((c for c in self.chains if c.chainId == chain_id), None)

    @property
    def job_ids(self) -> tuple[int, int]:
        """jobUser as (uid, gid): what the workspace, intake and doctor use (checked at load)."""
        ids = _job_ids(self.jobUser)
        if ids is None:
            raise ValueError(f"jobUser is not uid:gid: {self.jobUser!r}")
        return ids


GLOBAL_KEYS: tuple[Key, ...] = keys_of(Settings)
ENV_KEYS: tuple[Key, ...] = keys_of(Environment)
CHAIN_KEYS: tuple[Key, ...] = keys_of(Chain)


def _job_ids(user: str) -> tuple[int, int] | None:
    """The one parser of jobUser: numeric `uid:gid`, else None."""
    match = re.fullmatch(r"([0-9]{1,9}):([0-9]{1,9})", user)
    return None if match is None else (int(match.group(1)), int(match.group(2)))


_HOSTNAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")
def _check_environment(env: dict[str, Any], path: str) -> None:
    if not env["id"].strip():
        raise fail(f"{path}id", "must not be empty")
    if env["nGPU"] > len(env["gpus"]):
        raise fail(f"{path}nGPU", f"asks for {env['nGPU']} GPUs per job but `gpus` lists {len(env['gpus'])}")
    if len(set(env["gpus"])) != len(env["gpus"]):
        raise fail(f"{path}gpus", "lists a device twice")
    for i, pattern in enumerate(env["rawAlgorithmImages"]):
        try:
            imageref.check_pattern(pattern)
        except ValueError:
            raise fail(f"{path}rawAlgorithmImages[{i}]", "must be *, sha256:<64 hex>, or an image name with an "
                        f"optional tag (globs allowed: python:3.12-*, ghcr.io/acme/*); got {pattern!r}") from None
    if env["diskQuota"] == "tmpfs" and env["diskGB"] > 64:
        raise fail(f"{path}diskQuota", "tmpfs keeps outputs in RAM; use loop for quotas above 64 GB")


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
    ids = _job_ids(user)
    if ids is None or 0 in ids:
        raise fail("jobUser", f"must be numeric uid:gid, neither of them root (0), e.g. 65532:65532; got {user!r}")
    for i, entry in enumerate(values["provisionAllow"]):
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            if not _HOSTNAME.fullmatch(entry.lower()):
                raise fail(f"provisionAllow[{i}]", f"must be a host name, IP or CIDR; got {entry!r}") from None
    for i, entry in enumerate(values["registryAllow"]):
        if not _registry_entry_ok(entry.lower()):
            raise fail(f"registryAllow[{i}]", f"must be a host, host:port, IP or CIDR; got {entry!r}")
    if values["publicUrl"] and not values["publicUrl"].startswith(("http://", "https://")):
        raise fail("publicUrl", f"must start with http:// or https://; got {values['publicUrl']!r}")
    if values["siteURL"] and not values["siteURL"].startswith(("http://", "https://")):
        raise fail("siteURL", f"must start with http:// or https://; got {values['siteURL']!r}")
    if values["backend"] == "swarm" and not values["siteURL"]:
        raise fail("siteURL", "is required with backend: swarm (the URL the workers reach this runnerd's API at)")
    if not values["chainIds"]:
        raise fail("chainIds", "must list at least one chain id")


def parse_config(raw: Any, source: str = "<config>") -> Settings:
    """Validate a parsed YAML document and build Settings; raises ConfigError naming the key."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"the top level must be a mapping of keys, got {type(raw).__name__}")
    raw = dict(raw)
    envs_raw, chains_raw = raw.pop("environments", None), raw.pop("chains", None) or []
    values = read_block(GLOBAL_KEYS, raw, "")
    _check_global(values)
    if envs_raw is None:
        raise fail("environments", "is required: list at least one compute environment")
    if not isinstance(envs_raw, list) or not envs_raw:
        raise fail("environments", "must be a non-empty list")
    if not isinstance(chains_raw, list) or not all(isinstance(c, dict) for c in chains_raw):
        raise fail("chains", "must be a list of mappings {chainId, rpcUrl, feeToken, …}")
    chains = tuple(_read_chain(c, f"chains[{i}].", values["chainIds"]) for i, c in enumerate(chains_raw))
    if len({c.chainId for c in chains}) != len(chains):
        raise fail("chains", "names a chainId twice")
    envs: list[Environment] = []
    for i, env_raw in enumerate(envs_raw):
        path = f"environments[{i}]."
        if not isinstance(env_raw, dict):
            raise fail(f"environments[{i}]", f"must be a mapping, got {env_raw!r}")
        env = read_block(ENV_KEYS, env_raw, path)
        _check_environment(env, path)
        if env["priceMin"] > 0 and not any(int(c.feeToken, 16) for c in chains):  # else it is given away
            raise fail(f"{path}priceMin", "is above 0, but no `chains` entry (with a feeToken) turns on chain mode")
        if any(e.id == env["id"] for e in envs):
            raise fail(f"{path}id", f"duplicate environment id {env['id']!r}")
        envs.append(Environment(**env))
    return Settings(**values, environments=tuple(envs), source=source, chains=chains)


def _read_chain(raw: dict[str, Any], path: str, chain_ids: tuple[int, ...]) -> Chain:
    c = read_block(CHAIN_KEYS, raw, path)
    if c["chainId"] not in chain_ids:
        raise fail(f"{path}chainId", f"must be one of chainIds {list(chain_ids)}; got {c['chainId']}")
    if not re.fullmatch(r"https?://[^\s/?#@]+(/\S*)?", c["rpcUrl"]):
        raise fail(f"{path}rpcUrl", f"must be an http(s):// URL without user:password@; got {c['rpcUrl']!r}")
    if not re.fullmatch(r"0x[0-9a-fA-F]{40}", c["feeToken"]):
        raise fail(f"{path}feeToken", f"must be a 0x address (40 hex digits); got {c['feeToken']!r}")
    return Chain(**c)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice (YAML would silently keep the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice", key_node.start_mark)
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
        raw = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: plain data only
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
