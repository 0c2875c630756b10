"""/api/services/compute: start or restart (POST), status (GET), stop (PUT), delete (DELETE).

Which texts each may be signed over is in api/auth.py (SPEC §2 "What real clients send").
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from runnerd import signing
from runnerd.api import auth
from runnerd.api.keys import ENGINE, SETTINGS, STORE, VIEW, base_url
from runnerd.api.params import consumer, read_params, text
from runnerd.domain import Job, JobStatus
from runnerd.errors import BadRequest, NotFound


def _not_found(owner: str, job_id: str, document_id: str) -> NotFound:
    # Unknown and not-yours look the same: never reveal another owner's jobs.
    return NotFound(f"no job {job_id or 'for ' + document_id} belongs to {owner}", "not_found",
                    "jobId" if job_id else "documentId")


async def start_job(request: web.Request) -> web.Response:
    params = await read_params(request)
    dataset = params.get("dataset")
    job_id = text(params, "jobId", limit=64)
    if job_id:
        return await _restart(request, params, job_id)
    if not isinstance(dataset, dict):
        raise BadRequest("dataset must be an object {documentId, serviceId, transferTxId}", "missing", "dataset")
    document_id = text(dataset, "documentId")
    owner = await auth.authenticate(request.app[STORE], params, [[text(params, "consumerAddress"), document_id]])
    job = await request.app[ENGINE].submit(params, owner)
    return web.json_response([request.app[VIEW].render(job, base_url(request))])


async def _restart(request: web.Request, params: dict[str, Any], job_id: str) -> web.Response:
    """POST with the jobId of a stopped or failed job: the same inputs, algorithm and environment
    again, as a new job. Signed like any start (`consumerAddress + dataset.documentId + nonce`,
    the documentId being the original job's), or over runnerd's own `computeRestart` text."""
    store, address = request.app[STORE], consumer(params)
    dataset = params.get("dataset")
    sent_did = text(dataset if isinstance(dataset, dict) else {}, "documentId")
    found = await store.list_for_owner(address, job_id)
    old = found[0] if found else None
    did = old.document_id if old is not None else sent_did
    owner = await auth.authenticate(store, params, [[address, did],
                                                    signing.own_text("computeRestart", [address, job_id])])
    if old is None:
        raise _not_found(owner, job_id, "")
    if sent_did and sent_did != old.document_id:
        raise BadRequest(f"job {job_id} ran on {old.document_id}, not {sent_did}; a restart runs the same inputs",
                         "invalid", "dataset.documentId")
    job = await request.app[ENGINE].submit(params, owner, restart_of=old)
    return web.json_response([request.app[VIEW].render(job, base_url(request))])


async def _jobs(request: web.Request, owner: str, job_id: str, document_id: str) -> list[Job]:
    jobs = await request.app[STORE].list_for_owner(owner, job_id, document_id)
    if (job_id or document_id) and not jobs:
        raise _not_found(owner, job_id, document_id)
    return jobs


async def job_status(request: web.Request) -> web.Response:
    """Signed: consumes a nonce, answers with capability URLs. Unsigned: allowed when it names a
    jobId (a 128-bit secret only its owner was given; a wrong owner gets 404), or for any read
    with `unsignedStatus: true`; such an answer carries no capability URLs, since the jobId also
    travels in URLs and logs."""
    params = await read_params(request)
    job_id, document_id = text(params, "jobId", limit=64), text(params, "documentId")
    signed = bool(params.get("signature")) or not (job_id or request.app[SETTINGS].unsignedStatus)
    if signed:
        address = text(params, "consumerAddress")
        owner = await auth.authenticate(request.app[STORE], params,
                                        auth.texts_for("computeStatus", address, job_id, document_id, read=True))
    else:
        owner = consumer(params)
    jobs = await _jobs(request, owner, job_id, document_id)
    base = base_url(request)
    return web.json_response([request.app[VIEW].render(j, base, urls=signed) for j in jobs])


async def stop_jobs(request: web.Request) -> web.Response:
    """A stop of one named job may also be signed `consumerAddress + jobId` without a nonce
    (ocean.js >= 3.3.3): stopping is idempotent and cannot be undone, so a replay changes nothing.
    A stop of every job (no jobId) needs runnerd's own `computeStop` text and a nonce."""
    params = await read_params(request)
    job_id, document_id = text(params, "jobId", limit=64), text(params, "documentId")
    address = text(params, "consumerAddress")
    nonce_free = [[address, job_id]] if job_id else None
    owner = await auth.authenticate(request.app[STORE], params,
                                    auth.texts_for("computeStop", address, job_id, document_id),
                                    nonce_free=nonce_free)
    # A nonce-free stop can be replayed by anyone who saw it, at any time: like an unsigned status
    # read, its answer carries no capability URLs.
    urls = not auth.signed_nonce_free(params, nonce_free)
    jobs = await _jobs(request, owner, job_id, document_id)
    engine, store = request.app[ENGINE], request.app[STORE]
    await engine.stop_and_wait([j.job_id for j in jobs if not j.terminal], request.app[SETTINGS].stopWaitSeconds)
    base = base_url(request)
    fresh = [await store.get(j.job_id) or j for j in jobs]
    return web.json_response([request.app[VIEW].render(j, base, urls=urls) for j in fresh])


async def delete_jobs(request: web.Request) -> web.Response:
    """Without a nonce (ocean.js 3.x), the nonce is taken as the stored one + 1 and claimed the
    same way. A delete of every job (no jobId) needs runnerd's own `computeDelete` text."""
    params = await read_params(request)
    job_id, document_id = text(params, "jobId", limit=64), text(params, "documentId")
    address = text(params, "consumerAddress")
    owner = await auth.authenticate(request.app[STORE], params,
                                    auth.texts_for("computeDelete", address, job_id, document_id),
                                    nonce_optional=True)
    jobs = await _jobs(request, owner, job_id, document_id)
    engine, store = request.app[ENGINE], request.app[STORE]
    base = base_url(request)
    out = []
    for job in jobs:
        await engine.delete(job.job_id)
        gone = store.status_of(job.job_id) is None
        if gone:
            job.results, job.removed = [], 1  # what is left of it: nothing
        out.append(request.app[VIEW].render(job if gone else (await store.get(job.job_id) or job), base,
                                            status=JobStatus.DELETED if gone else None))
    return web.json_response(out)
