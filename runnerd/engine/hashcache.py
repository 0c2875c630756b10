"""The sha256 of local input files, hashed once per version of the file, not once per job (#15).

A bind-mounted dataset of 10 GB costs about half a minute of a core to hash; every job on it
would pay that again. So a digest is remembered under the file's (device, inode, size, mtime)
(what `stat` says of the inode runnerd pinned for the job), in memory and in a small JSON file in
the data dir, so it outlives a restart. ctime is deliberately not in the key: pinning a file for a
job makes a hard link, which changes the inode's ctime every time.

What the key cannot see: someone who can write the asset file and then sets its mtime back to the
old value (same size) would get the old digest attested. The asset files are the operator's; the
operator guide says so.

Concurrent jobs on the same file share one hashing; the hashing runs on a thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import stat
from pathlib import Path

from runnerd.engine import statefile
from runnerd.provenance import Digest

log = logging.getLogger("runnerd.hashcache")
CHUNK = 1 << 20
MAX_ENTRIES = 10_000  # a few hundred kB of JSON; the oldest go first
FILE_NAME = "input-hashes.json"


def _key(st: os.stat_result) -> str:
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def hash_file(path: Path) -> tuple[str, Digest | None]:
    """(key, digest) of a regular file, read without following a link; the digest is None when the
    file changed while it was read (then nothing may be cached under either version)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            raise OSError(f"{path.name} is not a regular file")
        digest, size = hashlib.sha256(), 0
        while True:
            chunk = os.read(fd, CHUNK)
            if not chunk:
                break
            digest.update(chunk)
            size += len(chunk)
        after = os.fstat(fd)
    finally:
        os.close(fd)
    if _key(after) != _key(before) or size != before.st_size:
        return _key(before), None
    return _key(before), Digest(digest.hexdigest(), size)


class HashCache:
    def __init__(self, data_dir: Path | None):
        self._path = Path(data_dir) / FILE_NAME if data_dir is not None else None
        self._known: dict[str, Digest] = {}
        self._running: dict[str, asyncio.Future[Digest | None]] = {}
        self.hashed_bytes = 0  # what was really read (the benchmark and tests look at it)
        self._load()

    def _load(self) -> None:
        if self._path is None:
            return
        for key, value in statefile.read(self._path, "the input hash cache starts empty").items():
            try:
                self._known[str(key)] = Digest(str(value["sha256"]), int(value["size"]))
            except (KeyError, TypeError, ValueError):
                continue

    def _snapshot(self) -> str:
        """The file's text, made on the event loop (the dict is only ever changed there)."""
        while len(self._known) > MAX_ENTRIES:
            self._known.pop(next(iter(self._known)))
        return json.dumps({k: {"sha256": d.sha256, "size": d.size} for k, d in self._known.items()})

    def _save(self, text: str) -> None:
        if self._path is not None:
            statefile.write(self._path, text)

    def cached(self, path: Path) -> Digest | None:
        """The remembered digest of the file as it is now, or None (no I/O beyond one stat)."""
        try:
            return self._known.get(_key(os.stat(path, follow_symlinks=False)))
        except OSError:
            return None

    async def digest(self, path: Path) -> Digest | None:
        """The file's digest: remembered, or hashed now (once for concurrent callers). None if it
        cannot be read or kept changing while it was read."""
        try:
            key = _key(await asyncio.to_thread(os.stat, path, follow_symlinks=False))
        except OSError:
            return None
        if key in self._known:
            self._known[key] = self._known.pop(key)  # most recently used last
            return self._known[key]
        running = self._running.get(key)
        if running is None:
            running = asyncio.ensure_future(self._hash(path, key))
            self._running[key] = running
            running.add_done_callback(lambda _f: self._running.pop(key, None))
        return await asyncio.shield(running)

    async def _hash(self, path: Path, key: str) -> Digest | None:
        try:
            read_key, digest = await asyncio.to_thread(hash_file, path)
        except OSError as exc:
            log.warning("cannot hash input %s: %s", path, exc)
            return None
        if digest is None:
            return None
        self.hashed_bytes += digest.size
        self._known[read_key] = digest
        await asyncio.to_thread(self._save, self._snapshot())
        return digest
