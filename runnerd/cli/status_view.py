"""`runnerd status`: your jobs as a table (as `docker ps` and `nomad status` show theirs), one job
in detail (its fields, status history, termination, results), and `--watch`.

Every value shown is the API's own or computed from it: times from `dateCreated`, `dateFinished`
and `statusHistory`; the queue place from your own jobs and the environment's `queuedJobs`."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING, Any

from runnerd.cli import common
from runnerd.cli.common import COMPLETED, QUEUED, STOPPED, TERMINAL, InputError, date
from runnerd.cli.safe import text
from runnerd.cli.usage_view import usage_text

if TYPE_CHECKING:
    from runnerd.client import Client

WATCH_SECONDS = 2.0
ADMITTED = 10  # "Job started": the job left the queue; its running time counts from here
FILTERS = {
    "queued": lambda s: s == QUEUED,
    "running": lambda s: s not in TERMINAL and s != QUEUED,
    "finished": lambda s: s in TERMINAL,
    "failed": lambda s: s in TERMINAL and s not in (COMPLETED, STOPPED),
}
QUEUE_HELP = ("QUEUE, for a queued job: its place among your own queued jobs of that environment (by "
              "dateCreated) / the jobs queued there in all, yours and others' (the environment's queuedJobs). "
              "Each environment's queue is first come, first served, so the job's real place is at least the "
              "first number and at most the second.")


def ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{int(seconds)}s ago"


def duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def size(value: Any) -> str:
    if not isinstance(value, int) or isinstance(value, bool):
        return text(value)
    amount = float(value)
    for unit in ("B", "kB", "MB", "GB"):
        if amount < 1000 or unit == "GB":
            return f"{value} B" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1000
    return f"{value} B"


def _history(job: dict[str, Any]) -> list[dict[str, Any]]:
    history = job.get("statusHistory")
    return [step for step in history if isinstance(step, dict)] if isinstance(history, list) else []


def running_time(job: dict[str, Any], now: float) -> float | None:
    """Seconds since the job left the queue, until it ended (or now); None if it never left it."""
    started = next((date(s.get("date")) for s in _history(job) if s.get("status") == ADMITTED), None)
    if started is None:
        return None
    end = date(job.get("dateFinished")) or (now if job.get("status") not in TERMINAL else started)
    return end - started


def queue_places(jobs: list[dict[str, Any]], envs: list[dict[str, Any]]) -> dict[str, str]:
    """jobId → "place/total" for each queued job (see QUEUE_HELP)."""
    totals = {e.get("id"): e.get("queuedJobs") for e in envs if isinstance(e, dict)}
    places: dict[str, str] = {}
    counted: dict[Any, int] = {}
    for job in sorted((j for j in jobs if j.get("status") == QUEUED), key=lambda j: date(j.get("dateCreated"))):
        env = job.get("environment")
        counted[env] = counted.get(env, 0) + 1
        total = totals.get(env)
        shown = total if isinstance(total, int) and total >= counted[env] else "?"
        places[str(job.get("jobId"))] = f"{counted[env]}/{shown}"
    return places


def table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def list_view(jobs: list[dict[str, Any]], places: dict[str, str], now: float) -> str:
    rows = [["JOB", "STATUS", "ENV", "CREATED", "DURATION", "QUEUE"]]
    for job in jobs:
        ran = running_time(job, now)
        rows.append([text(job.get("jobId")), f"{text(job.get('status'))} {text(job.get('statusText'))}",
                     text(job.get("environment")), ago(now - date(job.get("dateCreated"))),
                     duration(ran) if ran is not None else "-", places.get(str(job.get("jobId")), "-")])
    return table(rows)


def _when(value: Any, now: float) -> str:
    moment = date(value)
    if not moment:
        return "-"
    return f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(moment))} ({ago(now - moment)})"


def detail_view(job: dict[str, Any], places: dict[str, str], now: float) -> str:
    created = date(job.get("dateCreated"))
    ran = running_time(job, now)
    termination = job.get("terminationDetails")
    algo = job.get("algoDID") or "raw code (algorithm.meta)"
    fields = [
        ("job", text(job.get("jobId"))),
        ("status", f"{text(job.get('status'))} {text(job.get('statusText'))}"),
        ("environment", text(job.get("environment"))),
        ("dataset", text(job.get("documentId"))),
        ("algorithm", text(algo)),
        ("owner", text(job.get("owner"))),
        ("created", _when(job.get("dateCreated"), now)),
        ("finished", _when(job.get("dateFinished"), now)),
        ("duration", duration(ran) if ran is not None else "-"),
    ]
    if str(job.get("jobId")) in places:
        fields.append(("queue", places[str(job.get("jobId"))]))
    if job.get("restartedFrom"):
        fields.append(("restarted from", text(job.get("restartedFrom"))))
    if job.get("error"):
        fields.append(("error", text(job.get("error"))))
    used = usage_text(job.get("usage"))
    if used:  # live while it runs, the final figures once it ended
        fields.append(("usage", used))
    if isinstance(termination, dict) and termination:
        fields.append(("termination", ", ".join(f"{text(k)} {text(v if isinstance(v, str) else json.dumps(v))}"
                                                for k, v in termination.items())))
    out = [f"{label + ':':<16}{value}" for label, value in fields]
    out.append("history:")
    for step in _history(job):
        moment = date(step.get("date"))
        clock = time.strftime("%H:%M:%S", time.localtime(moment)) + f".{int(moment % 1 * 100):02d}"
        since = f"+{moment - created:.2f}s"
        out.append(f"  {clock} {since:>10}  {text(step.get('status')):>3} {text(step.get('statusText'))}")
    results = [r for r in job.get("results") or [] if isinstance(r, dict)]
    if results:
        out.append("results:")
        rows = [["INDEX", "TYPE", "NAME", "SIZE"]] + [
            [text(r.get("index")), text(r.get("type")), text(r.get("filename")), size(r.get("filesize"))]
            for r in results]
        out += ["  " + row for row in table(rows).splitlines()]
    elif job.get("status") in TERMINAL:
        out.append("results:        none")
    return "\n".join(out)


def _select(args: argparse.Namespace, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    wanted = args.status or []
    return [j for j in jobs if (not wanted or any(FILTERS[w](j.get("status")) for w in wanted))
            and (not args.env or j.get("environment") == args.env)]


def _view(client: "Client", args: argparse.Namespace) -> tuple[str, Any, bool]:
    """The text to show, what it depends on (to print off a terminal only when that changes), and
    whether there is nothing left to watch."""
    now = time.time()
    if args.job:
        job = client.job(args.job, signed=False)  # unsigned: no nonce used, no capability URLs
        places: dict[str, str] = {}
        if job.get("status") == QUEUED:
            places = queue_places(client.status(), client.environments())
        key = (job.get("status"), len(_history(job)), places.get(str(job.get("jobId"))),
               usage_text(job.get("usage")))
        return detail_view(job, places, now), key, job.get("status") in TERMINAL
    jobs = client.status()
    places = queue_places(jobs, client.environments()) if any(j.get("status") == QUEUED for j in jobs) else {}
    shown = _select(args, jobs)
    keys = [(j.get("jobId"), j.get("status"), places.get(str(j.get("jobId")))) for j in shown]
    return list_view(shown, places, now), keys, False


def status(args: argparse.Namespace) -> int:
    if args.job and (args.status or args.env):
        raise InputError("--status and --env filter the list of your jobs; drop them to show one job")
    if args.json and args.watch:
        raise InputError("--json and --watch do not go together: a re-drawn view is not one JSON document")
    client = common.client(args)
    if args.json:
        if args.job:
            common.print_json(client.status(args.job))
        else:
            common.print_json(_select(args, client.status()))
        return 0
    if not args.watch:
        print(_view(client, args)[0])
        return 0
    tty, last = sys.stdout.isatty(), None
    try:
        while True:
            view, key, done = _view(client, args)
            if tty:  # re-draw in place, like `watch`
                sys.stdout.write("\x1b[H\x1b[2J" + view + "\n")
                sys.stdout.flush()
            elif key != last:  # off a terminal a new view only when something changed
                print(view + "\n", flush=True)
            last = key
            if done:
                return 0
            time.sleep(WATCH_SECONDS)
    except KeyboardInterrupt:
        if tty:
            print()
        return common.EXIT_INTERRUPTED
