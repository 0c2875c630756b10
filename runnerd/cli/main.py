"""`runnerd`: the daemon, its operator tools and a client for its API, in one command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from runnerd import __version__
from runnerd.cli import assets_cmd, client_cmds, doctor_cmd, verify_cmd
from runnerd.cli.paths import add_location_flags, resolve
from runnerd.config import ConfigError
from runnerd.containers.capabilities import load_checked

EPILOG = """\
quick start:
  runnerd serve                                  # daemon on 127.0.0.1:8031 with ./environments.yaml
  runnerd assets add data.csv --allow-raw-algorithm
  runnerd submit --dataset did:op:… --algo-file algo.py --wait

Run `runnerd COMMAND --help` for each command's options. Docs: docs/ in the source tree."""


def _serve(args: argparse.Namespace) -> int:
    from runnerd.api.server import serve  # imports aiohttp: only when serving
    from runnerd.logs import configure

    config, data_dir, assets = resolve(args)
    try:
        settings = load_checked(config)
    except ConfigError as exc:
        print(f"runnerd: {exc}", file=sys.stderr)
        return 2
    configure(args.log_level)
    code = 0
    try:
        asyncio.run(serve(settings, data_dir, assets, args.host, args.port))
    except OSError as exc:
        logging.getLogger("runnerd").error("cannot start: %s", exc)
        code = 1
    # Threads still blocked in Docker's `wait` for containers that outlive us (on purpose) would
    # keep the interpreter from exiting; everything is closed by now, so leave at once.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _check_config(args: argparse.Namespace) -> int:
    try:
        settings = load_checked(args.file)
    except ConfigError as exc:
        print(f"runnerd: {exc}", file=sys.stderr)
        return 2
    print(f"{args.file}: ok ({len(settings.environments)} environment(s): "
          f"{', '.join(e.id for e in settings.environments)})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="runnerd", description=__doc__, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"runnerd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the daemon", description=(
        "Run the compute daemon: HTTP API, scheduler and recovery. SIGTERM stops it without "
        "stopping running jobs; the next start re-attaches to them."))
    add_location_flags(serve)
    serve.add_argument("--host", default=os.environ.get("RUNNERD_HOST", "127.0.0.1"),
                       help="listen address (env RUNNERD_HOST; default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=int(os.environ.get("RUNNERD_PORT", "8031")),
                       help="listen port (env RUNNERD_PORT; default 8031)")
    serve.add_argument("--log-level", default=os.environ.get("RUNNERD_LOG_LEVEL", "info"),
                       choices=["debug", "info", "warning", "error"], help="default info")
    serve.set_defaults(func=_serve)

    check = sub.add_parser("check-config", help="validate an environments.yaml (exit 2 naming the bad key)")
    check.add_argument("file", help="the file to check")
    check.set_defaults(func=_check_config)

    doctor_cmd.register(sub)
    assets_cmd.register(sub)
    client_cmds.register(sub)
    verify_cmd.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
