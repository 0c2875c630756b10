"""Ready quota filesystems, so that a job's disk quota is not formatted on its critical path.

With `diskQuota: loop` every job gets a sparse file of diskGB formatted ext4 (workspace.py). The
format is made here ahead of time instead: each such environment keeps up to `depth` formatted,
never-mounted images of its exact size in `<data>/quota-pool/<env>/`, and preparing a job renames
one into the job's folder (`disk.img`) and only mounts it. A take is refilled at once, on one
background thread, so the next job finds one again.

Crash safety comes from renames: an image is formatted under a `.tmp-` name and renamed to
`<bytes>-<uuid>.img` only when complete, and a take is one rename into the job's folder, so every
image is either whole in the pool or the job's own. At start-up (`start`) the pool throws away
what it cannot trust: `.tmp-` leftovers, images of another size (diskGB changed), the folders of
environments no longer configured or no longer `loop`. Bounded: at most `depth` images per
environment, each sparse (a fresh ext4 holds a few MB of metadata on the host disk).
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable

from runnerd.config import Environment
from runnerd.errors import WorkspaceError

log = logging.getLogger("runnerd.quota_pool")
QUOTA_POOL_DIR = "quota-pool"  # under the data dir
DEPTH = 2  # per environment (never more than its maxJobs): one for the next job, one for the one after
MKFS = ["mkfs.ext4", "-q", "-F", "-m", "0", "-E", "lazy_itable_init=1,lazy_journal_init=1"]
TMP = ".tmp-"


def format_image(path: Path, size: int) -> None:
    """A sparse file of `size` bytes formatted ext4 (the one recipe: the pool and workspace use it)."""
    with open(path, "wb") as f:
        f.truncate(size)  # sparse: host disk is used only as the job writes
    proc = subprocess.run([*MKFS, str(path)], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise WorkspaceError(f"mkfs.ext4 failed: {(proc.stderr or proc.stdout).strip()}")


def env_folder_name(env_id: str) -> str:
    # Environment ids are free text: never a path component as they are.
    return hashlib.sha256(env_id.encode()).hexdigest()[:16]


class QuotaPool:
    def __init__(self, root: Path, depth: int = DEPTH):
        self.root = Path(root)
        self.depth = depth
        self._envs: dict[str, Environment] = {}
        self._pending: set[str] = set()  # environments with a fill queued or running
        self._again: set[str] = set()  # taken from while their fill ran: look again when it ends
        self._lock = threading.Lock()
        self._worker: ThreadPoolExecutor | None = None
        self._closed = False

    # -- life cycle ------------------------------------------------------------------------------

    def start(self, environments: Iterable[Environment]) -> None:
        """Clean what a previous run left (synchronously: cheap) and fill in the background."""
        self._envs = {env.id: env for env in environments if env.diskQuota == "loop" and self._depth(env)}
        try:
            self.clean()
        except OSError as exc:  # the pool is an optimisation: a daemon never fails to start on it
            log.warning("quota pool: cannot clean %s (%s); jobs format their own", self.root, exc)
            self._envs = {}
        if not self._envs:
            return
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="quota-pool")
        for env in self._envs.values():
            self._refill(env)

    def close(self) -> None:
        """Stop filling (an image half formatted is a `.tmp-` file, thrown away at the next start)."""
        self._closed = True
        if self._worker is not None:
            self._worker.shutdown(wait=True, cancel_futures=True)

    def clean(self) -> int:
        """Remove every file the pool cannot vouch for; returns how many."""
        keep = {env_folder_name(env.id): env for env in self._envs.values()}
        removed = 0
        try:
            folders = list(os.scandir(self.root))
        except FileNotFoundError:
            return 0
        for folder in folders:
            env = keep.get(folder.name)
            if not folder.is_dir(follow_symlinks=False):
                removed += _unlink(Path(folder.path))
                continue
            for entry in os.scandir(folder.path):
                if env is None or not self._is_ready(entry, env):
                    removed += _unlink(Path(entry.path))
            if env is None:
                try:
                    os.rmdir(folder.path)
                except OSError:
                    pass
        if removed:
            log.info("quota pool: removed %d stale file(s)", removed)
        return removed

    # -- use -------------------------------------------------------------------------------------

    def take(self, env: Environment, dest: Path) -> bool:
        """Rename a ready image of `env` to `dest` (which must not exist); False when none is
        ready (the caller formats one itself). Always queues a refill."""
        if env.id not in self._envs or env.diskQuota != "loop":
            return False
        taken = False
        for entry in self._ready(env):
            try:
                # link + unlink, not rename: a rename would silently replace an existing dest.
                os.link(entry, dest)
            except FileExistsError:
                break  # the job already has its image (a retried prepare): keep this one
            except OSError:
                continue  # taken by another job meanwhile
            _unlink(entry)
            taken = True
            break
        self._refill(env)
        return taken

    def ready_count(self, env: Environment) -> int:
        return len(self._ready(env))

    # -- internals -------------------------------------------------------------------------------

    def _depth(self, env: Environment) -> int:
        return min(self.depth, env.maxJobs)

    def _folder(self, env: Environment) -> Path:
        return self.root / env_folder_name(env.id)

    def _is_ready(self, entry: os.DirEntry[str], env: Environment) -> bool:
        if not entry.name.startswith(f"{env.disk_bytes}-") or not entry.name.endswith(".img"):
            return False
        try:
            return entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_size == env.disk_bytes
        except OSError:
            return False

    def _ready(self, env: Environment) -> list[Path]:
        try:
            return sorted(Path(e.path) for e in os.scandir(self._folder(env)) if self._is_ready(e, env))
        except FileNotFoundError:
            return []

    def _refill(self, env: Environment) -> None:
        with self._lock:
            if self._worker is None or self._closed:
                return
            if env.id in self._pending:
                self._again.add(env.id)
                return
            self._pending.add(env.id)
        self._worker.submit(self._fill, env)

    def _fill(self, env: Environment) -> None:
        while True:
            self._fill_once(env)
            with self._lock:
                if env.id not in self._again or self._closed:
                    self._pending.discard(env.id)
                    return
                self._again.discard(env.id)

    def _fill_once(self, env: Environment) -> None:
        folder = self._folder(env)
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(self.root, 0o700)  # root only, like the job folders the images move into
        except OSError as exc:
            log.warning("quota pool: cannot create %s (%s); jobs format their own", folder, exc)
            return
        while not self._closed and len(self._ready(env)) < self._depth(env):
            token = uuid.uuid4().hex
            tmp = folder / f"{TMP}{token}"
            try:
                format_image(tmp, env.disk_bytes)
                os.rename(tmp, folder / f"{env.disk_bytes}-{token}.img")
            except (OSError, WorkspaceError, subprocess.SubprocessError) as exc:
                _unlink(tmp)
                log.warning("quota pool: cannot prepare a filesystem for %s (%s); jobs format their own",
                            env.id, exc)
                return


def _unlink(path: Path) -> int:
    try:
        path.unlink()
        return 1
    except FileNotFoundError:
        return 0
    except OSError as exc:
        log.warning("quota pool: cannot remove %s: %s", path.name, exc)
        return 0
