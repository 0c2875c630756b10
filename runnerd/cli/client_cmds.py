"""Client commands: envs, submit, status, logs, get/results, stop, delete.

They sign like Ocean clients do, with RUNNERD_PRIVATE_KEY, --key-file or ~/.config/runnerd/client.key
(created on first use). Output is for people; --json prints the API's JSON for scripts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from runnerd import domain, imageref
from runnerd.cli import safe
from runnerd.cli.safe import text
from runnerd.client import DEFAULT_URL, ApiError, Client, default_key_file, load_key

TERMINAL = {int(s) for s in domain.TERMINAL}  # the daemon's own list, as numbers


# Exit statuses: 0 done (for submit --wait: the job completed), 1 the job or the daemon said no,
# 2 a mistake in what was typed (fix the command), 3 the daemon cannot be reached.
EXIT_INPUT, EXIT_UNREACHABLE = 2, 3


class InputError(Exception):
    """A mistake in the command line or a file it names: one line, how to fix it, exit 2."""


def _client(args: argparse.Namespace) -> Client:
    default = default_key_file()
    silent = args.key_file or os.environ.get("RUNNERD_PRIVATE_KEY") or os.environ.get("RUNNERD_KEY_FILE")
    created = not silent and not default.exists()
    try:
        client = Client(args.url, load_key(key_file=args.key_file))
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
        print(f"runnerd: created a signing key for you in {default} (address {client.address}); your jobs belong "
              f"to that address: keep the file, and back it up, or you lose access to their results",
              file=sys.stderr)
    return client


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def _line(job: dict[str, Any]) -> str:
    """One job for people. Every field is the server's, so each is made printable first."""
    extra = f"  error: {text(job['error'])}" if job.get("error") else ""
    return (f"{text(job.get('jobId'))}  {text(job.get('status')):>3} {text(job.get('statusText')):<30} "
            f"{text(job.get('environment'))}{extra}")


def _envs(args: argparse.Namespace) -> int:
    envs = _client(args).environments()
    if args.json:
        _print_json(envs)
        return 0
    for e in envs:
        n = {k: safe.number(e.get(k)) for k in ("cpuNumber", "ramGB", "diskGB", "gpuNumber", "currentJobs",
                                                  "maxJobs", "queuedJobs", "maxJobDuration")}
        print(f"{text(e.get('id')):<20} {n['cpuNumber']} CPU  {n['ramGB']} GB RAM  {n['diskGB']} GB disk  "
              f"{n['gpuNumber']} GPU  running {n['currentJobs']}/{n['maxJobs']}  queued {n['queuedJobs']}  "
              f"max {n['maxJobDuration']}s  {text(e.get('desc', ''))}")
    return 0


def _algorithm(args: argparse.Namespace) -> dict[str, Any]:
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
        algo = {"meta": {"rawcode": _read("--algo-file", args.algo_file), "container": container}}
    elif args.algo_url:
        algo = {"meta": {"url": args.algo_url, "container": container}}
    else:
        raise InputError("give the algorithm with --algo DID, --algo-file FILE or --algo-url URL")
    if args.custom_data:
        algo["algocustomdata"] = _custom_data(args.custom_data)
    return algo


def _read(flag: str, path: str) -> str:
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


def _custom_data(value: str) -> Any:
    """--custom-data JSON or @FILE: a JSON document, checked here so a typo is one line, not a job."""
    source = "--custom-data"
    if value.startswith("@"):
        source = f"--custom-data file {value[1:]}"
        value = _read("--custom-data", value[1:])
    try:
        return json.loads(value)
    except ValueError as exc:
        raise InputError(f"{source} is not JSON ({exc.args[0].split(':')[0].lower()}); quote keys and strings, e.g. "
                         f"--custom-data '{{\"delimiter\": \";\"}}', or give @file.json") from None


def _wait(client: Client, job: dict[str, Any], quiet: bool) -> dict[str, Any]:
    """Follow a job through its stages, printing each with the time it was reached (the daemon
    records them, so a stage shorter than the poll interval is still shown, with its real time)."""
    shown, delay = 0, 0.1
    job_id = safe.job_id(job.get("jobId"))
    created = _date(job.get("dateCreated"))
    while True:
        history = job.get("statusHistory") or [{"status": job["status"], "statusText": job["statusText"],
                                                "date": job["dateCreated"]}]
        for step in history[shown:]:
            if not quiet:
                print(f"[{_date(step.get('date')) - created:6.2f}s] {text(step.get('status')):>3} "
                      f"{text(step.get('statusText'))}", file=sys.stderr)
        shown = len(history)
        if job["status"] in TERMINAL:
            return job
        time.sleep(delay)
        delay = min(delay * 1.5, 1.0)
        job = client.job(job_id, signed=False)  # no signature to leak while polling; results listed


def _date(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def _results_folder(output: str | None, job_id: str) -> Path:
    return Path(output) if output else Path("runnerd-results") / safe.job_id(job_id)


def _download(client: Client, job: dict[str, Any], folder: Path, only: int | None = None,
              quiet: bool = False) -> list[Path]:
    from tqdm import tqdm

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


def _submit(args: argparse.Namespace) -> int:
    algorithm = _algorithm(args)  # every local mistake before the daemon is asked anything
    client = _client(args)
    env = args.env or client.environments()[0]["id"]
    job = client.start(args.dataset, algorithm, env, service_id=args.service)
    job_id = safe.job_id(job.get("jobId"))
    if not args.json:  # with --json, stdout is one JSON document and nothing else (for jq)
        print(job_id)
    if not args.wait:
        if args.json:
            _print_json(job)
        return 0
    job = _wait(client, job, args.json)
    folder = _results_folder(args.output, job_id)
    saved = _download(client, job, folder, quiet=args.json)
    if args.json:
        _print_json({**job, "saved": [str(path) for path in saved]})
    else:
        print(_line(job), file=sys.stderr)
        for path in saved:
            print(f"  saved {text(path)}", file=sys.stderr)
    return 0 if job["status"] == 70 else 1


def _status(args: argparse.Namespace) -> int:
    jobs = _client(args).status(args.job or "")
    if args.json:
        _print_json(jobs)
    for job in ([] if args.json else jobs):
        print(_line(job))
    return 0


def _get(args: argparse.Namespace) -> int:
    if args.index is not None and args.index < 0:
        raise InputError(f"--index {args.index}: result indexes start at 0 (`runnerd status JOB --json` lists them)")
    client = _client(args)
    job = client.job(args.job)
    if job.get("status") not in TERMINAL:
        print(f"runnerd: job {text(args.job)} has not finished (status {text(job.get('status'))} "
              f"{text(job.get('statusText'))}): its results are published when it ends; wait with "
              f"`runnerd status {text(args.job)}` and run `get` again", file=sys.stderr)
        return 1
    indexes = [r.get("index") for r in job.get("results") or [] if isinstance(r, dict)]
    if args.index is not None and args.index not in indexes:
        raise InputError(f"job {text(args.job)} has no result {args.index}; its results are "
                         f"{', '.join(text(i) for i in indexes) or 'none'} (`runnerd status {text(args.job)} --json`)")
    if not indexes:
        print(f"runnerd: job {text(args.job)} published no results ({text(job.get('statusText'))})", file=sys.stderr)
        return 1
    folder = _results_folder(args.output, job.get("jobId"))
    saved = _download(client, job, folder, args.index, args.quiet or args.json)
    if args.json:
        _print_json([str(path) for path in saved])
    for path in ([] if args.json else saved):
        print(text(path))
    return 0


def _logs(args: argparse.Namespace) -> int:
    if args.json and args.follow:
        raise InputError("--json and -f do not go together: a live log is not one JSON document (drop one)")
    client = _client(args)
    with client.log_stream(args.job, follow=args.follow) as response:
        if response.status_code >= 400:
            response.read()
            raise ApiError(response.status_code, response.json())
        if args.json:
            _print_json({"jobId": args.job, "log": response.read().decode("utf-8", "replace")})
            return 0
        try:
            for chunk in response.iter_raw():
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
        except BrokenPipeError:  # `runnerd logs -f JOB | head`: the reader has had enough
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _stop(args: argparse.Namespace) -> int:
    jobs = _client(args).stop(args.job)
    if args.json:
        _print_json(jobs)
    for job in ([] if args.json else jobs):
        print(_line(job))
    return 0


def _delete(args: argparse.Namespace) -> int:
    jobs = _client(args).delete(args.job)
    if args.json:
        _print_json(jobs)
    for job in ([] if args.json else jobs):
        print(_line(job))
    return 0


def _guard(func):
    def run(args: argparse.Namespace) -> int:
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


def register(sub: argparse._SubParsersAction) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=os.environ.get("RUNNERD_URL", DEFAULT_URL),
                        help=f"daemon URL (env RUNNERD_URL; default {DEFAULT_URL})")
    common.add_argument("--key-file", default=None,
                        help="signing key file (default: $RUNNERD_PRIVATE_KEY, else the file $RUNNERD_KEY_FILE, "
                             "else ~/.config/runnerd/client.key, created on first use)")
    common.add_argument("--json", action="store_true", help="print the API's JSON")

    p = sub.add_parser("envs", parents=[common], help="list compute environments")
    p.set_defaults(func=_guard(_envs))

    p = sub.add_parser("submit", parents=[common], help="start a job (and with --wait, follow it and fetch results)")
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
    p.add_argument("--wait", action="store_true", help="follow the job's stages and download its results")
    p.add_argument("--output", metavar="DIR", help="where --wait saves results (default runnerd-results/<jobId>)")
    p.set_defaults(func=_guard(_submit))

    p = sub.add_parser("status", parents=[common], help="show your jobs (or one)")
    p.add_argument("job", nargs="?", help="job id (default: all your jobs)")
    p.set_defaults(func=_guard(_status))

    p = sub.add_parser("logs", parents=[common], help="print a job's algorithm log; -f follows it live")
    p.add_argument("job")
    p.add_argument("-f", "--follow", action="store_true", help="keep streaming until the job ends")
    p.set_defaults(func=_guard(_logs))

    for name in ("get", "results"):
        p = sub.add_parser(name, parents=[common], help="download a job's results (progress bar on stderr)")
        p.add_argument("job")
        p.add_argument("--index", type=int, default=None, help="only this result")
        p.add_argument("--output", metavar="DIR", help="default runnerd-results/<jobId>")
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        p.set_defaults(func=_guard(_get))

    p = sub.add_parser("stop", parents=[common], help="stop a job (logs and partial outputs are kept)")
    p.add_argument("job")
    p.set_defaults(func=_guard(_stop))

    p = sub.add_parser("delete", parents=[common], help="stop if needed, then delete a job and all its files")
    p.add_argument("job")
    p.set_defaults(func=_guard(_delete))
