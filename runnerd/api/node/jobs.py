"""ocean-node's compute routes over runnerd's engine: freeCompute and compute (start), status (GET),
stop (PUT), and runnerd's delete (DELETE, which ocean-node lacks)."""

from __future__ import annotations

from aiohttp import web

from runnerd.api.keys import ENGINE, SETTINGS, STORE
from runnerd.api.node import intake, signed
from runnerd.api.node.access import jobs_for, readable_job
from runnerd.api.node.views import render
from runnerd.api.params import read_params, text
from runnerd.domain import Job
from runnerd.errors import BadRequest, NotFound, Unauthorized


def _answer(jobs: list[Job]) -> web.Response:
    return web.json_response([render(j) for j in jobs])


async def free_compute(request: web.Request) -> web.Response:
    """POST freeCompute, signed `consumerAddress + nonce + freeStartCompute` (or a token)."""
    params = await read_params(request)
    env = intake.environment(request.app[SETTINGS], params)
    if not intake.is_free(env):
        raise BadRequest(f"environment {env.id} does not support free jobs (it lists no `free`)", "not_free",
                         "environment")
    return await _start(request, params, env, signed.FREE_START)


async def paid_compute(request: web.Request) -> web.Response:
    """POST compute: ocean-node's paid start locks the price in an escrow contract on chain, which
    runnerd does not do. On an environment that costs nothing it runs as a free job (signed
    `startCompute`); on any other it is refused before any nonce is used."""
    params = await read_params(request)
    env = intake.environment(request.app[SETTINGS], params)
    if not intake.is_free(env):
        raise BadRequest(f"paid compute (payment locked in escrow on chain) is not offered by this node; environment "
                         f"{env.id} has no free tier. Use freeCompute (ProviderInstance.freeComputeStart) on an "
                         "environment that lists `free`", "paid_compute_unsupported", "environment")
    return await _start(request, params, env, signed.START)


async def _start(request: web.Request, params: dict, env, command: str) -> web.Response:
    owner = await signed.authenticate(request, params, command)
    terms = intake.terms(params, env)
    start = intake.start_request(params, env, request.app[ENGINE].catalog)
    return _answer([await request.app[ENGINE].submit(start, owner, terms=terms)])


async def job_status(request: web.Request) -> web.Response:
    """GET compute ?consumerAddress&jobId&agreementId: unsigned, as every ocean-node client sends
    it. A read that names a jobId (a 128-bit secret its owner and viewers were given) answers for
    the owner or a viewer of that job; listing an address's jobs, all of them or those of one
    agreementId, needs that address's auth token (or the operator's `unsignedStatus: true`). An
    agreementId is no secret: a root-dialect job's is its order's transaction id, on chain with
    the consumer's address, and a free job's may be the consumer's own choice."""
    params = await read_params(request)
    job_id, agreement = text(params, "jobId", limit=64), text(params, "agreementId", limit=128)
    address = signed.by_token(request, params)
    tokened = address is not None
    if address is None:
        address = signed.address_param(params)
    if job_id:
        return _answer([await readable_job(request, job_id, address)])
    if not (tokened or request.app[SETTINGS].unsignedStatus):
        raise Unauthorized("listing an address's jobs (also by agreementId) needs its auth token in Authorization "
                           "(createAuthToken); or name a jobId", "token_required", "Authorization")
    jobs = await jobs_for(request, address)
    if agreement:
        jobs = [j for j in jobs if j.agreement_id == agreement]
        if not jobs:
            raise NotFound(f"no job with agreementId {agreement} belongs to {address}", "not_found", "agreementId")
    return _answer(jobs)


async def stop_job(request: web.Request) -> web.Response:
    """PUT compute ?consumerAddress&nonce&signature&jobId: signed `… + stopCompute`. Owner only."""
    params = await read_params(request)
    job_id = text(params, "jobId", required=True, limit=64)
    owner = await signed.authenticate(request, params, signed.STOP)
    job = await _owned(request, owner, job_id)
    engine = request.app[ENGINE]
    if not job.terminal:
        await engine.stop_and_wait([job.job_id], request.app[SETTINGS].stopWaitSeconds)
    return _answer([await request.app[STORE].get(job.job_id) or job])


async def delete_job(request: web.Request) -> web.Response:
    """DELETE compute ?consumerAddress&nonce&signature&jobId: runnerd's, signed `… + deleteCompute`
    (ocean-node answers 404 here). Stops the job if it runs, then removes it and its files."""
    params = await read_params(request)
    job_id = text(params, "jobId", required=True, limit=64)
    owner = await signed.authenticate(request, params, signed.DELETE)
    job = await _owned(request, owner, job_id)
    await request.app[ENGINE].delete(job.job_id)
    return web.json_response([{"jobId": job.job_id, "deleted": request.app[STORE].status_of(job.job_id) is None}])


async def _owned(request: web.Request, owner: str, job_id: str) -> Job:
    jobs = await request.app[STORE].list_for_owner(owner, job_id)
    if not jobs:  # unknown and not-yours look the same
        raise NotFound(f"no job {job_id} belongs to {owner}", "not_found", "jobId")
    return jobs[0]
