"""The local asset catalog (SPEC §5): one Ocean v4 DDO per JSON file in the assets dir.

The catalog is live: every lookup rescans the folder (a stat per file; files are re-parsed only
when their size or mtime changed), so a DDO added, changed or removed is seen by the next request.
A malformed file is reported in `problems` and skipped; it never hides the others.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("runnerd.catalog")

DID_RE = re.compile(r"did:op:[0-9a-fA-F]{64}")
ADDRESS_RE = re.compile(r"0x[0-9a-fA-F]{40}")


class AssetError(Exception):
    """A DDO (or one of its files) that cannot be used. The message says which and why, for the
    operator (it may name paths); `public` says why without naming any path, for consumers."""

    def __init__(self, message: str, public: str = "cannot be used"):
        super().__init__(message)
        self.public = public


_NOFOLLOW = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC


def open_no_follow(path: str) -> int:
    """Open an absolute path for reading, following no symbolic link on the way: every component
    is opened relative to its parent with O_NOFOLLOW, so a symlink anywhere (or one swapped in
    later) fails with ELOOP/ENOTDIR instead of leading elsewhere. The file must be regular (it is
    opened non-blocking, so a FIFO cannot hang the caller). Returns the fd; the caller closes it."""
    parts = [p for p in path.split("/") if p]
    if not os.path.isabs(path) or not parts or any(p in (".", "..") for p in parts):
        raise OSError(f"not a normalized absolute path: {path!r}")
    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts[:-1]:
            child = os.open(part, _NOFOLLOW | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        child = os.open(parts[-1], _NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)
    finally:
        os.close(fd)
    if not stat.S_ISREG(os.fstat(child).st_mode):
        os.close(child)
        raise OSError(f"{path} is not a regular file")
    return child


def mode_readable_by(st: os.stat_result, uid: int, gid: int) -> bool:
    """Whether uid:gid may read a file with this stat (owner, then group, then other bits)."""
    if st.st_uid == uid:
        return bool(st.st_mode & stat.S_IRUSR)
    if st.st_gid == gid:
        return bool(st.st_mode & stat.S_IRGRP)
    return bool(st.st_mode & stat.S_IROTH)


@dataclass(frozen=True)
class Asset:
    did: str
    ddo: dict[str, Any]
    source: str  # the JSON file it came from

    @property
    def type(self) -> str:
        return str(self.ddo.get("metadata", {}).get("type", ""))

    @property
    def owner(self) -> str:
        return str((self.ddo.get("nft") or {}).get("owner", ""))

    def service(self, service_id: str) -> dict[str, Any] | None:
        return next((s for s in self.ddo.get("services", []) if str(s.get("id")) == str(service_id)), None)

    # -- on chain (#16): an asset with an nftAddress is ordered through its services' datatokens --

    @property
    def nft_address(self) -> str | None:
        value = self.ddo.get("nftAddress")
        return value.lower() if isinstance(value, str) and value else None

    @property
    def chain_id(self) -> int | None:
        value = self.ddo.get("chainId")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def service_index(self, service_id: str) -> int:
        """The service's position in `services`: what OrderStarted.serviceIndex names."""
        return next(i for i, s in enumerate(self.ddo.get("services", [])) if str(s.get("id")) == str(service_id))

    def public_ddo(self) -> dict[str, Any]:
        """The DDO as an algorithm may see it (/data/ddos): host paths and URLs stripped."""
        ddo = json.loads(json.dumps(self.ddo))
        for service in ddo.get("services", []):
            service.pop("files", None)
        return ddo


def did_for(kind: str, locator: str) -> str:
    """A stable DID for a locally registered asset: the same file or URL gives the same DID."""
    return "did:op:" + hashlib.sha256(f"runnerd:{kind}:{locator}".encode()).hexdigest()


def _validate(ddo: Any, source: str) -> str:
    if not isinstance(ddo, dict):
        raise AssetError(f"{source}: a DDO must be a JSON object")
    did = ddo.get("id")
    if not isinstance(did, str) or not DID_RE.fullmatch(did):
        raise AssetError(f"{source}: `id` must be a DID like did:op:<64 hex digits>, got {did!r}")
    meta = ddo.get("metadata")
    if not isinstance(meta, dict) or meta.get("type") not in ("dataset", "algorithm"):
        raise AssetError(f"{source}: metadata.type must be dataset or algorithm")
    services = ddo.get("services")
    if not isinstance(services, list) or not all(isinstance(s, dict) and "id" in s for s in services):
        raise AssetError(f"{source}: `services` must be a list of objects with an `id`")
    for i, service in enumerate(services):
        files = service.get("files", [])
        if not isinstance(files, list) or not all(isinstance(f, dict) and f.get("type") in ("url", "file")
                                                  for f in files):
            raise AssetError(f"{source}: services[{i}].files must be a list of {{type: url|file, …}}")
        if "compute" in service and not isinstance(service["compute"], dict):
            raise AssetError(f"{source}: services[{i}].compute must be an object")
    _validate_chain_fields(ddo, services, source)
    return did.lower()


def _validate_chain_fields(ddo: dict[str, Any], services: list[dict[str, Any]], source: str) -> None:
    """nftAddress (the asset's data NFT), chainId, and per service datatokenAddress and timeout
    (seconds an order stays usable, 0 = forever): together they say which orders pay for it.
    With nftAddress, every service needs a datatoken, or it could be used without any order."""
    nft = ddo.get("nftAddress")
    if nft is not None and not (isinstance(nft, str) and ADDRESS_RE.fullmatch(nft)):
        raise AssetError(f"{source}: nftAddress must be a 0x address (40 hex digits), got {nft!r}")
    chain = ddo.get("chainId")
    if chain is not None and not (isinstance(chain, int) and not isinstance(chain, bool) and chain > 0):
        raise AssetError(f"{source}: chainId must be a positive integer, got {chain!r}")
    if nft and chain is None:
        raise AssetError(f"{source}: an asset with an nftAddress needs the chainId its NFT lives on")
    for i, service in enumerate(services):
        token = service.get("datatokenAddress")
        if token is not None and not (isinstance(token, str) and ADDRESS_RE.fullmatch(token)):
            raise AssetError(f"{source}: services[{i}].datatokenAddress must be a 0x address, got {token!r}")
        if nft and not token:
            raise AssetError(f"{source}: services[{i}] has no datatokenAddress, but the asset has an nftAddress")
        if token and not nft:
            raise AssetError(f"{source}: services[{i}] has a datatokenAddress, but the asset has no nftAddress")
        timeout = service.get("timeout", 0)
        if not isinstance(timeout, int) or isinstance(timeout, bool) or timeout < 0:
            raise AssetError(f"{source}: services[{i}].timeout must be a whole number of seconds ≥ 0, got {timeout!r}")


@dataclass
class _Entry:
    stamp: tuple[int, int]
    asset: Asset | None
    problem: str | None


@dataclass
class Catalog:
    assets_dir: Path
    roots: tuple[Path, ...] = ()  # other folders `file` assets may point into
    _cache: dict[str, _Entry] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _hashes: dict[tuple[str, int, int, int], str] = field(default_factory=dict)

    def _scan(self) -> dict[str, _Entry]:
        seen: dict[str, _Entry] = {}
        try:
            entries = list(os.scandir(self.assets_dir))
        except FileNotFoundError:
            entries = []
        for entry in entries:
            if not entry.name.endswith(".json") or not entry.is_file():
                continue
            st = entry.stat()
            stamp = (st.st_mtime_ns, st.st_size)
            cached = self._cache.get(entry.path)
            if cached is None or cached.stamp != stamp:
                cached = self._load(entry.path, stamp)
            seen[entry.path] = cached
        self._cache = seen
        return seen

    def _load(self, path: str, stamp: tuple[int, int]) -> _Entry:
        try:
            with open(path, encoding="utf-8") as f:
                ddo = json.load(f)
            did = _validate(ddo, path)
            return _Entry(stamp, Asset(did, ddo, path), None)
        except (OSError, ValueError, AssetError) as exc:
            problem = str(exc) if isinstance(exc, AssetError) else f"{path}: {exc}"
            log.warning("skipping malformed DDO: %s", problem)
            return _Entry(stamp, None, problem)

    def assets(self) -> dict[str, Asset]:
        with self._lock:
            entries = self._scan()
        return {e.asset.did: e.asset for e in entries.values() if e.asset}

    def get(self, did: str) -> Asset | None:
        return self.assets().get(did.lower())

    def problems(self) -> list[str]:
        with self._lock:
            return [e.problem for e in self._scan().values() if e.problem]

    # -- files --------------------------------------------------------------------------------

    def resolve_file(self, entry: dict[str, Any]) -> dict[str, Any]:
        """A DDO `files` entry → what the job spec needs: {type: file, path} or {type: url, url,
        sha256}. A local path must lie under the assets dir or an assetRoots entry and may not go
        through a symbolic link below that root (a link could point at any host file, or at
        another owner's asset, and could be swapped in after this check). The roots themselves are
        the operator's and may be links; the path returned has no link left anywhere in it, which
        is what the workspace checks again when it pins the file (engine/pins.py)."""
        if entry.get("type") == "url":
            url = entry.get("url")
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                raise AssetError(f"file url must be http(s), got {url!r}", "has an unusable URL")
            checksum = entry.get("checksum")
            return {"type": "url", "url": url, "sha256": checksum if isinstance(checksum, str) else None}
        raw = entry.get("path")
        if not isinstance(raw, str) or not raw:
            raise AssetError("file entry has no `path`", "has no path")
        # Lexical: `..` is folded before the root is chosen, links are not resolved (they are refused).
        path = os.path.normpath(raw if os.path.isabs(raw) else os.path.join(self.assets_dir, raw))
        real = None
        for root in (self.assets_dir, *self.roots):
            for form in {os.path.normpath(os.path.abspath(root)), os.path.realpath(root)}:
                if path.startswith(form.rstrip("/") + "/"):
                    real = os.path.join(os.path.realpath(root), path[len(form.rstrip("/")) + 1:])
                    break
            if real:
                break
        if real is None:
            raise AssetError(f"{raw} is outside the assets dir and every assetRoots entry",
                             "is outside this node's asset folders")
        try:
            os.close(open_no_follow(real))
        except OSError as exc:
            raise AssetError(f"{raw} cannot be opened without following a symbolic link, or is not a regular "
                             f"file ({exc})", "does not exist, is not a regular file or is a symbolic link") from None
        return {"type": "file", "path": real}

    def sha256_of(self, resolved: dict[str, Any]) -> str | None:
        """Content hash of a resolved file (cached by path, size and mtime); for URLs, the DDO's
        declared checksum (the provision step verifies it while downloading)."""
        if resolved["type"] == "url":
            value = resolved.get("sha256") or ""
            return value.lower().removeprefix("sha256:") or None
        with open(open_no_follow(resolved["path"]), "rb") as f:
            st = os.fstat(f.fileno())
            key = (resolved["path"], st.st_ino, st.st_size, st.st_mtime_ns)
            if key not in self._hashes:
                self._hashes[key] = sha256_fd(f)
        return self._hashes[key]


def sha256_fd(f: Any) -> str:
    digest = hashlib.sha256()
    for chunk in iter(lambda: f.read(1 << 20), b""):
        digest.update(chunk)
    return digest.hexdigest()
