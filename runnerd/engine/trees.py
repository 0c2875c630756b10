"""Removing a directory tree that untrusted code wrote (a job's folder, its /data).

The algorithm chooses the tree's shape, so the removal
  - never recurses: a tree can be deeper than Python's recursion limit (shutil.rmtree raised
    RecursionError at ~1,000 levels) and than PATH_MAX, so it walks with an explicit stack of
    directory file descriptors and names relative to them, never a full path;
  - never follows a symlink: every directory is opened with O_NOFOLLOW relative to its parent's
    descriptor and checked to be the one listed, so a link swapped in mid-walk is not followed;
  - never enters another filesystem or a mount point (a bind mount of the same filesystem
    included): deleting there would delete files that are not the job's. Those are left in
    place and reported, and the caller records the cleanup as pending.
Only the top `_KEEP_OPEN` levels keep their descriptor (and listing) open; deeper ones are
re-opened through `..` (checked by device and inode) when the walk comes back up.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from typing import Callable, Iterator, Protocol

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_KEEP_OPEN = 32  # levels whose descriptor stays open (two each: scandir holds a duplicate)


class TreeChanged(Exception):
    """A directory was not where the walk left it (the tree changed under it): stop."""


class _Listing(Protocol):
    """What os.scandir(fd) returns: its entries, once, and close()."""

    def __iter__(self) -> Iterator[os.DirEntry[str]]: ...

    def close(self) -> None: ...


@dataclass
class _Level:
    name: str  # its name in the parent directory ("" for the top)
    ident: tuple[int, int]  # (st_dev, st_ino)
    fd: int | None
    listing: _Listing | None = None  # an os.scandir iterator over fd, while open
    skip: set[str] = field(default_factory=set)  # entries that could not be removed

    def close(self) -> None:
        if self.listing is not None:
            self.listing.close()
            self.listing = None
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _ident(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _unescape(field_: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    out, i = [], 0
    while i < len(field_):
        if field_[i] == "\\" and i + 3 < len(field_) and field_[i + 1:i + 4].isdigit():
            out.append(chr(int(field_[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field_[i])
            i += 1
    return "".join(out)


def _mounts_under(top: str) -> set[tuple[int, int]]:
    """The (device, inode) of every mount point strictly under `top` (any filesystem)."""
    prefix = os.path.realpath(top).rstrip("/") + "/"
    found: set[tuple[int, int]] = set()
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().splitlines()
    except OSError:
        return found
    for line in lines:
        parts = line.split(" ")
        if len(parts) < 5:
            continue
        point = _unescape(parts[4])
        if point.startswith(prefix):
            try:
                found.add(_ident(os.stat(point, follow_symlinks=False)))
            except OSError:
                continue
    return found


def remove_tree(path: str | os.PathLike[str]) -> list[str]:
    """Delete `path` and everything under it; return what could not be removed (empty: all gone,
    `path` included). A missing path is already removed. Raises only TreeChanged."""
    path = os.fspath(path)
    problems: list[str] = []
    try:
        top_fd = os.open(path, _DIR)
    except FileNotFoundError:
        return problems
    except OSError as exc:
        if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
            return [f"cannot open the top directory: {exc.strerror}"]
        # a file or a symlink: remove just that (a link's target is never touched)
        _remove(os.unlink, path, what="the top entry", problems=problems)
        return problems
    top_st = os.fstat(top_fd)
    mounts = _mounts_under(path)
    stack = [_Level("", _ident(top_st), top_fd)]
    try:
        while stack:
            level = stack[-1]
            child = _next_subdir(level, top_st.st_dev, mounts, problems)
            if child is not None:
                stack.append(child)
                if len(stack) - 2 >= _KEEP_OPEN:
                    stack[-2].close()  # re-opened through `..` when the walk comes back
                continue
            stack.pop()
            if not stack:
                level.close()
                break
            parent = stack[-1]
            if parent.fd is None:
                assert level.fd is not None
                fd = os.open("..", _DIR, dir_fd=level.fd)
                if _ident(os.fstat(fd)) != parent.ident:
                    os.close(fd)
                    raise TreeChanged("a directory moved while its tree was removed")
                parent.fd = fd
            level.close()
            if not _remove(os.rmdir, level.name, dir_fd=parent.fd, what="a directory", problems=problems):
                parent.skip.add(level.name)
    finally:
        for level in stack:
            level.close()
    if not problems:
        _remove(os.rmdir, path, what="the top directory", problems=problems)
    return problems


def _remove(remove: Callable[..., None], name: str, *, what: str, problems: list[str],
            dir_fd: int | None = None) -> bool:
    """unlink/rmdir one name; already gone counts as removed. False (and the reason noted) if not."""
    try:
        remove(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    except OSError as exc:
        problems.append(f"cannot remove {what}: {exc.strerror}")
        return False
    return True


def _next_subdir(level: _Level, device: int, mounts: set[tuple[int, int]],
                 problems: list[str]) -> _Level | None:
    """Unlink the level's non-directories as they are listed; return the next subdirectory to
    enter (opened, checked), or None once the level holds nothing more that can be removed."""
    assert level.fd is not None
    listing = level.listing
    if listing is None:
        listing = level.listing = os.scandir(level.fd)
    for entry in listing:
        name = entry.name
        if name in level.skip:
            continue
        try:
            is_dir = entry.is_dir(follow_symlinks=False)
            if is_dir:
                st = entry.stat(follow_symlinks=False)
                if st.st_dev != device or _ident(st) in mounts:
                    level.skip.add(name)
                    problems.append("a mount point or another filesystem inside the tree was left alone")
                    continue
                try:
                    fd = os.open(name, _DIR, dir_fd=level.fd)
                except OSError as exc:
                    if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise
                    os.unlink(name, dir_fd=level.fd)  # swapped for a link or file since listed
                    continue
                opened = os.fstat(fd)
                if _ident(opened) != _ident(st):
                    os.close(fd)
                    level.skip.add(name)
                    problems.append("a directory changed while its tree was removed")
                    continue
                return _Level(name, _ident(opened), fd)
            os.unlink(name, dir_fd=level.fd)
        except FileNotFoundError:
            continue
        except OSError as exc:
            level.skip.add(name)
            problems.append(f"cannot remove an entry: {exc.strerror}")
    listing.close()
    level.listing = None
    return None
