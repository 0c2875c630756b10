"""What a provision or filter step on a cluster node sends back (#17): a tar of its /runnerd/out,
which becomes the step's host out folder (`JobPaths.provision_out`, `JobPaths.results`).

The stream is hostile (the filter's outputs are the algorithm's): it is spooled to a file in the
job's root-only folder as it arrives, the byte cap counted on what is really received (a header's
or a Content-Length's word is never taken), then extracted with runnerd/steps/sitetar.py's rules
(regular files and folders only, no link, device, fifo, absolute name, `..` or name twice; caps on
entries and bytes; modes 0644/0755, the folder itself 0700, owner runnerd) into a fresh folder
beside the target, which replaces the target only once complete. So a retried step never mixes
two attempts, and an upload that fails leaves what was there before.
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from runnerd.engine.trees import remove_tree
from runnerd.steps import sitetar

log = logging.getLogger("runnerd.site")
_SPOOL, _NEW, _OLD = ".site-spool-", ".site-new-", ".site-old-"


class UploadTooLarge(Exception):
    """The stream went past the byte cap while arriving."""


class UploadRefused(Exception):
    """The archive breaks a rule (the message is sitetar's: entry names, never a host path)."""


@dataclass(frozen=True)
class Caps:
    bytes: int  # stream bytes received, and file bytes extracted
    entries: int


class Upload:
    """One upload of one step's out folder: `write` the body's chunks as they come, then `install`."""

    def __init__(self, target: Path, caps: Caps):
        self.target = target
        self.caps = caps
        self.received = 0
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.spool = target.parent / f"{_SPOOL}{target.name}-{secrets.token_hex(6)}"
        self._file = open(self.spool, "xb")  # closed by install or discard

    def write(self, chunk: bytes) -> None:
        self.received += len(chunk)
        if self.received > self.caps.bytes:
            raise UploadTooLarge(f"the upload is larger than {self.caps.bytes} bytes")
        self._file.write(chunk)

    def install(self) -> tuple[int, int]:
        """Extract the spooled stream into a fresh folder and swap it in; (entries, bytes).
        Callers serialise installs of one target (engine/site_transfer.py)."""
        self._file.close()
        _sweep(self.target)
        fresh = self.target.parent / f"{_NEW}{self.target.name}-{secrets.token_hex(6)}"
        os.mkdir(fresh, 0o700)
        os.chmod(fresh, 0o700)  # the folder itself runnerd's only, as a remote site keeps it (no step mounts it)
        try:
            with open(self.spool, "rb") as f:
                counts = sitetar.extract(f, {"out": str(fresh)}, self.caps.bytes, self.caps.entries)
        except sitetar.TarRefused as exc:
            _remove(fresh)
            raise UploadRefused(str(exc)) from None
        except BaseException:
            _remove(fresh)
            raise
        old = self.target.parent / f"{_OLD}{self.target.name}-{secrets.token_hex(6)}"
        try:
            os.rename(self.target, old)
            moved = True
        except FileNotFoundError:
            moved = False
        os.rename(fresh, self.target)
        if moved:
            _remove(old)
        return counts

    def discard(self) -> None:
        self._file.close()
        self.spool.unlink(missing_ok=True)


def _sweep(target: Path) -> None:
    """Folders of this target that a crash mid-install left behind. (A crash between the two
    renames leaves the old folder aside and no target: the step's next upload makes one.)"""
    for prefix in (_NEW, _OLD):
        for leftover in target.parent.glob(f"{prefix}{target.name}-*"):
            _remove(leftover)


def _remove(path: Path) -> None:
    problems = remove_tree(path)
    if problems:
        log.warning("cannot remove %s: %s", path, "; ".join(sorted(set(problems))))
