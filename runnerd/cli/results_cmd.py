"""`runnerd get` (`results`) and `runnerd logs`: what a job published, saved under safe names,
and its algorithm log, whole or live."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runnerd.cli import common, safe
from runnerd.cli.common import TERMINAL, InputError
from runnerd.cli.safe import text

if TYPE_CHECKING:
    from runnerd.client import Client


def results_folder(output: str | None, job_id: Any) -> Path:
    return Path(output) if output else Path("runnerd-results") / safe.job_id(job_id)


def download(client: "Client", job: dict[str, Any], folder: Path, only: int | None = None,
             quiet: bool = False) -> list[Path]:
    from tqdm import tqdm

    from runnerd.client import ApiError

    job_id = safe.job_id(job.get("jobId"))
    folder.mkdir(parents=True, exist_ok=True)
    saved, names = [], safe.Names()
    for r in job.get("results") or []:
        index = r.get("index") if isinstance(r, dict) else None
        if not isinstance(index, int) or isinstance(index, bool):
            raise SystemExit(f"runnerd: the server listed a result with an invalid index {text(repr(index))}")
        kind = r.get("type")
        # The name is the server's: cleaned, kept inside `folder`, unique there (named in list
        # order whatever --index picks, so a result is saved under the same name either way).
        name = names.add(r.get("filename") if kind == "output" else f"{kind}-{r.get('filename')}")
        if only is not None and index != only:
            continue
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        size = r.get("filesize")
        with client.result_stream(job_id, index) as response:
            if response.status_code >= 400:
                response.read()
                raise ApiError(response.status_code, response.json())
            # disable=None: no bar when stderr is not a terminal (logs, CI), one when it is
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o644)
            with open(fd, "wb") as out, tqdm(total=size if isinstance(size, int) else None, unit="B",
                                             unit_scale=True, desc=text(name), disable=True if quiet else None,
                                             file=sys.stderr, leave=False) as bar:
                for chunk in response.iter_bytes(1 << 16):
                    out.write(chunk)
                    bar.update(len(chunk))
        saved.append(target)
    return saved


def get(args: argparse.Namespace) -> int:
    if args.index is not None and args.index < 0:
        raise InputError(f"--index {args.index}: result indexes start at 0 (`runnerd status JOB` lists them)")
    client = common.client(args)
    job = client.job(args.job)
    if job.get("status") not in TERMINAL:
        print(f"runnerd: job {text(args.job)} has not finished (status {text(job.get('status'))} "
              f"{text(job.get('statusText'))}): its results are published when it ends; wait with "
              f"`runnerd status {text(args.job)} --watch` and run `get` again", file=sys.stderr)
        return 1
    indexes = [r.get("index") for r in job.get("results") or [] if isinstance(r, dict)]
    if args.index is not None and args.index not in indexes:
        raise InputError(f"job {text(args.job)} has no result {args.index}; its results are "
                         f"{', '.join(text(i) for i in indexes) or 'none'} (`runnerd status {text(args.job)}`)")
    if not indexes:
        print(f"runnerd: job {text(args.job)} published no results ({text(job.get('statusText'))})", file=sys.stderr)
        return 1
    folder = results_folder(args.output, job.get("jobId"))
    saved = download(client, job, folder, args.index, args.quiet or args.json)
    if args.json:
        common.print_json([str(path) for path in saved])
    for path in ([] if args.json else saved):
        print(text(path))
    return 0


def logs(args: argparse.Namespace) -> int:
    from runnerd.client import ApiError

    if args.json and args.follow:
        raise InputError("--json and -f do not go together: a live log is not one JSON document (drop one)")
    client = common.client(args)
    with client.log_stream(args.job, follow=args.follow) as response:
        if response.status_code >= 400:
            response.read()
            raise ApiError(response.status_code, response.json())
        if args.json:
            common.print_json({"jobId": args.job, "log": response.read().decode("utf-8", "replace")})
            return 0
        try:
            for chunk in response.iter_raw():
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
        except BrokenPipeError:  # `runnerd logs -f JOB | head`: the reader has had enough
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
