"""What every client command shares: the signing client, exit statuses, one-line errors, and the
one-line view of a job. Heavy modules (httpx, the client) are imported when a command runs, so
that `runnerd --help` and `--version` start fast."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING, Any, Callable

from runnerd import domain
from runnerd.cli.safe import text

if TYPE_CHECKING:
    from runnerd.client import Client

# The daemon's own statuses (domain.py), as the numbers the API sends.
S = domain.JobStatus
TERMINAL = {int(s) for s in domain.TERMINAL}
COMPLETED, STOPPED, QUEUED, RUNNING = int(S.COMPLETED), int(S.STOPPED), int(S.QUEUED), int(S.RUNNING)

# Exit statuses: 0 done (for submit --wait: the job completed), 1 the job or the daemon said no,
# 2 a mistake in what was typed (fix the command), 3 the daemon cannot be reached, 130 Ctrl-C.
EXIT_INPUT, EXIT_UNREACHABLE, EXIT_INTERRUPTED = 2, 3, 130


class InputError(Exception):
    """A mistake in the command line or a file it names: one line, how to fix it, exit 2."""


def client(args: argparse.Namespace) -> "Client":
    from runnerd.client import Client, default_key_file, load_key

    default = default_key_file()
    silent = args.key_file or os.environ.get("RUNNERD_PRIVATE_KEY") or os.environ.get("RUNNERD_KEY_FILE")
    created = not silent and not default.exists()
    try:
        made = Client(args.url, load_key(key_file=args.key_file))
    except FileNotFoundError as exc:
        raise InputError(f"the key file {exc.filename} does not exist (give an existing --key-file, or set "
                         f"RUNNERD_PRIVATE_KEY=0x<64 hex digits>)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the key file: {exc}") from None
    except ValueError:
        where = f"the key file {args.key_file}" if args.key_file else (
            "RUNNERD_PRIVATE_KEY" if os.environ.get("RUNNERD_PRIVATE_KEY") else "the key file")
        raise InputError(f"{where} does not hold a private key: expected 0x followed by 64 hex digits") from None
    if created:
        print(f"runnerd: created a signing key for you in {default} (address {made.address}); your jobs belong "
              f"to that address: keep the file, and back it up, or you lose access to their results",
              file=sys.stderr)
    return made


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def line(job: dict[str, Any]) -> str:
    """One job for people. Every field is the server's, so each is made printable first."""
    extra = f"  error: {text(job['error'])}" if job.get("error") else ""
    return (f"{text(job.get('jobId'))}  {text(job.get('status')):>3} {text(job.get('statusText')):<30} "
            f"{text(job.get('environment'))}{extra}")


def date(value: Any) -> float:
    """A date of the status object (seconds since the epoch, as a string), 0.0 if it is not one."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def guard(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Every failure a user can meet as one `runnerd: …` line with its exit status."""
    def run(args: argparse.Namespace) -> int:
        import httpx

        from runnerd.client import ApiError

        try:
            return func(args)
        except InputError as exc:
            print(f"runnerd: {text(exc)}", file=sys.stderr)
            return EXIT_INPUT
        except ApiError as exc:
            print(f"runnerd: {text(exc)}", file=sys.stderr)
            return 1
        except httpx.HTTPError as exc:
            print(f"runnerd: cannot reach {text(args.url)}: {text(exc)} (is `runnerd serve` running? --url / "
                  "RUNNERD_URL)", file=sys.stderr)
            return EXIT_UNREACHABLE
    return run


def lazy(module: str, name: str) -> Callable[[argparse.Namespace], int]:
    """A command's handler, imported only when that command runs."""
    def run(args: argparse.Namespace) -> int:
        import importlib

        return guard(getattr(importlib.import_module(module), name))(args)
    return run
