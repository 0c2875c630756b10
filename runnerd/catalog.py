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
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("runnerd.catalog")

DID_RE = re.compile(r"did:op:[0-9a-fA-F]{64}")


class AssetError(Exception):
    """A DDO (or one of its files) that cannot be used; the message says which and why."""


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
    return did.lower()


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
    _hashes: dict[tuple[str, int, int], str] = field(default_factory=dict)

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
        sha256}. Local paths must lie under the assets dir or an allow-listed root."""
        if entry.get("type") == "url":
            url = entry.get("url")
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                raise AssetError(f"file url must be http(s), got {url!r}")
            checksum = entry.get("checksum")
            return {"type": "url", "url": url, "sha256": checksum if isinstance(checksum, str) else None}
        raw = entry.get("path")
        if not isinstance(raw, str) or not raw:
            raise AssetError("file entry has no `path`")
        path = Path(raw) if os.path.isabs(raw) else self.assets_dir / raw
        real = Path(os.path.realpath(path))
        allowed = [Path(os.path.realpath(r)) for r in (self.assets_dir, *self.roots)]
        if not any(real == root or root in real.parents for root in allowed):
            raise AssetError(f"{raw} is outside the assets dir and every assetRoots entry")
        if not real.is_file():
            raise AssetError(f"{raw} does not exist or is not a regular file")
        return {"type": "file", "path": str(real)}

    def sha256_of(self, resolved: dict[str, Any]) -> str | None:
        """Content hash of a resolved file (cached by path, size and mtime); for URLs, the DDO's
        declared checksum (the provision step verifies it while downloading)."""
        if resolved["type"] == "url":
            value = resolved.get("sha256") or ""
            return value.lower().removeprefix("sha256:") or None
        st = os.stat(resolved["path"])
        key = (resolved["path"], st.st_size, st.st_mtime_ns)
        if key not in self._hashes:
            digest = hashlib.sha256()
            with open(resolved["path"], "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
            self._hashes[key] = digest.hexdigest()
        return self._hashes[key]
