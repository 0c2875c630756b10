"""Who may read a job in this dialect: its owner, and the additionalViewers it was started with."""

from __future__ import annotations

from aiohttp import web

from runnerd.api.keys import STORE
from runnerd.domain import Job
from runnerd.errors import NotFound


def may_read(job: Job, address: str) -> bool:
    return job.owner.lower() == address.lower() or address.lower() in job.terms.viewers


async def readable_job(request: web.Request, job_id: str, address: str) -> Job:
    job = await request.app[STORE].get(job_id)
    if job is None or not may_read(job, address):  # unknown and not-yours look the same
        raise NotFound(f"no job {job_id} belongs to {address}", "not_found", "jobId")
    return job


async def jobs_for(request: web.Request, address: str) -> list[Job]:
    return await request.app[STORE].list_for_owner(address)
