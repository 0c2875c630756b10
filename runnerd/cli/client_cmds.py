"""Client commands: envs, submit, status, logs, get/results, stop, delete: their command lines.

They sign like Ocean clients do, with RUNNERD_PRIVATE_KEY, --key-file or ~/.config/runnerd/client.key
(created on first use). Output is for people; --json prints the API's JSON for scripts. Each
command's code is imported when it runs (`common.lazy`), so that --help and --version stay fast:
submit_cmd and follow (submit --wait), status_view, results_cmd (get, logs), manage_cmd (stop, delete).
"""

from __future__ import annotations

import argparse
import os

from runnerd.cli import common, safe
from runnerd.cli.common import lazy
from runnerd.cli.safe import text

# runnerd.client.DEFAULT_URL, written out: importing runnerd.client brings httpx (tests check they agree)
DEFAULT_URL = "http://127.0.0.1:8031"


def envs(args: argparse.Namespace) -> int:
    found = common.client(args).environments()
    if args.json:
        common.print_json(found)
        return 0
    for e in found:
        n = {k: safe.number(e.get(k)) for k in ("cpuNumber", "ramGB", "diskGB", "gpuNumber", "currentJobs",
                                                  "maxJobs", "queuedJobs", "maxJobDuration")}
        print(f"{text(e.get('id')):<20} {n['cpuNumber']} CPU  {n['ramGB']} GB RAM  {n['diskGB']} GB disk  "
              f"{n['gpuNumber']} GPU  running {n['currentJobs']}/{n['maxJobs']}  queued {n['queuedJobs']}  "
              f"max {n['maxJobDuration']}s  {text(e.get('desc', ''))}")
    return 0


def _parser(sub: argparse._SubParsersAction, name: str, parents: list, help: str, description: str = "",
            epilog: str = "") -> argparse.ArgumentParser:
    return sub.add_parser(name, parents=parents, help=help, description=description or help, epilog=epilog)


def register(sub: argparse._SubParsersAction) -> None:
    common_flags = argparse.ArgumentParser(add_help=False)
    common_flags.add_argument("--url", default=os.environ.get("RUNNERD_URL", DEFAULT_URL),
                              help=f"daemon URL (env RUNNERD_URL; default {DEFAULT_URL})")
    common_flags.add_argument("--key-file", default=None,
                              help="signing key file (default: $RUNNERD_PRIVATE_KEY, else the file "
                                   "$RUNNERD_KEY_FILE, else ~/.config/runnerd/client.key, created on first use)")
    common_flags.add_argument("--json", action="store_true", help="print the API's JSON (one document on stdout)")
    parents = [common_flags]

    p = _parser(sub, "envs", parents, "list compute environments")
    p.set_defaults(func=lazy("runnerd.cli.client_cmds", "envs"))

    p = _parser(sub, "submit", parents, "start a job (and with --wait, follow it and fetch results)",
                "Start a job and print its id on stdout (JOB=$(runnerd submit …)). With --wait, follow it on "
                "stderr: each stage with the time it was reached, the algorithm's log live under the "
                "\"Running algorithm\" stage (lines prefixed with '  | '), a heartbeat while nothing happens; "
                "then save its results. Exit 0 only if the job ended at 70; on a failure the end of the log, "
                "the reason and what to do next are printed, and the exit status is 1.")
    p.add_argument("--dataset", required=True, metavar="DID", help="dataset DID (runnerd assets add prints it)")
    p.add_argument("--service", default="compute", help="the dataset's compute service id (default compute)")
    p.add_argument("--algo", metavar="DID", help="a registered algorithm's DID")
    p.add_argument("--algo-service", default="access")
    p.add_argument("--algo-file", metavar="FILE", help="send this file as raw code (algorithm.meta.rawcode)")
    p.add_argument("--algo-url", metavar="URL", help="algorithm code to download (algorithm.meta.url)")
    p.add_argument("--image", default="python:3.12-slim", help="image[:tag] for --algo-file/--algo-url")
    p.add_argument("--entrypoint", default="python3 $ALGO", help="$ALGO is the code's path (default python3 $ALGO)")
    p.add_argument("--checksum", default="", help="sha256:<digest> to pin the image")
    p.add_argument("--env", default="", help="environment id (default: the first one)")
    p.add_argument("--custom-data", metavar="JSON|@FILE", help="algocustomdata (/data/inputs/algoCustomData.json)")
    p.add_argument("--wait", action="store_true",
                   help="follow the job's stages and its log live (on stderr), then download its results")
    p.add_argument("--quiet", action="store_true", help="with --wait: the stages only, not the algorithm's log")
    p.add_argument("--output", metavar="DIR", help="where --wait saves results (default runnerd-results/<jobId>)")
    p.set_defaults(func=lazy("runnerd.cli.submit_cmd", "submit"))

    from runnerd.cli.status_view import QUEUE_HELP  # light: no client, no httpx

    p = _parser(sub, "status", parents, "show your jobs (a table), or one job in detail",
                "Without JOB: a table of your jobs, oldest first: JOB, STATUS (code and text), ENV, CREATED, "
                "DURATION (since the job left the queue: so far, or in all once it ended) and QUEUE. With "
                "JOB: its fields, its status history with the time of each stage, how it ended, its error "
                "and its results (index, type, name, size).", QUEUE_HELP)
    p.add_argument("job", nargs="?", help="job id (default: all your jobs)")
    p.add_argument("--status", action="append", choices=sorted(FILTERS_HELP), metavar="STATE",
                   help="only jobs that are: " + "; ".join(f"{k} ({v})" for k, v in FILTERS_HELP.items())
                        + " (repeat to combine)")
    p.add_argument("--env", metavar="ID", help="only jobs of this environment")
    p.add_argument("--watch", action="store_true",
                   help=f"re-draw every {WATCH}s until Ctrl-C, or until JOB has ended (off a terminal: a new "
                        "view each time something changed)")
    p.set_defaults(func=lazy("runnerd.cli.status_view", "status"))

    p = _parser(sub, "logs", parents, "print a job's algorithm log; -f follows it live")
    p.add_argument("job")
    p.add_argument("-f", "--follow", action="store_true", help="keep streaming until the job ends")
    p.set_defaults(func=lazy("runnerd.cli.results_cmd", "logs"))

    for name in ("get", "results"):
        p = _parser(sub, name, parents, "download a job's results (progress bar on stderr)")
        p.add_argument("job")
        p.add_argument("--index", type=int, default=None, help="only this result")
        p.add_argument("--output", metavar="DIR", help="default runnerd-results/<jobId>")
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        p.set_defaults(func=lazy("runnerd.cli.results_cmd", "get"))

    for name, help, func in (
            ("stop", "stop jobs (a running algorithm is killed; logs and partial outputs are kept)", "stop"),
            ("delete", "stop jobs if needed, then delete them and all their files", "delete")):
        p = _parser(sub, name, parents, help,
                    f"{help[0].upper()}{help[1:]}. Give one or more job ids, or --all for every job of your "
                    f"address: --all asks you to type yes on a terminal, and off a terminal (a script) "
                    f"needs --yes, or nothing is done (exit 2).")
        p.add_argument("job", nargs="*", help="job ids")
        p.add_argument("--all", action="store_true", help="every job of your address (asks first)")
        p.add_argument("--yes", action="store_true", help="with --all: do not ask")
        p.set_defaults(func=lazy("runnerd.cli.manage_cmd", func))


FILTERS_HELP = {"queued": "status 1", "running": "left the queue, not ended", "finished": "ended, however",
                "failed": "ended in a failure: 31, 32, 71-76"}
WATCH = 2
