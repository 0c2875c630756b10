"""`runnerd doctor`: what an operator gets wrong, each with how to fix it (filled in by #5)."""

from __future__ import annotations

import argparse

from runnerd.cli.paths import add_location_flags


def _doctor(args: argparse.Namespace) -> int:
    from runnerd.doctor import run_checks

    return run_checks(args)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="check Docker, cgroups, images, GPUs, disk and config; say how to fix each")
    add_location_flags(p)
    p.set_defaults(func=_doctor)
