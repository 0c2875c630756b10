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
import json
import logging
import os
import shutil
import subprocess
from pathlib import Path

from runnerd import layout
from runnerd.config import Environment
from runnerd.domain import Job, JobStatus
from runnerd.engine import pins
from runnerd.errors import WorkspaceError
from runnerd.layout import JobPaths, did_dir

log = logging.getLogger("runnerd.workspace")


def _run(argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise WorkspaceError(f"{' '.join(argv[:2])} failed: {(proc.stderr or proc.stdout).strip()}")


def _ids(job_user: str) -> tuple[int, int]:
    uid, gid = job_user.split(":")
    return int(uid), int(gid)


class Workspace:
    def __init__(self, data_dir: Path, job_user: str):
        self.data_dir = Path(data_dir)
        self.uid, self.gid = _ids(job_user)
        self._can_chown = os.geteuid() == 0

    def paths(self, job_id: str) -> JobPaths:
        return JobPaths.for_job(self.data_dir, job_id)

    # -- setup --------------------------------------------------------------------------------

    async def prepare(self, job: Job, env: Environment) -> JobPaths:
        """Create (idempotently) the job's quota filesystem, folders and the files runnerd writes
        itself: DDOs, algoCustomData.json, raw algorithm code, mount points for local files."""
        return await asyncio.to_thread(self._prepare, job, env)

    def _prepare(self, job: Job, env: Environment) -> JobPaths:
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
        spec = job.spec
        for item in spec["inputs"]:
            folder = p.fs / "inputs" / did_dir(item["did"])
            folder.mkdir(exist_ok=True)
            os.chmod(folder, 0o755)
            for index, f in enumerate(item["files"]):
                if f["type"] == "file":
                    (folder / str(index)).touch(mode=0o644)  # mount point for the read-only bind
            _write_json(p.fs / "ddos" / did_dir(item["did"]), item["ddo"])
        algo = spec["algorithm"]
        if algo.get("did") and algo.get("ddo"):
            _write_json(p.fs / "ddos" / did_dir(algo["did"]), algo["ddo"])
        if algo.get("algocustomdata") is not None:
            _write_json(p.fs / "inputs" / "algoCustomData.json", algo["algocustomdata"])
        # What the algorithm will mount: the local files as runnerd opens and checks them now.
        pins.pin_all(job, p, self.uid, self.gid)
        code_path = p.fs / "transformations" / "algorithm"
        if algo["code"]["type"] == "raw":
            code_path.write_text(algo["code"]["rawcode"], encoding="utf-8")
            os.chmod(code_path, 0o755)
        elif algo["code"]["type"] == "file":
            code_path.touch(mode=0o644)
        # The job's uid writes inputs (provision), outputs and logs (algorithm), results (filter).
        # The root of the job's filesystem stays root's: the job's uid gets only the folders it
        # writes in, so nothing it does can rename or replace what runnerd manages.
        for d in (p.fs / "inputs", p.fs / "transformations", p.fs / "outputs", p.fs / "logs",
                  p.provision_out, p.results, *(p.fs / "inputs").iterdir()):
            if d.is_dir() and not d.is_symlink():
                self._give(d)
        return p

    async def ensure_mounted(self, job: Job, env: Environment) -> None:
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
        if not p.disk_image.exists():
            with open(p.disk_image, "wb") as f:
                f.truncate(env.disk_bytes)  # sparse: host disk is used only as the job writes
            _run(["mkfs.ext4", "-q", "-F", "-m", "0", "-E", "lazy_itable_init=1,lazy_journal_init=1",
                  str(p.disk_image)])
        _run(["mount", "-o", "loop,nosuid,nodev", str(p.disk_image), str(p.fs)])
        lost = p.fs / "lost+found"
        if lost.exists():
            shutil.rmtree(lost, ignore_errors=True)

    def _give(self, path: Path) -> None:
        if self._can_chown:
            os.chown(path, self.uid, self.gid)
        else:  # unprivileged runnerd (development only): let the job uid write anyway
            os.chmod(path, 0o777)

    # -- queries ------------------------------------------------------------------------------

    def disk_full(self, job_id: str, slack: int = 1024 * 1024) -> bool:
        """Whether the job's quota filesystem is (nearly) full: how a write past diskGB shows."""
        p = self.paths(job_id)
        if not os.path.ismount(p.fs):
            return False
        st = os.statvfs(p.fs)
        return st.f_bavail * st.f_frsize < slack

    # -- teardown -----------------------------------------------------------------------------

    async def release_fs(self, job_id: str) -> None:
        """Unmount and delete the quota filesystem once results are out of it."""
        await asyncio.to_thread(self._release_fs, self.paths(job_id))

    def _release_fs(self, p: JobPaths) -> None:
        if os.path.ismount(p.fs):
            try:
                _run(["umount", str(p.fs)])
            except WorkspaceError:
                _run(["umount", "-l", str(p.fs)])  # a lingering reader: detach now, free when it lets go
        if p.fs.exists():
            shutil.rmtree(p.fs, ignore_errors=True)
        p.disk_image.unlink(missing_ok=True)
        shutil.rmtree(p.provision_out, ignore_errors=True)
        pins.unpin(p)

    async def remove(self, job_id: str) -> None:
        """Delete everything the job has on disk (DELETE, expiry)."""
        p = self.paths(job_id)
        await asyncio.to_thread(self._release_fs, p)
        await asyncio.to_thread(shutil.rmtree, p.root, True)

    def job_dirs(self) -> list[str]:
        root = self.data_dir / "jobs"
        return [d.name for d in root.iterdir()] if root.exists() else []


def _write_json(path: Path, value: object) -> None:
    path.write_text(json.dumps(value), encoding="utf-8")
    os.chmod(path, 0o644)
