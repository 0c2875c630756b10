"""`runnerd doctor`: what an operator gets wrong, each with how to fix it (checks: runnerd/doctor.py)."""

from __future__ import annotations

import argparse
import json
import logging

from runnerd.cli.paths import add_location_flags, resolve


def _doctor(args: argparse.Namespace) -> int:
    from runnerd import doctor

    logging.getLogger("runnerd.catalog").setLevel(logging.ERROR)  # doctor reports malformed DDOs itself
    config, data_dir, assets = resolve(args)
    results = doctor.collect(config, data_dir, assets)
    if args.json:
        print(json.dumps([r.as_dict() for r in results], indent=2))
    else:
        print(doctor.format_results(results))
        failed = sum(r.status == doctor.FAIL for r in results)
        warned = sum(r.status == doctor.WARN for r in results)
        print(f"\n{failed} problem(s), {warned} warning(s)" if failed or warned else "\nall checks passed")
    return doctor.exit_status(results)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="check Docker, cgroups, images, GPUs, disk and config; say how to fix each",
                       description="Check this host and the config the daemon would use. Prints one line per check "
                                   "(OK, WARN or FAIL) and, for each WARN/FAIL, how to fix it. Exit 0 when nothing "
                                   "FAILs, 1 otherwise.")
    add_location_flags(p)
    p.add_argument("--json", action="store_true",
                   help="print a JSON list of {check, status, detail, fix} instead of text")
    p.set_defaults(func=_doctor)
