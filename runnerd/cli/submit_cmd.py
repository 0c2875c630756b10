"""`runnerd submit`: build the start request from the command line (every local mistake is one
line before the daemon is asked anything), start the job, and with --wait follow it and fetch
its results."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from runnerd import imageref
from runnerd.cli import common, follow, safe
from runnerd.cli.common import InputError
from runnerd.cli.results_cmd import download, results_folder
from runnerd.cli.safe import text


def algorithm(args: argparse.Namespace) -> dict[str, Any]:
    try:
        ref = imageref.parse(args.image)
    except ValueError as exc:
        raise InputError(f"--image {args.image!r} is not an image reference: {exc}") from None
    container = {"image": ref.name, "tag": ref.tag or "latest", "entrypoint": args.entrypoint,
                 "checksum": args.checksum or ref.digest}
    algo: dict[str, Any]
    if args.algo:
        algo = {"documentId": args.algo, "serviceId": args.algo_service, "transferTxId": "0x" + "0" * 64}
    elif args.algo_file:
        algo = {"meta": {"rawcode": read("--algo-file", args.algo_file), "container": container}}
    elif args.algo_url:
        algo = {"meta": {"url": args.algo_url, "container": container}}
    else:
        raise InputError("give the algorithm with --algo DID, --algo-file FILE or --algo-url URL")
    if args.custom_data:
        algo["algocustomdata"] = custom_data(args.custom_data)
    return algo


def read(flag: str, path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{flag} {path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{flag} {path} is a folder; give a file") from None
    except UnicodeDecodeError:
        raise InputError(f"{flag} {path} is not UTF-8 text") from None
    except OSError as exc:
        raise InputError(f"{flag} {path}: {exc.strerror}") from None


def custom_data(value: str) -> Any:
    """--custom-data JSON or @FILE: a JSON document, checked here so a typo is one line, not a job."""
    source = "--custom-data"
    if value.startswith("@"):
        source = f"--custom-data file {value[1:]}"
        value = read("--custom-data", value[1:])
    try:
        return json.loads(value)
    except ValueError as exc:
        raise InputError(f"{source} is not JSON ({exc.args[0].split(':')[0].lower()}); quote keys and strings, e.g. "
                         f"--custom-data '{{\"delimiter\": \";\"}}', or give @file.json") from None


def submit(args: argparse.Namespace) -> int:
    algo = algorithm(args)  # every local mistake before the daemon is asked anything
    client = common.client(args)
    env = args.env or client.environments()[0]["id"]
    job = client.start(args.dataset, algo, env, service_id=args.service)
    job_id = safe.job_id(job.get("jobId"))
    if not args.json:  # with --json, stdout is one JSON document and nothing else (for jq)
        print(job_id, flush=True)
    if not args.wait:
        if args.json:
            common.print_json(job)
        return 0
    folder = results_folder(args.output, job_id)
    try:
        job, streamed = follow.wait(client, job, silent=args.json, logs=not (args.quiet or args.json))
    except KeyboardInterrupt:
        print(f"\nrunnerd: stopped following; job {job_id} goes on (`runnerd status {job_id}`, "
              f"`runnerd stop {job_id}`)", file=sys.stderr)
        return common.EXIT_INTERRUPTED
    saved = download(client, job, folder, quiet=args.json)
    if args.json:
        common.print_json({**job, "saved": [str(path) for path in saved]})
        return 0 if job["status"] == common.COMPLETED else 1
    print(common.line(job), file=sys.stderr)
    for path in saved:
        print(f"  saved {text(path)}", file=sys.stderr)
    if job["status"] != common.COMPLETED:
        follow.explain_failure(client, job, folder, streamed, saved)
        return 1
    return 0
