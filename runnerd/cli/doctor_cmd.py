"""`runnerd doctor`: what an operator gets wrong, each with how to fix it (checks: runnerd/doctor.py)."""

from __future__ import annotations

import argparse

from runnerd.cli.paths import add_location_flags


def _doctor(args: argparse.Namespace) -> int:
    from runnerd.doctor import run_checks

    return run_checks(args)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="check Docker, cgroups, images, GPUs, disk and config; say how to fix each",
                       description="Check this host and the config the daemon would use. Prints one line per check "
                                   "(OK, WARN or FAIL) and, for each WARN/FAIL, how to fix it. Exit 0 when nothing "
                                   "FAILs, 1 otherwise.")
    add_location_flags(p)
    p.add_argument("--json", action="store_true",
                   help="print a JSON list of {check, status, detail, fix} instead of text")
    p.set_defaults(func=_doctor)
