"""The tar dialect of the job-site transfer (#17), shared by runnerd and the site agent (stdlib only).

On a cluster no step shares a disk with runnerd, so a job's files travel as tar streams over HTTP:
runnerd sends a step its seed (`data/<path under /data>`, `out/<path under /runnerd/out>`) and the
step sends back its /runnerd/out (`out/...`). Whoever reads a stream treats it as hostile, even
runnerd's own (one set of rules, in one place), and reads it with this module's own parser rather
than `tarfile`'s: tarfile reads an extended header of any declared size into memory and knows links,
devices and sparse files, none of which belong here. Accepted:

- ustar headers (checksum checked), PAX extended headers (`x`, at most 64 KiB; `path` and `size`
  honoured, other keys ignored); regular files and directories only. Links, devices, fifos, GNU
  long names, sparse files and global headers are refused;
- relative names under one of the reader's roots (`data`, `out`), no `..`, no absolute name, no
  name twice, nothing inside a file, at most MAX_DEPTH levels and MAX_NAME bytes;
- caps on the entries and on the bytes actually read (a header's size is never believed);
- the end-of-archive block: a stream that stops before it is truncated (`TarTruncated`).

Written files get mode 0644 (0755 where the writer marked them executable and the reader keeps
that), directories 0755, never setuid; the owner is whoever extracts. Every path is resolved
through directory descriptors opened with O_NOFOLLOW, so nothing already in a root can redirect a
write through a symbolic link.
"""

from __future__ import annotations

import errno
import os
import stat
import tarfile
from typing import BinaryIO, Dict, Iterator, Optional, Set, Tuple

BLOCK = 512
CHUNK = 256 * 1024
MAX_DEPTH = 80  # the filter publishes at most 64 levels below outputs/
MAX_NAME = 4096
MAX_PAX = 64 * 1024
END = bytes(2 * BLOCK)  # the end-of-archive marker
ROOTS = ("data", "out")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_OUT_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_IN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
_KINDS = {tarfile.SYMTYPE: "a symbolic link", tarfile.LNKTYPE: "a hard link", tarfile.CHRTYPE: "a character device",
          tarfile.BLKTYPE: "a block device", tarfile.FIFOTYPE: "a fifo", tarfile.GNUTYPE_SPARSE: "a sparse file",
          tarfile.GNUTYPE_LONGNAME: "a GNU long name", tarfile.GNUTYPE_LONGLINK: "a GNU long link",
          tarfile.XGLTYPE: "a global header", tarfile.CONTTYPE: "a contiguous file"}


class TarRefused(Exception):
    """The stream breaks a rule; the message says which (it quotes entry names, never a root)."""


class TarTruncated(TarRefused):
    """The stream ended before its end-of-archive block (the sender went away: worth retrying)."""


# -- writing ------------------------------------------------------------------------------------

def header(name: str, is_dir: bool = False, size: int = 0, executable: bool = False) -> bytes:
    """One entry's header (a PAX header before it when the name or size needs one)."""
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if is_dir else tarfile.REGTYPE
    info.size = 0 if is_dir else size
    info.mode = 0o755 if is_dir or executable else 0o644
    info.mtime = 0
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def padding(size: int) -> bytes:
    return bytes(-size % BLOCK)


def open_regular(path: str) -> Tuple[int, os.stat_result]:
    """(fd, stat) of a regular file, opened without following a symbolic link."""
    fd = os.open(path, _IN_FLAGS)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file")
    return fd, st


def file_chunks(fd: int, size: int) -> Iterator[bytes]:
    """Exactly `size` bytes of the open file, then the padding; closes the fd. A file that shrank
    meanwhile raises (the header already promised its size)."""
    try:
        left = size
        while left:
            data = os.read(fd, min(CHUNK, left))
            if not data:
                raise OSError(errno.EIO, "the file shrank while it was being sent")
            left -= len(data)
            yield data
        yield padding(size)
    finally:
        os.close(fd)


# -- reading ------------------------------------------------------------------------------------

def _read(stream: BinaryIO, n: int) -> bytes:
    parts, got = [], 0
    while got < n:
        data = stream.read(min(n - got, CHUNK))
        if not data:
            raise TarTruncated("the archive ends before its end-of-archive block")
        parts.append(data)
        got += len(data)
    return b"".join(parts)


def _pax(raw: bytes) -> Dict[str, str]:
    out, pos = {}, 0
    while pos < len(raw):
        space = raw.find(b" ", pos)
        try:
            length = int(raw[pos:space]) if space > pos else 0
        except ValueError:
            length = 0
        record = raw[space + 1:pos + length]
        if length <= 0 or not record.endswith(b"\n") or b"=" not in record:
            raise TarRefused("a malformed PAX header")
        key, _, value = record[:-1].partition(b"=")
        out[key.decode("utf-8", "replace")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return out


def show(name: str) -> str:
    """An entry name as a message may quote it: printable, at most 120 characters."""
    text = "".join(c if c.isprintable() else "?" for c in name)
    return text if len(text) <= 120 else text[:117] + "..."


def _parts(name: str) -> Tuple[str, ...]:
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME:
        raise TarRefused("an entry name is longer than %d bytes" % MAX_NAME)
    if name.startswith("/"):
        raise TarRefused("%s is an absolute name" % show(name))
    if "\x00" in name:
        raise TarRefused("an entry name holds a NUL byte")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise TarRefused("%s leaves its folder (..)" % show(name))
    if len(parts) > MAX_DEPTH + 1:
        raise TarRefused("%s is nested deeper than %d levels" % (show(name), MAX_DEPTH))
    return parts


def extract(stream: BinaryIO, roots: Dict[str, str], max_bytes: Optional[int] = None,
            max_entries: Optional[int] = None, keep_exec: bool = False) -> Tuple[int, int]:
    """Extract a stream into `roots` (top-level name -> an existing folder); returns (entries,
    bytes). Raises TarRefused (TarTruncated) on a broken rule, OSError on a local failure; what was
    written before either stays (the caller extracts into a fresh folder when that matters)."""
    root_fds: Dict[str, int] = {}
    try:
        for top, folder in roots.items():
            root_fds[top] = os.open(folder, _DIR_FLAGS)
        return _extract(stream, root_fds, max_bytes, max_entries, keep_exec)
    finally:
        for fd in root_fds.values():
            os.close(fd)


def _extract(stream: BinaryIO, roots: Dict[str, int], max_bytes: Optional[int], max_entries: Optional[int],
             keep_exec: bool) -> Tuple[int, int]:
    seen: Set[Tuple[str, ...]] = set()
    files: Set[Tuple[str, ...]] = set()
    entries = total = 0
    pax: Dict[str, str] = {}
    while True:
        block = _read(stream, BLOCK)
        if block == bytes(BLOCK):
            return entries, total  # the end-of-archive block (a second one need not be read)
        try:
            info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
        except tarfile.HeaderError:
            raise TarRefused("a malformed tar header") from None
        if info.type == tarfile.XHDTYPE:
            if info.size > MAX_PAX or pax:
                raise TarRefused("a PAX header larger than %d bytes, or two in a row" % MAX_PAX)
            pax = _pax(_read(stream, info.size + len(padding(info.size)))[:info.size])
            continue
        name, size = pax.get("path", info.name), info.size
        if "size" in pax:
            try:
                size = int(pax["size"])
            except ValueError:
                raise TarRefused("a malformed PAX size") from None
        pax = {}
        if info.type in _KINDS or info.type not in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE):
            raise TarRefused("%s is %s: only regular files and folders are taken" %
                             (show(name), _KINDS.get(info.type, "of an unknown type")))
        is_dir = info.type == tarfile.DIRTYPE
        if size < 0 or (is_dir and size):
            raise TarRefused("%s has an impossible size" % show(name))
        parts = _parts(name)
        if not parts or parts[0] not in roots:
            raise TarRefused("%s is not under %s" % (show(name), " or ".join(r + "/" for r in sorted(roots))))
        if parts in seen:
            raise TarRefused("%s appears twice" % show(name))
        if any(parts[:i] in files for i in range(2, len(parts))):
            raise TarRefused("%s is inside a file" % show(name))
        entries += 1
        if max_entries is not None and entries > max_entries:
            raise TarRefused("the archive has more than %d entries" % max_entries)
        seen.add(parts)
        if len(parts) == 1:
            if not is_dir:
                raise TarRefused("%s is a file in place of a folder" % show(name))
            continue
        parent = _folder(roots[parts[0]], parts[1:-1])
        try:
            if is_dir:
                os.close(_folder(parent, parts[-1:]))
                continue
            files.add(parts)
            total = _write(stream, parent, parts, size, total, max_bytes, keep_exec and bool(info.mode & 0o100))
        finally:
            os.close(parent)


def _folder(fd: int, names: Tuple[str, ...]) -> int:
    """A new descriptor of the folder `names` below fd, making what is missing (mode 0755)."""
    current = os.dup(fd)
    for name in names:
        try:
            os.mkdir(name, 0o755, dir_fd=current)
            made = True
        except FileExistsError:
            made = False
        try:
            child = os.open(name, _DIR_FLAGS, dir_fd=current)
        except OSError as exc:
            os.close(current)
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise TarRefused("%s is not a folder where the archive puts one" % show(name)) from None
            raise
        os.close(current)
        current = child
        if made:
            os.fchmod(current, 0o755)  # not whatever the umask left
    return current


def _write(stream: BinaryIO, parent: int, parts: Tuple[str, ...], size: int, total: int,
           max_bytes: Optional[int], executable: bool) -> int:
    try:
        fd = os.open(parts[-1], _OUT_FLAGS, 0o644, dir_fd=parent)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EISDIR):
            raise TarRefused("%s would replace a folder or a link" % show("/".join(parts))) from None
        raise
    try:
        os.fchmod(fd, 0o755 if executable else 0o644)
        left = size
        while left:
            data = stream.read(min(CHUNK, left))
            if not data:
                raise TarTruncated("the archive ends inside %s" % show("/".join(parts)))
            total += len(data)
            if max_bytes is not None and total > max_bytes:
                raise TarRefused("the archive holds more than %d bytes" % max_bytes)
            left -= len(data)
            _write_all(fd, data)
    finally:
        os.close(fd)
    _read(stream, len(padding(size)))
    return total


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
