"""What runnerd sends a provision or filter step that shares no disk with it (#17): its seed, as a
tar stream in the dialect of runnerd/steps/sitetar.py.

    data/<path>   what the step finds under /data: for provision exactly what the local workspace
                  (engine/workspace.py) puts in a job's /data before anything runs: the folders
                  (inputs/ ddos/ transformations/ outputs/ logs/, inputs/<did>/ per input), the
                  files runnerd writes itself (`runnerd_files`: DDOs, algoCustomData.json, raw
                  code) and the job's local `file` inputs and algorithm, read from their pins
                  (engine/pins.py: the files runnerd opened and checked, so pin_all must have run)
    out/<path>    the regular files already in the step's host out folder (the filter's guard.json
                  that engine/trust.py writes before the filter starts), for /runnerd/out

The filter gets no data/ entries: its /data/outputs is the algorithm's, already on the node.
`seed_entries` lists (one stat per file, so the length is known before the first byte);
`stream` writes, file by file, never holding more than one chunk.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

from runnerd import layout
from runnerd.domain import LocalFile, PlannedJob, RawCode, StepKind
from runnerd.layout import JobPaths, did_dir
from runnerd.steps import sitetar

log = logging.getLogger("runnerd.site")


class SeedNotReady(Exception):
    """A file the seed needs is not there yet (the job's pins are made when it is prepared)."""


@dataclass(frozen=True)
class Entry:
    name: str  # the tar name: data/… or out/…
    is_dir: bool = False
    content: bytes | None = None  # what runnerd writes itself
    source: Path | None = None  # a file on runnerd's host (a pin, a file of the out folder)
    size: int = 0
    executable: bool = False

    def header(self) -> bytes:
        return sitetar.header(self.name, self.is_dir, self.size, self.executable)


def runnerd_files(job: PlannedJob) -> list[tuple[str, bytes, int]]:
    """(path under /data, bytes, mode) of each file runnerd itself writes into a job's /data: the
    inputs' and the algorithm's DDOs, algoCustomData.json and raw algorithm code. The local
    workspace writes these very bytes, so a job's /data is the same on one host and on a node."""
    out = [(f"ddos/{did_dir(item.did)}", _json(item.ddo), 0o644) for item in job.plan.inputs]
    algo = job.plan.algorithm
    if algo.did and algo.ddo:
        out.append((f"ddos/{did_dir(algo.did)}", _json(algo.ddo), 0o644))
    if algo.algocustomdata is not None:
        out.append(("inputs/algoCustomData.json", _json(algo.algocustomdata), 0o644))
    if isinstance(algo.code, RawCode):
        out.append(("transformations/algorithm", algo.code.text.encode("utf-8"), 0o755))
    return out


def _json(value: object) -> bytes:
    return json.dumps(value).encode("utf-8")


def data_entries(job: PlannedJob, paths: JobPaths) -> list[Entry]:
    """The data/ part of the provision step's seed (see the module's text)."""
    entries = [Entry(f"data/{sub}", is_dir=True) for sub in layout.FS_SUBDIRS]
    entries += [Entry(f"data/inputs/{did_dir(item.did)}", is_dir=True) for item in job.plan.inputs]
    entries += [Entry(f"data/{rel}", content=data, size=len(data), executable=bool(mode & 0o100))
                for rel, data, mode in runnerd_files(job)]
    for i, item in enumerate(job.plan.inputs):
        for j, f in enumerate(item.files):
            if isinstance(f, LocalFile):
                entries.append(_pinned(f"data/inputs/{did_dir(item.did)}/{j}", paths.pinned_input(i, j)))
    if isinstance(job.plan.algorithm.code, LocalFile):
        entries.append(_pinned("data/transformations/algorithm", paths.pinned_algorithm))
    return entries


def _pinned(name: str, pin: Path) -> Entry:
    try:
        st = os.lstat(pin)
    except FileNotFoundError:
        raise SeedNotReady(f"{name} is not pinned yet") from None
    if not stat.S_ISREG(st.st_mode) or (st.st_size == 0 and st.st_mode & 0o7777 == 0):
        raise SeedNotReady(f"{name} is not pinned yet")  # a placeholder whose bind is not (yet) made
    return Entry(name, source=pin, size=st.st_size, executable=bool(st.st_mode & 0o100))


def out_entries(folder: Path) -> list[Entry]:
    """out/ entries for the regular files (and the folders holding them) under `folder`, walked
    without following symbolic links; anything else there is not runnerd's and is left out."""
    entries: list[Entry] = []

    def walk(path: Path, prefix: str, depth: int) -> None:
        try:
            listing = sorted(os.scandir(path), key=lambda e: e.name)
        except FileNotFoundError:
            return
        for entry in listing:
            st = entry.stat(follow_symlinks=False)
            name = f"{prefix}/{entry.name}"
            if stat.S_ISREG(st.st_mode):
                entries.append(Entry(name, source=Path(entry.path), size=st.st_size))
            elif stat.S_ISDIR(st.st_mode) and depth < sitetar.MAX_DEPTH:
                entries.append(Entry(name, is_dir=True))
                walk(Path(entry.path), name, depth + 1)

    walk(folder, "out", 0)
    return entries


def seed_entries(job: PlannedJob, paths: JobPaths, step: StepKind) -> list[Entry]:
    if step == StepKind.PROVISION:
        return data_entries(job, paths) + out_entries(paths.provision_out)
    if step == StepKind.FILTER:
        return out_entries(paths.results)
    raise ValueError(f"the {step.value} step has no seed")


def length(entries: list[Entry]) -> int:
    """The stream's exact size in bytes (its Content-Length)."""
    return sum(len(e.header()) + e.size + len(sitetar.padding(e.size)) for e in entries) + len(sitetar.END)


def stream(entries: list[Entry]) -> Generator[bytes, None, None]:
    """The tar stream of `entries`, in chunks. A file that is no longer what was listed (gone,
    replaced, resized) raises OSError: the receiver sees a short stream, never a wrong one."""
    for e in entries:
        yield e.header()
        if e.content is not None:
            yield e.content + sitetar.padding(e.size)
        elif e.source is not None:
            fd, st = sitetar.open_regular(str(e.source))
            if st.st_size != e.size:
                os.close(fd)
                raise OSError(f"{e.name} changed size since the seed was listed")
            yield from sitetar.file_chunks(fd, e.size)
    yield sitetar.END
