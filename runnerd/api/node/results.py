"""computeResult (with Range, and the outputs as one `outputs.tar`) and computeStreamableLogs."""

from __future__ import annotations

import re

from aiohttp import web

from runnerd.api.keys import DATA_DIR
from runnerd.api.live import stream_log
from runnerd.api.node import signed
from runnerd.api.node.access import readable_job
from runnerd.api.node.tarview import serve_outputs_tar
from runnerd.api.node.views import node_results
from runnerd.api.params import read_params, text
from runnerd.api.results import send_result_file
from runnerd.domain import ResultType
from runnerd.errors import BadRequest, NotFound

_DIGITS = re.compile(r"[0-9]+")


async def compute_result(request: web.Request) -> web.StreamResponse:
    """GET computeResult ?consumerAddress&jobId&index&nonce&signature (`… + getComputeResult`), or
    with an auth token. `index` is into this dialect's results list (views.node_results)."""
    params = await read_params(request)
    job_id = text(params, "jobId", required=True, limit=64)
    index_text = text(params, "index", required=True, limit=9)
    if not _DIGITS.fullmatch(index_text):
        raise BadRequest("index must be a non-negative integer", "invalid", "index")
    address = await signed.authenticate(request, params, signed.RESULT)
    job = await readable_job(request, job_id, address)
    entries = node_results(job)
    index = int(index_text)
    if index >= len(entries):
        raise NotFound(f"job {job_id} has no result {index} (it has {len(entries)}; its status lists them)",
                       "not_found", "index")
    entry = entries[index]
    job_root = request.app[DATA_DIR] / "jobs" / job_id
    if entry["source"] is None:
        outputs = [r for r in job.results if r.type == ResultType.OUTPUT]
        return await serve_outputs_tar(request, outputs, job_root, int(job.date_finished or job.date_created))
    return send_result_file(request, job_root, job.results[entry["source"]], index, job_id,
                            "text/plain; charset=utf-8")


async def streamable_logs(request: web.Request) -> web.StreamResponse:
    """GET computeStreamableLogs ?jobId&consumerAddress&signature&nonce (`… +
    getComputeStreamableLogs`), or with a token: the algorithm's log as plain text (Docker's stream
    already demultiplexed), followed until the job ends; a finished job's whole log."""
    params = await read_params(request)
    job_id = text(params, "jobId", required=True, limit=64)
    address = await signed.authenticate(request, params, signed.LOGS)
    job = await readable_job(request, job_id, address)
    return await stream_log(request, job.job_id, address, follow=True)
