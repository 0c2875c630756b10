"""The node's identity: its Ethereum key (providerAddress) and the capability tokens derived from it.

The key is generated on first start and kept in the data dir with mode 0600. Result URLs carry an
expiring HMAC token over (jobId, index, expiry), so the owner can fetch them without signing and
nobody else can; rotating the key file revokes every token.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from runnerd.signing import address_of


@dataclass(frozen=True)
class NodeIdentity:
    address: str
    private_key: str
    token_key: bytes

    @classmethod
    def load_or_create(cls, data_dir: Path) -> "NodeIdentity":
        path = Path(data_dir) / "node.key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write("0x" + secrets.token_hex(32) + "\n")
        os.chmod(path, 0o600)
        key = path.read_text().strip()
        address = address_of(key)
        token_key = hashlib.sha256(b"runnerd result token\x00" + bytes.fromhex(key.removeprefix("0x"))).digest()
        return cls(address, key, token_key)

    def _mac(self, job_id: str, index: int, expires: int) -> str:
        msg = f"{job_id}:{index}:{expires}".encode()
        return hmac.new(self.token_key, msg, hashlib.sha256).hexdigest()[:40]

    def mint(self, job_id: str, index: int, ttl: int, now: float | None = None) -> tuple[int, str]:
        """(expires, token) for one result of one job."""
        expires = int((now if now is not None else time.time()) + ttl)
        return expires, self._mac(job_id, index, expires)

    def check(self, job_id: str, index: int, expires: int, token: str, now: float | None = None) -> bool:
        if expires < (now if now is not None else time.time()):
            return False
        return hmac.compare_digest(self._mac(job_id, index, expires).encode(), token.encode("utf-8", "replace"))


CONSOLE_TOKEN_FILE = "console.token"


def console_token(data_dir: Path) -> str:
    """The web console's operator token (like Jupyter's): 32 random bytes as hex, made on first
    start, kept in the data dir with mode 0600; delete the file and restart to change it."""
    path = Path(data_dir) / CONSOLE_TOKEN_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
    os.chmod(path, 0o600)
    token = path.read_text().strip()
    if len(token) < 32:  # an emptied or truncated file would be a guessable token
        raise ValueError(f"{path} holds no usable token; delete it and restart to make a new one")
    return token
