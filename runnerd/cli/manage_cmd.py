"""`runnerd stop` and `runnerd delete`: of one job, of several, or of all of yours (`--all`, which
asks first: type `yes` on a terminal, or give --yes)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from runnerd.cli import common
from runnerd.cli.common import TERMINAL, InputError
from runnerd.cli.safe import text

_WHAT = {"stop": "stop every unfinished job", "delete": "delete every job, and all its files,"}


def _confirm(args: argparse.Namespace, verb: str, client: Any) -> bool:
    """--all: --yes, or `yes` typed on a terminal. Off a terminal without --yes: an input error, so
    that a script never removes everything by accident."""
    if args.yes:
        return True
    if not sys.stdin.isatty():
        raise InputError(f"{verb} --all acts on every job of your address: add --yes to confirm (nothing was "
                         f"{'stopped' if verb == 'stop' else 'deleted'})")
    jobs = client.status()
    count = sum(1 for j in jobs if verb == "delete" or j.get("status") not in TERMINAL)
    print(f"runnerd: {_WHAT[verb]} of {text(client.address)} ({count} job{'s' if count != 1 else ''})? "
          f"Type yes to go on: ", end="", file=sys.stderr, flush=True)
    try:
        answer = input()
    except EOFError:
        answer = ""
    if answer.strip().lower() != "yes":
        print("runnerd: nothing done", file=sys.stderr)
        return False
    return True


def _act(args: argparse.Namespace, verb: str) -> int:
    from runnerd.client import ApiError

    if args.all and args.job:
        raise InputError(f"give job ids or --all, not both (`runnerd {verb} JOB…` or `runnerd {verb} --all`)")
    if not args.all and not args.job:
        raise InputError(f"name the jobs to {verb} (`runnerd {verb} JOB…`, ids from `runnerd status`), or give --all")
    if args.yes and not args.all:
        raise InputError("--yes confirms --all; job ids need no confirmation")
    client = common.client(args)
    method = client.stop if verb == "stop" else client.delete
    if args.all:
        if not _confirm(args, verb, client):
            return 1
        targets = [""]  # no jobId: the API's every-job form, signed over runnerd's action-bound text
    else:
        targets = list(dict.fromkeys(args.job))  # each once, in the order given
    done: list[dict[str, Any]] = []
    failed = 0
    for job_id in targets:
        try:
            answer = method(job_id)
        except ApiError as exc:
            print(f"runnerd: {text(job_id)}: {text(exc)}", file=sys.stderr)
            failed += 1
            continue
        done += answer
        if not args.json:
            for job in answer:
                print(common.line(job), flush=True)
    if args.json:
        common.print_json(done)
    return 1 if failed else 0


def stop(args: argparse.Namespace) -> int:
    return _act(args, "stop")


def delete(args: argparse.Namespace) -> int:
    return _act(args, "delete")
