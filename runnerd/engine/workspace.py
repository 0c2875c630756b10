"""A job's host-side files: its quota filesystem (the job's /data), logs and results.

diskGB is a hard quota on everything the job writes under /data, enforced by giving the job its
own filesystem (diskQuota):
  loop   a sparse file formatted ext4 and loop-mounted (default; costs disk only as it fills)
  tmpfs  a size-limited tmpfs (fast, but the bytes live in RAM)
  none   a plain directory: no enforcement (for hosts where mounting is impossible)
The mount is made by runnerd on the host, so dockerd must share runnerd's mount namespace (the
systemd unit therefore avoids ProtectSystem/PrivateTmp; see docs/operator-guide.md).
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
from pathlib import Path

from runnerd import layout
from runnerd.config import Environment
from runnerd.containers.runtime import ContainerSpec
from runnerd.domain import JobStatus, LocalFile, PlannedJob, StepKind
from runnerd.engine import pins, site_archive
from runnerd.engine.quota_pool import QuotaPool, format_image
from runnerd.engine.trees import remove_tree
from runnerd.errors import WorkspaceError
from runnerd.layout import JobPaths, did_dir

log = logging.getLogger("runnerd.workspace")
_FS, _ALL = "fs", "all"  # what a pending cleanup still has to remove


def _run(argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise WorkspaceError(f"{' '.join(argv[:2])} failed: {(proc.stderr or proc.stdout).strip()}")


class Workspace:
    remote = False  # the job's /data is here, under the data dir

    def __init__(self, data_dir: Path, job_ids: tuple[int, int], pool: QuotaPool | None = None):
        self.data_dir = Path(data_dir)
        self.pool = pool  # ready quota filesystems (engine/quota_pool.py); None formats each one here
        self.uid, self.gid = job_ids  # jobUser (Settings.job_ids)
        self._can_chown = os.geteuid() == 0
        self._pending_dir = self.data_dir / "cleanup-pending"  # one file per job whose cleanup failed

    def paths(self, job_id: str) -> JobPaths:
        return JobPaths.for_job(self.data_dir, job_id)

    # -- setup --------------------------------------------------------------------------------

    async def prepare(self, job: PlannedJob, env: Environment) -> JobPaths:
        """Create (idempotently) the job's quota filesystem, folders and the files runnerd writes
        itself: DDOs, algoCustomData.json, raw algorithm code, mount points for local files."""
        return await asyncio.to_thread(self._prepare, job, env)

    def _prepare(self, job: PlannedJob, env: Environment) -> JobPaths:
        # Every mode is explicit: the daemon may run under a strict umask (the systemd unit's 0077),
        # and the job's containers run as jobUser, not root.
        p = self.paths(job.job_id)
        for d in (p.root, p.logs, p.provision_out, p.results, p.fs):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(p.root, 0o700)  # root only (bind sources are resolved by Docker, as root)
        os.chmod(p.logs, 0o700)  # written and read by runnerd only
        self._mount_quota(p, env)
        for sub in (".", *layout.FS_SUBDIRS):
            (p.fs / sub).mkdir(exist_ok=True)
            os.chmod(p.fs / sub, 0o755)
        for item in job.plan.inputs:
            folder = p.fs / "inputs" / did_dir(item.did)
            folder.mkdir(exist_ok=True)
            os.chmod(folder, 0o755)
            for index, f in enumerate(item.files):
                if isinstance(f, LocalFile):
                    (folder / str(index)).touch(mode=0o644)  # mount point for the read-only bind
        # DDOs, custom data, raw code: the same bytes a remote job site sends its node (#17).
        for rel, data, mode in site_archive.runnerd_files(job):
            (p.fs / rel).write_bytes(data)
            os.chmod(p.fs / rel, mode)
        # What the algorithm will mount: the local files as runnerd opens and checks them now.
        pins.pin_all(job, p, self.uid, self.gid)
        if isinstance(job.plan.algorithm.code, LocalFile):
            (p.fs / "transformations" / "algorithm").touch(mode=0o644)
        # The job's uid writes inputs (provision), outputs and logs (algorithm), results (filter).
        # The root of the job's filesystem stays root's: the job's uid gets only the folders it
        # writes in, so nothing it does can rename or replace what runnerd manages.
        for d in (p.fs / "inputs", p.fs / "transformations", p.fs / "outputs", p.fs / "logs",
                  p.provision_out, p.results, *(p.fs / "inputs").iterdir()):
            if d.is_dir() and not d.is_symlink():
                self._give(d)
        return p

    async def write_log(self, job_id: str, name: str, lines: list[str]) -> None:
        """A log runnerd writes itself (the configurationLog of a job with nothing to download),
        replacing any left by an attempt that crashed."""
        path = self.paths(job_id).log(name)
        await asyncio.to_thread(path.write_text, "".join(f"{line}\n" for line in lines), encoding="utf-8")

    async def ensure_mounted(self, job: PlannedJob, env: Environment) -> None:
        """Mount the job's quota filesystem again if it is not (after a host reboot), touching
        nothing inside it: once job code has run there, root only mounts and unmounts it."""
        p = self.paths(job.job_id)
        if p.fs.is_dir() and not p.fs.is_symlink():
            await asyncio.to_thread(self._mount_quota, p, env)
        if job.status == JobStatus.RUNNING:  # the algorithm (re)starts: a reboot drops bind-mounted pins
            await asyncio.to_thread(pins.repin, job, p, self.uid, self.gid)

    def _mount_quota(self, p: JobPaths, env: Environment) -> None:
        if os.path.ismount(p.fs) or env.diskQuota == "none":
            return
        if env.diskQuota == "tmpfs":
            _run(["mount", "-t", "tmpfs", "-o", f"size={env.disk_bytes},mode=0755,nosuid,nodev", "tmpfs", str(p.fs)])
            return
        if not p.disk_image.exists() and not (self.pool and self.pool.take(env, p.disk_image)):
            # Formatted aside and renamed: a crash mid-format never leaves a disk.img that cannot mount.
            tmp = p.disk_image.with_name(p.disk_image.name + ".tmp")
            format_image(tmp, env.disk_bytes)
            os.rename(tmp, p.disk_image)
        _run(["mount", "-o", "loop,nosuid,nodev", str(p.disk_image), str(p.fs)])
        lost = p.fs / "lost+found"
        if lost.exists():
            remove_tree(lost)

    def _give(self, path: Path) -> None:
        if self._can_chown:
            os.chown(path, self.uid, self.gid)
        else:  # unprivileged runnerd (development only): let the job uid write anyway
            os.chmod(path, 0o777)

    def step_spec(self, job: PlannedJob, env: Environment, kind: StepKind, spec: ContainerSpec) -> ContainerSpec:
        """containers/spec.py builds for this site: its bind mounts are this site's folders."""
        return spec

    # -- queries ------------------------------------------------------------------------------

    async def disk_full(self, job: PlannedJob, env: Environment, slack: int = 1024 * 1024) -> bool:
        """Whether the job's quota filesystem is (nearly) full: how a write past diskGB shows."""
        p = self.paths(job.job_id)
        if not os.path.ismount(p.fs):
            return False
        st = os.statvfs(p.fs)
        return st.f_bavail * st.f_frsize < slack

    # -- teardown -----------------------------------------------------------------------------

    async def release_fs(self, job_id: str) -> bool:
        """Unmount and delete the quota filesystem once results are out of it. Never raises:
        ending a job must not fail on its cleanup; what is left is recorded and retried by the
        sweeper (`retry_cleanups`). True when nothing is left."""
        return await asyncio.to_thread(self._cleanup, job_id, _FS)

    async def remove(self, job_id: str) -> bool:
        """Delete everything the job has on disk (DELETE, expiry). Never raises, like release_fs."""
        return await asyncio.to_thread(self._cleanup, job_id, _ALL)

    def pending_cleanups(self) -> dict[str, str]:
        """job id -> what is left to remove (fs | all), for cleanups that failed."""
        try:
            entries = list(os.scandir(self._pending_dir))
        except FileNotFoundError:
            return {}
        out = {}
        for entry in entries:
            try:
                with open(entry.path, encoding="utf-8") as f:
                    out[entry.name] = f.read().strip() or _ALL
            except OSError:
                continue
        return out

    async def retry_cleanups(self, busy: set[str]) -> int:
        """Retry the cleanups that failed (the sweeper's job); returns how many now succeeded."""
        done = 0
        for job_id, what in self.pending_cleanups().items():
            if job_id not in busy and await asyncio.to_thread(self._cleanup, job_id, what):
                log.info("job %s: pending cleanup done", job_id)
                done += 1
        return done

    def _cleanup(self, job_id: str, what: str) -> bool:
        p = self.paths(job_id)
        try:
            self._release_fs(p)
            if what == _ALL:
                _must_be_gone(p.root, remove_tree(p.root))
        except Exception as exc:  # noqa: BLE001 - RecursionError, a mount, a TreeChanged: all the same here
            self._record_pending(job_id, what)
            log.error("job %s: cleanup of its %s failed (%s: %s); the sweeper retries it", job_id,
                      "quota filesystem" if what == _FS else "folder", type(exc).__name__, exc)
            return False
        self._clear_pending(job_id, what)
        return True

    def _record_pending(self, job_id: str, what: str) -> None:
        try:
            self._pending_dir.mkdir(mode=0o700, exist_ok=True)
            record = self._pending_dir / job_id
            if what == _FS and record.exists():
                return  # an `all` already pending covers the filesystem too
            record.write_text(what, encoding="utf-8")
        except OSError as exc:  # the data dir itself failing: the orphan sweeps still see the folder
            log.error("job %s: cannot record the pending cleanup: %s", job_id, exc)

    def _clear_pending(self, job_id: str, what: str) -> None:
        record = self._pending_dir / job_id
        try:
            if what == _ALL or record.read_text(encoding="utf-8").strip() == _FS:
                record.unlink()
        except OSError:
            pass

    def _release_fs(self, p: JobPaths) -> None:
        if os.path.ismount(p.fs):
            try:
                _run(["umount", str(p.fs)])
            except WorkspaceError:
                _run(["umount", "-l", str(p.fs)])  # a lingering reader: detach now, free when it lets go
        pins.unpin(p)  # first: a bind-mounted pin is unmounted, never deleted through
        # The algorithm made this tree (with diskQuota none, directly on the host's disk): never
        # shutil.rmtree it (recursion, links, mounts; see trees.py).
        _must_be_gone(p.fs, remove_tree(p.fs))
        p.disk_image.unlink(missing_ok=True)
        p.disk_image.with_name(p.disk_image.name + ".tmp").unlink(missing_ok=True)  # a format a crash cut
        _must_be_gone(p.provision_out, remove_tree(p.provision_out))

    def job_dirs(self) -> list[str]:
        root = self.data_dir / "jobs"
        return [d.name for d in root.iterdir()] if root.exists() else []


def _must_be_gone(path: Path, problems: list[str]) -> None:
    if problems:
        raise WorkspaceError(f"{path.name}: {'; '.join(sorted(set(problems)))}")
