"""What the web console shows, as one JSON object: built from the engine's live slots and one
bounded store read (store/console.py). Only the fields listed here ever reach the page: no
results, logs, custom data, spec, algorithm code or dataset locations."""

from __future__ import annotations

import math
import time
from typing import Any

from runnerd import __version__
from runnerd.config import Settings
from runnerd.domain import JobStatus
from runnerd.engine.service import Engine
from runnerd.store.console import ConsoleJob

HOUR = 3600
BUCKET = 60  # one chart bar a minute
JOBS_SHOWN = 200
FAILURES_SHOWN = 20


def short_address(address: str) -> str:
    """0x1234…abcd: enough to tell owners apart at a glance."""
    return f"{address[:6]}…{address[-4:]}" if len(address) > 12 else address


def _job(j: ConsoleJob, now: float) -> dict[str, Any]:
    left = j.left_queue
    end = j.finished or now
    return {
        "jobId": j.job_id,
        "owner": short_address(j.owner),
        "environment": j.environment,
        "status": int(j.status),
        "statusText": j.status.text,
        "terminal": j.status.terminal,
        "dateCreated": j.created,
        "dateFinished": j.finished,
        "queuedSeconds": round((left or end) - j.created, 1),
        "runSeconds": None if left is None else round(end - left, 1),
        "error": j.error if j.status.terminal and j.status != JobStatus.COMPLETED else None,
        "statusHistory": [{"status": s, "statusText": JobStatus(s).text, "date": t} for s, t in j.history],
    }


def _environments(settings: Settings, engine: Engine, jobs: list[ConsoleJob]) -> list[dict[str, Any]]:
    live = list(engine.scheduler.live.values()) if engine is not None else []
    out = []
    for env in settings.environments:
        mine = [j for j in live if j.environment == env.id]
        # pinned cores count as held; an unpinned job (fractional nCPU) uses its nCPU share
        cores = sum(len(j.slot.cpuset.split(",")) if j.slot.cpuset else env.nCPU for j in mine)
        out.append({
            "id": env.id,
            "description": env.description,
            "running": len(mine),
            "maxJobs": env.maxJobs,
            "queued": sum(1 for j in jobs if j.environment == env.id and j.status == JobStatus.QUEUED),
            "maxQueue": env.maxQueue,
            "coresInUse": round(cores, 2),
            "cores": round(env.nCPU * env.maxJobs, 2),
            "gpusInUse": sorted(g for j in mine for g in j.slot.gpus),
            "gpus": list(env.gpus),
        })
    return out


def _charts(jobs: list[ConsoleJob], now: float) -> dict[str, Any]:
    """Per minute of the last hour: jobs finished (completed vs failed) and the queue length at
    the minute's end (from each job's created time and the time it left the queue)."""
    start = now - HOUR
    n = HOUR // BUCKET
    completed, failed, queue = [0] * n, [0] * n, [0] * n
    for j in jobs:
        if j.finished is not None and j.finished >= start:
            i = min(int((j.finished - start) // BUCKET), n - 1)
            (completed if j.status == JobStatus.COMPLETED else failed)[i] += 1
        # queued at the end of minute i (t = start + (i+1)*BUCKET) iff created <= t < left
        left = j.left_queue or j.finished
        lo = max(0, math.ceil((j.created - start) / BUCKET) - 1)
        hi = n if left is None else min(n, math.ceil((left - start) / BUCKET - 1))
        for i in range(lo, hi):
            queue[i] += 1
    return {"start": start, "bucketSeconds": BUCKET, "completed": completed, "failed": failed, "queue": queue}


def build_state(settings: Settings, engine: Engine, address: str, jobs: list[ConsoleJob], cut: bool,
                now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    failures = [j for j in jobs if j.status.terminal and j.status != JobStatus.COMPLETED][:FAILURES_SHOWN]
    return {
        "node": {"address": address, "version": __version__, "now": now,
                 "docker": "up" if engine is None or engine.docker_up else "down"},
        "environments": _environments(settings, engine, jobs),
        # in flight first (running before queued), then the most recent
        "jobs": [_job(j, now) for j in sorted(jobs, key=lambda j: (j.status.terminal, -j.created))[:JOBS_SHOWN]],
        "failures": [_job(j, now) for j in failures],
        "charts": _charts(jobs, now),
        "truncated": cut,
    }
