"""What a finished job publishes: its output files (as copied out by the filter step) and its logs.

The results folder was written by a container that read untrusted data, so it is walked without
following links and only regular files are listed (the API opens them with O_NOFOLLOW too).
"""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path
from typing import Any

from runnerd.domain import ResultFile, ResultType
from runnerd.layout import JobPaths

LOG_FILES = (
    ("algorithm.log", ResultType.ALGORITHM_LOG),
    ("configuration.log", ResultType.CONFIGURATION_LOG),
    ("filtering.log", ResultType.FILTERING_LOG),
)
_REPORT_LIMIT = 4 * 1024 * 1024
log = logging.getLogger("runnerd.runner")  # the provision detail is part of the job's story in the log


def log_provision_detail(job_id: str, detail: object) -> None:
    """The operator's side of the provision step's report: which URL each download was, where it
    was redirected and the raw error. Only ever the daemon's log: consumers see labels, never URLs."""
    for entry in detail if isinstance(detail, list) else ():
        if not isinstance(entry, dict):
            continue
        hops = entry.get("redirects") or []
        via = f" redirected to {' -> '.join(map(str, hops))}" if isinstance(hops, list) and hops else ""
        what = f"{entry.get('label', '?')} {entry.get('url') or ''}{via}".strip()[:4000]  # servers chose the hops
        if entry.get("error"):
            log.warning("job %s: provision: %s: %s", job_id, what, str(entry["error"])[:4000])
        else:
            log.info("job %s: provision: %s: fetched", job_id, what)


def read_report(path: Path) -> dict[str, Any] | None:
    """A step's JSON report, or None if it is missing, too big or not JSON."""
    try:  # written by a step container: never follow a link, never block on a FIFO
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = f.read(_REPORT_LIMIT + 1)
    if len(data) > _REPORT_LIMIT:
        return None
    try:
        value = json.loads(data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _output_files(paths: JobPaths) -> list[ResultFile]:
    root = paths.result_outputs
    found: list[ResultFile] = []
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                stack.append(Path(entry.path))
            elif entry.is_file(follow_symlinks=False):
                rel = Path(entry.path).relative_to(root).as_posix()
                size = entry.stat(follow_symlinks=False).st_size
                found.append(ResultFile(rel, size, ResultType.OUTPUT, f"results/outputs/{rel}"))
    return sorted(found, key=lambda r: r.filename)


def occupied_bytes(paths: JobPaths) -> int:
    """What the job's published files really take on the host: allocated blocks, so a sparse file
    counts as the data it holds and a tiny file as a whole block. The per-owner results budget
    (maxResultGBPerOwner) is charged this. Walked with a stack, never following links."""
    total, stack = 0, [paths.results, paths.logs]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            total += st.st_blocks * 512
            if stat.S_ISDIR(st.st_mode):
                stack.append(Path(entry.path))
    return total


def collect_results(paths: JobPaths, with_outputs: bool) -> list[ResultFile]:
    """The job's `results` list: outputs first (by path), then the logs that exist."""
    results = _output_files(paths) if with_outputs else []
    for name, kind in LOG_FILES:
        log_path = paths.log(name)
        if log_path.is_file():
            results.append(ResultFile(name, log_path.stat().st_size, kind, f"logs/{name}"))
    return results
