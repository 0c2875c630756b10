"""Pinned asset files: the algorithm's container mounts the very file runnerd opened and checked,
never whatever a path happens to name when dockerd gets to it.

Intake checks a local file when the job is submitted, but dockerd bind-mounts (as root, following
symbolic links) only when the container starts, possibly hours later: a file swapped for a
symlink in between would hand the algorithm any host file. So when the workspace is prepared,
each local file of the job is opened again with no symlink followed on the way
(`catalog.open_no_follow`), checked (a regular file, readable by jobUser, the trusted checksum if
one was verified at submit), and that open inode is put under the job's root-only folder
(`<job>/pinned/<input#>-<file#>`, `<job>/pinned/algorithm`), which is what the container mounts:

  same filesystem as the data dir  a hard link to the open file (linkat through /proc/self/fd);
                                   a mount source then names only the job's folder
  another filesystem (EXDEV)       runnerd bind-mounts the open file onto a placeholder there
                                   (`mount --bind /proc/self/fd/N`): pinned just as exactly, but
                                   mountinfo in the container shows the file's path *within its
                                   own filesystem* (docs/operator-guide.md, "Local asset files")

A placeholder is an empty file of mode 000 (never a valid pin: intake refuses files the job user
cannot read), so an algorithm given an unmounted one cannot read it, rather than read nothing.
A host reboot drops runnerd's bind mounts: `repin` makes them again, with the same checks, before
a recovered job's algorithm starts.
"""

from __future__ import annotations

import errno
import logging
import os
import subprocess
from pathlib import Path
from typing import Iterator

from runnerd.catalog import mode_readable_by, open_no_follow, sha256_fd
from runnerd.domain import LocalFile, PlannedJob
from runnerd.errors import AssetUnavailable
from runnerd.layout import JobPaths

log = logging.getLogger("runnerd.pins")


def _wanted(job: PlannedJob, paths: JobPaths) -> Iterator[tuple[Path, str, str, str | None]]:
    """(pin, source path, what to call it in errors, expected sha256) for each local file."""
    for i, item in enumerate(job.plan.inputs):
        for j, f in enumerate(item.files):
            if isinstance(f, LocalFile):
                yield paths.pinned_input(i, j), f.path, f"dataset {item.did} file {j}", None
    algo = job.plan.algorithm
    if isinstance(algo.code, LocalFile):
        yield paths.pinned_algorithm, algo.code.path, f"algorithm {algo.did}", algo.code.sha256


def pin_all(job: PlannedJob, paths: JobPaths, uid: int, gid: int) -> None:
    """Pin every local file of the job afresh (prepare runs again after a crash before anything
    ran, so a new pin is as good as an old one)."""
    unpin(paths)
    if not any(True for _ in _wanted(job, paths)):
        return
    paths.pinned.mkdir(mode=0o700, exist_ok=True)
    os.chmod(paths.pinned, 0o700)
    for pin, source, what, sha in _wanted(job, paths):
        _pin(job.job_id, pin, source, what, sha, uid, gid)


def _pin(job_id: str, pin: Path, source: str, what: str, sha: str | None, uid: int, gid: int) -> None:
    # The job's error (what the consumer reads) names the asset, never a path; the log has both.
    try:
        _pin_checked(job_id, pin, source, what, sha, uid, gid)
    except OSError as exc:
        log.warning("job %s: cannot pin %s (%s) at %s: %s", job_id, what, source, pin, exc)
        raise AssetUnavailable(f"{what} cannot be pinned (see the node's log)") from None


def repin(job: PlannedJob, paths: JobPaths, uid: int, gid: int) -> None:
    """Make again the pins a host reboot took away (bind mounts) or that are missing."""
    for pin, source, what, sha in _wanted(job, paths):
        try:
            st = os.lstat(pin)
        except FileNotFoundError:
            paths.pinned.mkdir(mode=0o700, exist_ok=True)
            _pin(job.job_id, pin, source, what, sha, uid, gid)
            continue
        if _is_placeholder(pin, st):
            _pin(job.job_id, pin, source, what, sha, uid, gid)


def unpin(paths: JobPaths) -> None:
    """Remove the job's pins (the assets themselves are untouched: only links and binds go)."""
    try:
        entries = list(os.scandir(paths.pinned))
    except (FileNotFoundError, NotADirectoryError):
        return
    for entry in entries:
        path = Path(entry.path)
        if _mounted(path):
            _unmount(path)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            # A bind from another mount of the same filesystem (linkat says EXDEV across mounts
            # too) has its folder's st_dev, so _mounted cannot tell; removing it says EBUSY.
            if exc.errno == errno.EBUSY:
                _unmount(path)
                try:
                    os.unlink(path)
                    continue
                except OSError as again:
                    exc = again
            log.warning("cannot remove pin %s: %s", path, exc)  # the sweeper's next pass tries again
    try:
        os.rmdir(paths.pinned)
    except OSError:
        pass


def _pin_checked(job_id: str, pin: Path, source: str, what: str, sha: str | None, uid: int, gid: int) -> None:
    try:
        fd = open_no_follow(source)
    except OSError as exc:
        log.warning("job %s: %s cannot be pinned from %s: %s", job_id, what, source, exc)
        raise AssetUnavailable(f"{what} is no longer available as registered (moved, not a regular file, "
                             f"or replaced by a symbolic link)") from None
    try:
        if not mode_readable_by(os.fstat(fd), uid, gid):
            raise AssetUnavailable(f"{what} is no longer readable by the job's user")
        if sha is not None:
            with open(os.dup(fd), "rb") as f:
                if sha256_fd(f) != sha:
                    raise AssetUnavailable(f"{what} has changed since its checksum was checked")
        try:
            if _is_placeholder(pin, os.lstat(pin)):
                os.unlink(pin)  # a bind mount a reboot took away: pin afresh
        except FileNotFoundError:
            pass
        try:
            _link_open_file(fd, pin)
            return
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                log.warning("job %s: cannot link %s (%s) to %s: %s", job_id, what, source, pin, exc)
                raise AssetUnavailable(f"{what} cannot be pinned (see the node's log)") from None
            _placeholder(pin)
        if _mount_cmd(["mount", "--bind", "--no-canonicalize", f"/proc/self/fd/{fd}", str(pin)], fd) != 0:
            log.warning("job %s: cannot bind-mount %s (%s) onto %s", job_id, what, source, pin)
            raise AssetUnavailable(f"{what} cannot be pinned (see the node's log)")
    finally:
        os.close(fd)


def _link_open_file(fd: int, pin: Path) -> None:
    """linkat(/proc/self/fd/N, AT_SYMLINK_FOLLOW): a new name for the very inode that is open.
    (os.link calls plain link(2), which would link the /proc magic link itself, unless a dir fd
    is given; an absolute path ignores it.)"""
    root = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.link(f"/proc/self/fd/{fd}", pin, src_dir_fd=root, follow_symlinks=True)
    finally:
        os.close(root)


def _unmount(path: Path) -> None:
    if _mount_cmd(["umount", str(path)]) != 0:
        _mount_cmd(["umount", "-l", str(path)])


def _placeholder(pin: Path) -> None:
    fd = os.open(pin, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o000)
    os.close(fd)
    os.chmod(pin, 0o000)


def _mounted(path: Path) -> bool:
    """A bind-mounted pin comes from another filesystem (that is why it is not a hard link)."""
    try:
        return os.lstat(path).st_dev != os.lstat(path.parent).st_dev
    except OSError:
        return False


def _is_placeholder(pin: Path, st: os.stat_result) -> bool:
    return not _mounted(pin) and st.st_size == 0 and st.st_mode & 0o7777 == 0


def _mount_cmd(argv: list[str], fd: int | None = None) -> int:
    # pass_fds keeps the fd's number, so /proc/self/fd/N in mount(8) is runnerd's open file.
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, pass_fds=(fd,) if fd is not None else ())
    if proc.returncode != 0:
        log.warning("%s failed: %s", " ".join(argv[:2]), (proc.stderr or proc.stdout).strip())
    return proc.returncode
