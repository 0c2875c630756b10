"""What the CLI takes from a server before it reaches the terminal or the disk. The server may
not be runnerd, or not be honest: a result name or an error text can carry terminal escape
sequences (ESC/CSI/OSC, BEL, \\r rewrites a line), a jobId can be a path, a file name can be
`../x` or `.bashrc`. Everything printed goes through `text`; every path is built here."""

from __future__ import annotations

import re
import unicodedata
from pathlib import PurePosixPath
from typing import Any

JOB_ID = re.compile(r"[0-9a-f]{32}")  # a uuid4 hex (SPEC §2)
MAX_COMPONENT = 200  # characters of one saved path component (filesystems allow 255 bytes)
MAX_DEPTH = 32


def _unsafe(ch: str) -> bool:
    # Cc: C0/C1 controls (ESC, BEL, \r, \n, CSI 0x9b, …); Cf: format characters such as the
    # bidirectional overrides that make a name display as another; Cs/Co/Cn: not text at all.
    return unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn")


def text(value: Any) -> str:
    """A server-supplied value as one printable line: unsafe characters become visible escapes."""
    s = value if isinstance(value, str) else str(value)
    if not any(_unsafe(ch) for ch in s):
        return s
    return "".join(ch.encode("unicode_escape").decode("ascii") if _unsafe(ch) else ch for ch in s)


def number(value: Any) -> str:
    """A number for display (`:g`), or the sanitized text if the server sent something else."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:g}"
    return text(value)


def job_id(value: Any) -> str:
    """The jobId, checked before it names a folder or is sent back; SystemExit if it is not one."""
    if isinstance(value, str) and JOB_ID.fullmatch(value):
        return value
    raise SystemExit(f"runnerd: the server answered with an invalid jobId {text(repr(value))}")


def _component(part: str) -> str:
    part = "".join("_" if _unsafe(ch) else ch for ch in part).strip()
    # `..` becomes `__`; and no hidden files (.bashrc, .git) from a server
    part = re.sub(r"^\.+", lambda dots: "_" * len(dots.group()), part)
    return part[:MAX_COMPONENT] or "_"


def _with_suffix(path: PurePosixPath, n: int) -> PurePosixPath:
    stem, dot, ext = path.name.rpartition(".")
    name = f"{stem}-{n}.{ext}" if dot and stem else f"{path.name}-{n}"
    return path.with_name(name)


class Names:
    """Result file names made safe to save under one folder, each unique in that folder (also
    on case-insensitive filesystems). Nested outputs keep their folders, each part cleaned:
    no absolute paths, no `..`, no hidden names, no control characters, no backslashes."""

    def __init__(self) -> None:
        self._files: set[str] = set()
        self._dirs: set[str] = set()

    def _clashes(self, path: PurePosixPath) -> bool:
        key = str(path).casefold()
        if key in self._files or key in self._dirs:
            return True
        return any(str(parent).casefold() in self._files for parent in path.parents if str(parent) != ".")

    def add(self, name: Any) -> str:
        raw = name if isinstance(name, str) else str(name)
        parts = [p for p in re.split(r"[/\\]+", raw) if p not in ("", ".")]
        parts = [_component(p) for p in parts] or ["_"]
        if len(parts) > MAX_DEPTH:
            parts = parts[:MAX_DEPTH - 1] + ["_".join(parts[MAX_DEPTH - 1:])[:MAX_COMPONENT]]
        path = PurePosixPath(*parts)
        if any(str(parent).casefold() in self._files for parent in path.parents if str(parent) != "."):
            path = PurePosixPath("_".join(parts)[:MAX_COMPONENT])  # a folder of that name is a file already
        candidate, n = path, 0
        while self._clashes(candidate):
            n += 1
            candidate = _with_suffix(path, n)
        self._files.add(str(candidate).casefold())
        self._dirs.update(str(p).casefold() for p in candidate.parents if str(p) != ".")
        return str(candidate)
