"""Per-job, per-step tokens of the job-site transfer (#17): what a provision or filter step running
on a cluster node shows runnerd to fetch its seed and push its outputs.

A token is HMAC-SHA256 over (job id, step) under a daemon key kept in `<dataDir>/site.key` (32
random bytes, mode 0600, made at first use). It is stateless (nothing to store or expire: a job's
ending closes its routes, engine/site_transfer.py), good for that one job and step only, and
checked in constant time. Deleting the key file (and restarting) revokes every token.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import os
import secrets
import stat
import threading
from pathlib import Path

from runnerd.domain import StepKind

KEY_FILE = "site.key"
KEY_BYTES = 32
TOKEN_STEPS = (StepKind.PROVISION, StepKind.FILTER)  # the algorithm never talks to runnerd
_DOMAIN = b"runnerd site token v1\x00"


class SiteKeyError(Exception):
    """The key file exists but is not a key (short, long, not a regular file): the operator's to fix."""


class SiteTokens:
    def __init__(self, data_dir: Path):
        self.path = Path(data_dir) / KEY_FILE
        self._key: bytes | None = None
        self._lock = threading.Lock()

    def key(self) -> bytes:
        """The daemon key, read (or made) once."""
        with self._lock:
            if self._key is None:
                self._key = _load_or_create(self.path)
            return self._key

    def token(self, job_id: str, step: StepKind) -> str:
        if step not in TOKEN_STEPS:
            raise ValueError(f"the {step.value} step gets no site token")
        message = _DOMAIN + job_id.encode("utf-8", "surrogateescape") + b"\x00" + step.value.encode()
        return hmac.new(self.key(), message, hashlib.sha256).hexdigest()

    def valid(self, job_id: str, step: StepKind, token: str) -> bool:
        if step not in TOKEN_STEPS:
            return False
        return hmac.compare_digest(self.token(job_id, step).encode(), token.encode("utf-8", "replace"))


def _load_or_create(path: Path) -> bytes:
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    # Written aside and linked into place: a reader never sees half a key, and of two daemons
    # (or threads) racing to make it, the first link wins and both use its key.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(KEY_BYTES))
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)
    return _read(path)


def _read(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise SiteKeyError(f"{path} is a symbolic link; put the key file itself there") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SiteKeyError(f"{path} is not a regular file; remove it and restart to make a new key")
        if st.st_mode & 0o077:
            os.fchmod(fd, 0o600)  # a key others can read is no key: tighten it, as node.key is
        with os.fdopen(os.dup(fd), "rb") as f:
            key = f.read(KEY_BYTES + 1)
    finally:
        os.close(fd)
    if len(key) != KEY_BYTES:
        raise SiteKeyError(f"{path} holds {len(key)} bytes, not a {KEY_BYTES}-byte key; remove it and restart "
                           "to make a new one (every site token changes)")
    return key
