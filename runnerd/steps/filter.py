"""runnerd results filter: copy what an algorithm wrote to /data/outputs into the publishable results.

Runs as `python3 /runnerd/filter.py` in a throwaway helper container (stdlib only, Python 3.9+),
reading its plan from $RUNNERD_PLAN (or the JSON file named by argv[1], for tests):

    {"src": "/data/outputs", "dest": "/runnerd/out/outputs", "maxFiles": n, "maxBytes": n,
     "report": "/runnerd/out/report.json", "hash": bool, "guardFile": "/runnerd/out/guard.json"}
with the guard file (or a `guard` object in the plan, for tests) holding
    {"inputs": {"<sha256 hex>": "<label>", ...}, "budgets": [{"label": str, "maxBytes": n}, ...]}

Everything under src was written by untrusted code, and dest is served to the job owner from the
host. So only regular files are copied: symlinks (which could point at host files once dest is read
on the host), fifos, sockets and devices are skipped. The walk goes through directory file
descriptors with O_NOFOLLOW at every level, so no path component is ever resolved through a symlink,
even one swapped in mid-walk. Counts and sizes are capped so outputs cannot fill the host's disk:
sizes count as apparent sizes (holes included), and holes are copied as holes, so a sparse file
costs the host only the blocks the algorithm really wrote (in its quota).

With `hash`, each copied file's sha256 is computed from the bytes as they are copied (holes hashed
as the zeros they read as) and reported, for the job's signed provenance. A `guard` (the egress
guards of the job's datasets, #15) makes the copy fail as a limit when an output file is a verbatim
copy of an input (its whole-file sha256 is one of `inputs`; empty files excepted) or when the
outputs together exceed a dataset's budget; nothing is published then.

Report JSON at plan.report. Exit 0 (ok), 3 (limits exceeded or the guard breached; dest emptied),
1 (any other error).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import stat
import sys
import traceback
from typing import Any

CHUNK = 1024 * 1024
MAX_DEPTH = 64  # deeper trees are skipped: they would exhaust fds and path lengths
MAX_SKIPPED = 1000  # the skipped list is capped too: the algorithm decides how long it is
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
# O_NONBLOCK: should a fifo appear where a regular file was listed, open() must not block on it.
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
SEEK_DATA, SEEK_HOLE = getattr(os, "SEEK_DATA", 3), getattr(os, "SEEK_HOLE", 4)  # Linux values
OUT_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


class LimitExceeded(Exception):
    pass


class GuardBreach(LimitExceeded):
    """A dataset's egress guard refused the outputs: ends the job like any other limit."""


ZEROS = bytes(CHUNK)


def human(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return ("%d %s" % (n, unit)) if unit == "bytes" else ("%.1f %s" % (n, unit))
        n /= 1024.0
    return ""  # unreachable


def show(text: str) -> str:
    """A name safe to log on one line: the algorithm chose it and could forge log lines with \\n."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class DestDir:
    """A dest directory created only when a file lands in it (empty source trees cost nothing)."""

    def __init__(self, parent: DestDir | None, name: str, root_fd: int = -1):
        self.parent, self.name, self._fd = parent, name, root_fd

    def fd(self) -> int:
        if self._fd < 0:
            assert self.parent is not None  # only the root has no parent, and it is made open
            pfd = self.parent.fd()
            os.mkdir(self.name, 0o755, dir_fd=pfd)
            self._fd = os.open(self.name, DIR_FLAGS, dir_fd=pfd)
        return self._fd

    def close(self) -> None:
        if self._fd >= 0 and self.parent is not None:
            os.close(self._fd)
            self._fd = -1


class Filter:
    """One walk of src into dest, with the counts the limits and the report need."""

    def __init__(self, max_files: int, max_bytes: int, hashing: bool = False, guard: dict | None = None):
        self.max_files, self.max_bytes = max_files, max_bytes
        self.files: list[dict[str, Any]] = []
        self.skipped: list[str] = []
        self.total, self.n_skipped = 0, 0
        guard = guard or {}
        self.unavailable = guard.get("unavailable")
        self.copies_of = {str(k).lower(): str(v) for k, v in (guard.get("inputs") or {}).items()}
        self.budgets = sorted(((int(b["maxBytes"]), str(b.get("label", "a dataset"))) for b in guard.get("budgets")
                               or ()), key=lambda b: b[0])
        self.hashing = hashing or bool(self.copies_of)  # the guard's verbatim check needs the digests

    def check_budget(self, total: int) -> None:
        """The strictest dataset budget, checked as the copy goes (no need to copy a big file first)."""
        if self.budgets and total > self.budgets[0][0]:
            limit, label = self.budgets[0]
            raise GuardBreach("outputs exceed the egress guard of %s (at most %s of outputs)" % (label, human(limit)))

    def skip(self, rel: str, why: str) -> None:
        self.n_skipped += 1
        if self.n_skipped <= MAX_SKIPPED:
            self.skipped.append("%s: %s" % (rel, why))
            print("skipped %s (%s)" % (show(rel), why), flush=True)

    def walk(self, src_fd: int, dest: DestDir, prefix: str, depth: int) -> None:
        # scandir(fd) lists without following anything; entries are then opened relative to src_fd.
        with os.scandir(src_fd) as it:
            for entry in it:
                rel = prefix + entry.name
                st = entry.stat(follow_symlinks=False)
                mode = st.st_mode
                if stat.S_ISLNK(mode):
                    self.skip(rel, "symlink")
                elif stat.S_ISDIR(mode):
                    if depth >= MAX_DEPTH:
                        self.skip(rel, "nested deeper than %d levels" % MAX_DEPTH)
                        continue
                    try:
                        sub_fd = os.open(entry.name, DIR_FLAGS, dir_fd=src_fd)
                    except OSError as e:
                        if e.errno in (errno.ELOOP, errno.ENOTDIR):  # swapped since it was listed
                            self.skip(rel, "symlink" if e.errno == errno.ELOOP else "changed while filtering")
                            continue
                        raise
                    sub = DestDir(dest, entry.name)
                    try:
                        self.walk(sub_fd, sub, rel + "/", depth + 1)
                    finally:
                        os.close(sub_fd)
                        sub.close()
                elif stat.S_ISREG(mode):
                    self.copy(src_fd, entry.name, dest, rel)
                else:
                    self.skip(rel, kind_of(mode))

    def copy(self, src_fd: int, name: str, dest: DestDir, rel: str) -> None:
        if len(self.files) >= self.max_files:
            raise LimitExceeded("outputs hold more than %d files" % self.max_files)
        try:
            in_fd = os.open(name, FILE_FLAGS, dir_fd=src_fd)
        except OSError as e:
            if e.errno == errno.ELOOP:  # swapped for a symlink after listing
                return self.skip(rel, "symlink")
            raise
        try:
            st = os.fstat(in_fd)
            if not stat.S_ISREG(st.st_mode):  # swapped for something else after listing
                return self.skip(rel, kind_of(st.st_mode))
            if self.total + st.st_size > self.max_bytes:
                raise LimitExceeded("outputs exceed %s" % human(self.max_bytes))
            self.check_budget(self.total + st.st_size)
            out_fd = os.open(name, OUT_FLAGS, 0o644, dir_fd=dest.fd())
            digest = hashlib.sha256() if self.hashing else None
            try:
                os.fchmod(out_fd, 0o644)  # not whatever mode (or umask) the algorithm chose
                size = self._stream(in_fd, out_fd, digest)
            finally:
                os.close(out_fd)
        finally:
            os.close(in_fd)
        self.total += size
        entry: dict[str, Any] = {"path": rel, "size": size}
        if digest is not None:
            entry["sha256"] = sha = digest.hexdigest()
            copied = self.copies_of.get(sha) if size else None
            if copied:
                raise GuardBreach("output %s is a verbatim copy of %s, which its egress guard forbids to publish"
                                  % (show(rel), copied))
        self.files.append(entry)
        print("copied %s (%d bytes)" % (show(rel), size), flush=True)

    def _stream(self, in_fd: int, out_fd: int, digest=None) -> int:
        """Copy the file's data extents only (SEEK_DATA/SEEK_HOLE), in 1 MiB chunks, and leave its
        holes as holes: a sparse file cost the algorithm no quota, so it must not cost the host
        more than the blocks really written either. The byte cap counts the apparent size (what
        the owner downloads) and is enforced as the copy goes, even if the file grows."""
        pos = hashed = 0  # hashed: the offset the digest has seen up to
        while True:
            start, end = _extent(in_fd, pos)
            if start is None:
                break
            while start < end:
                data = os.pread(in_fd, min(CHUNK, end - start), start)
                if not data:
                    break
                if self.total + start + len(data) > self.max_bytes:
                    raise LimitExceeded("outputs exceed %s" % human(self.max_bytes))
                self.check_budget(self.total + start + len(data))
                if digest is not None:
                    hashed = _hash_zeros(digest, hashed, start)  # a hole reads as zeros
                    digest.update(data)
                    hashed += len(data)
                written = 0
                while written < len(data):
                    written += os.pwrite(out_fd, data[written:], start + written)
                start += len(data)
            if start <= pos:  # nothing read at this offset: the file ends here
                break
            pos = start
        size = max(pos, os.fstat(in_fd).st_size)  # a trailing hole is still part of the file
        if self.total + size > self.max_bytes:
            raise LimitExceeded("outputs exceed %s" % human(self.max_bytes))
        self.check_budget(self.total + size)
        if digest is not None:
            _hash_zeros(digest, hashed, size)
        os.ftruncate(out_fd, size)  # recreates the trailing hole without writing it
        return size

    def run(self, src: str, dest: str) -> None:
        os.makedirs(dest, exist_ok=True)
        clear(dest)  # a previous, interrupted run must not leave unchecked files behind
        if self.unavailable:
            raise GuardBreach("the egress guard of this job's datasets cannot be applied: %s" % self.unavailable)
        try:
            src_fd = os.open(src, DIR_FLAGS)
        except FileNotFoundError:
            print("no outputs directory", flush=True)
            return
        dest_fd = os.open(dest, DIR_FLAGS)
        try:
            self.walk(src_fd, DestDir(None, "", dest_fd), "", 0)
        finally:
            os.close(src_fd)
            os.close(dest_fd)


def _hash_zeros(digest, start: int, end: int) -> int:
    """Feed the digest the zeros of a hole from `start` to `end`; returns the new hashed offset."""
    while start < end:
        n = min(CHUNK, end - start)
        digest.update(ZEROS[:n] if n < CHUNK else ZEROS)
        start += n
    return max(start, end)


def _extent(fd: int, pos: int):
    """(start, end) of the first data extent at or after pos, or (None, None) if only a hole (or
    the end of the file) follows. Where the file system cannot tell, the rest is one extent."""
    try:
        start = os.lseek(fd, pos, SEEK_DATA)
        return start, os.lseek(fd, start, SEEK_HOLE)
    except OSError as e:
        if e.errno == errno.ENXIO:  # no data after pos
            return None, None
        if e.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
            raise
    return pos, max(pos, os.fstat(fd).st_size)


def kind_of(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "not a regular file"


def clear(path: str) -> None:
    """Remove everything inside `path` (our own dest directory, so plain paths are fine)."""
    if not os.path.isdir(path):
        return
    for entry in os.scandir(path):
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)


def read_guard(path: str) -> dict:
    """The guard runnerd wrote for this run: {"inputs", "budgets"}, or {"unavailable": why} when a
    guarded input could not be hashed. Missing or unreadable, the guard cannot be applied: the
    outputs are withheld (a guard must fail closed)."""
    try:
        with open(path) as f:
            guard = json.load(f)
    except (OSError, ValueError) as e:
        guard = {"unavailable": "its digests are missing (%s)" % type(e).__name__}
    if not isinstance(guard, dict):
        guard = {"unavailable": "its digests are malformed"}
    return guard


def write_report(path: str, report: dict) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(report, f)
    os.replace(path + ".tmp", path)  # runnerd never reads a half-written report


def main(argv: list) -> int:
    report_path = "/runnerd/out/report.json"
    try:
        raw = open(argv[1]).read() if len(argv) > 1 else os.environ.get("RUNNERD_PLAN", "")
        plan = json.loads(raw)
        if isinstance(plan, dict) and isinstance(plan.get("report"), str):
            report_path = plan["report"]
        src, dest = plan["src"], plan["dest"]
        max_files, max_bytes = int(plan.get("maxFiles", 1000)), int(plan.get("maxBytes", 5 * 1024 ** 3))
        guard = plan.get("guard")
        if plan.get("guardFile"):
            guard = read_guard(plan["guardFile"])
        f = Filter(max_files, max_bytes, bool(plan.get("hash")), guard)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        msg = "malformed plan: %s" % e
        print(msg, flush=True)
        write_report(report_path, {"ok": False, "reason": "error", "error": msg})
        return 1
    try:
        f.run(src, dest)
    except Exception as e:
        limits = isinstance(e, LimitExceeded)
        if not isinstance(e, (LimitExceeded, OSError)):
            traceback.print_exc()  # a bug rather than something about the outputs
        msg = str(e) if limits else "%s: %s" % (type(e).__name__, e)
        print("%s; nothing is published" % msg, flush=True)
        try:
            clear(dest)  # all or nothing: a partial copy must not look like the job's results
        except OSError:
            pass
        report = {"ok": False, "reason": "limits" if limits else "error", "error": msg}
        if isinstance(e, GuardBreach):
            report["guard"] = True  # the attestation says which rule withheld the outputs
        write_report(report_path, report)
        return 3 if limits else 1
    if f.n_skipped > MAX_SKIPPED:
        f.skipped.append("…: %d more skipped" % (f.n_skipped - MAX_SKIPPED))
    f.files.sort(key=lambda x: x["path"])
    print("published %d file(s), %s; skipped %d" % (len(f.files), human(f.total), f.n_skipped), flush=True)
    write_report(report_path, {"ok": True, "files": f.files, "skipped": sorted(f.skipped)})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
