"""The small JSON state files the engine keeps in the data dir (the input hash cache, the images
runnerd pulled). Both are worth keeping across restarts and safe to lose: an unreadable file is
logged and treated as empty, and a write is atomic (a crash never leaves half a file)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger("runnerd.engine")


def read(path: Path, unreadable: str) -> dict[str, Any]:
    """The file's object, or {} when it is missing or unreadable (`unreadable` says what that means)."""
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("%s unreadable (%s): %s", path, exc, unreadable)
        return {}
    return raw if isinstance(raw, dict) else {}


def write(path: Path, text: str) -> None:
    """Replace the file with `text` atomically; a failure is logged, never raised."""
    tmp = path.with_suffix(".tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("cannot write %s: %s", path, exc)
