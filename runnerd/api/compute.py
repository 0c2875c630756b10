"""/api/services/compute: start (POST), status (GET), stop (PUT), delete (DELETE)."""

from __future__ import annotations

from aiohttp import web

from runnerd.api.keys import ENGINE, SETTINGS, STORE, VIEW, base_url
from runnerd.api.params import authenticate, consumer, read_params, text
from runnerd.domain import Job, JobStatus
from runnerd.errors import BadRequest, NotFound


async def start_job(request: web.Request) -> web.Response:
    params = await read_params(request)
    dataset = params.get("dataset")
    if not isinstance(dataset, dict):
        raise BadRequest("dataset must be an object {documentId, serviceId, transferTxId}", "missing", "dataset")
    document_id = text(dataset, "documentId")
    owner = await authenticate(request.app[STORE], params, [text(params, "consumerAddress"), document_id])
    job = await request.app[ENGINE].submit(params, owner)
    return web.json_response([request.app[VIEW].render(job, base_url(request))])


async def _callers_jobs(request: web.Request, signed: bool = True) -> tuple[list[Job], bool]:
    """The caller's jobs (filtered by jobId/documentId) and whether the request was signed."""
    params = await read_params(request)
    job_id, document_id = text(params, "jobId", limit=64), text(params, "documentId")
    authenticated = signed or bool(params.get("signature"))
    if authenticated:
        owner = await authenticate(request.app[STORE], params, [text(params, "consumerAddress"), job_id, document_id])
    else:
        owner = consumer(params)
    jobs = await request.app[STORE].list_for_owner(owner, job_id, document_id)
    if (job_id or document_id) and not jobs:
        # Unknown and not-yours look the same: never reveal another owner's jobs.
        raise NotFound(f"no job {job_id or 'for ' + document_id} belongs to {owner}", "not_found",
                       "jobId" if job_id else "documentId")
    return jobs, authenticated


async def job_status(request: web.Request) -> web.Response:
    jobs, signed = await _callers_jobs(request, signed=not request.app[SETTINGS].unsignedStatus)
    base = base_url(request)
    return web.json_response([request.app[VIEW].render(j, base, urls=signed) for j in jobs])


async def stop_jobs(request: web.Request) -> web.Response:
    jobs, _ = await _callers_jobs(request)
    engine, store = request.app[ENGINE], request.app[STORE]
    for job in jobs:
        if not job.terminal:
            await engine.stop(job.job_id)
    base = base_url(request)
    fresh = [await store.get(j.job_id) or j for j in jobs]
    return web.json_response([request.app[VIEW].render(j, base) for j in fresh])


async def delete_jobs(request: web.Request) -> web.Response:
    jobs, _ = await _callers_jobs(request)
    engine = request.app[ENGINE]
    base = base_url(request)
    out = []
    for job in jobs:
        await engine.delete(job.job_id)
        job.results, job.removed = [], 1  # what is left of it: nothing
        out.append(request.app[VIEW].render(job, base, status=JobStatus.DELETED))
    return web.json_response(out)
