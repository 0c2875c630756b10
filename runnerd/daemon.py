"""Composition root: opens the store, the Docker runtime, the catalog and the engine in order and
closes them in reverse. The only place that picks the real runtime."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from runnerd.catalog import Catalog
from runnerd.chain.gate import ChainGate
from runnerd.clock import SYSTEM, Clock
from runnerd.config import Settings
from runnerd.containers.runtime import ContainerRuntime
from runnerd.containers.site import JobSite
from runnerd.engine.placement import Placer
from runnerd.engine.service import Engine
from runnerd.identity import NodeIdentity
from runnerd.metrics import Metrics
from runnerd.store import Database, JobStore


@dataclass
class Daemon:
    settings: Settings
    data_dir: Path
    assets_dir: Path
    identity: NodeIdentity
    store: JobStore
    runtime: ContainerRuntime
    catalog: Catalog
    engine: Engine
    metrics: Metrics


class DataDirBusy(OSError):
    """Another runnerd holds the data dir: two daemons would run the same jobs twice."""


LOCK_FILE = "runnerd.lock"


def lock_data_dir(data_dir: Path) -> int:
    """Take the data dir's lock for the life of the process (the kernel drops it when the process
    dies, even by SIGKILL, so a crash never leaves a stale lock) and write our pid into it."""
    path = data_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise DataDirBusy(f"another runnerd (pid {holder}) already uses the data dir {data_dir}; "
                              f"stop it first, or give this one its own --data-dir") from None
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _real_backend(settings: Settings, data_dir: Path, identity: NodeIdentity,
                  clock: Clock) -> tuple[ContainerRuntime, JobSite | None, Placer | None]:
    """This host's Docker; or a swarm (#17): its manager runs the steps, the jobs' /data lives on
    the nodes (SwarmSite), and runnerd places each job on a node itself (NodePlacer)."""
    workers = max(64, 4 * sum(e.maxJobs for e in settings.environments) + 32)  # a wait and a log follow per
    # running job, with room to spare
    instance, timeout, pulls = identity.address.lower(), settings.dockerTimeout, settings.imagePullTimeout
    if settings.backend != "swarm":
        from runnerd.containers.docker_runtime import DockerRuntime

        return DockerRuntime(timeout=timeout, instance=instance, pull_timeout=pulls, long_workers=workers), None, None
    from runnerd.containers.swarm_runtime import SwarmRuntime
    from runnerd.engine.node_placer import NodePlacer
    from runnerd.engine.site_tokens import SiteTokens
    from runnerd.engine.swarm_site import SwarmSite

    swarm = SwarmRuntime(node="", base_url=settings.swarmManager or None, timeout=timeout, instance=instance,
                         pull_timeout=pulls, long_workers=workers)
    site = SwarmSite(data_dir, settings, swarm, SiteTokens(data_dir).token, settings.siteURL)
    return swarm, site, NodePlacer(settings, source=swarm.nodes, clock=clock)


@contextlib.asynccontextmanager
async def open_daemon(settings: Settings, data_dir: Path, assets_dir: Path,
                      runtime: ContainerRuntime | None = None, clock: Clock | None = None) -> AsyncIterator[Daemon]:
    """`runtime` and `clock`: None for the real ones (the daemon); a test passes its fakes."""
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    # Root only: Docker resolves bind-mount sources as root, so no job and no host user needs to
    # traverse these folders (and local users can learn job ids from /proc/*/mountinfo).
    os.chmod(data_dir, 0o700)
    (data_dir / "jobs").mkdir(exist_ok=True)
    os.chmod(data_dir / "jobs", 0o700)
    lock = lock_data_dir(data_dir)  # before anything reads the store or touches Docker
    assets_dir = Path(assets_dir).resolve()
    assets_dir.mkdir(parents=True, exist_ok=True)
    identity = NodeIdentity.load_or_create(data_dir)
    db = await Database.open(data_dir / "runnerd.db")
    store = JobStore(db)
    site, placer = None, None
    if runtime is None:
        runtime, site, placer = _real_backend(settings, data_dir, identity, clock or SYSTEM)
    catalog = Catalog(assets_dir, tuple(Path(r) for r in settings.assetRoots))
    metrics = Metrics()
    engine = Engine(settings, store, runtime, catalog, data_dir, metrics.hooks(),
                    chain=ChainGate(settings, identity.address, identity.private_key), clock=clock or SYSTEM,
                    identity=identity, usage_hook=metrics.usage, site=site, placer=placer)
    try:
        yield Daemon(settings, data_dir, assets_dir, identity, store, runtime, catalog, engine, metrics)
    finally:
        await engine.shutdown()
        close = getattr(runtime, "close", None)
        if close is not None:
            await close()
        await db.close()
        os.close(lock)
