"""GET /api/services/computeResult: stream one result from local disk to its owner.

Authorised by a signature over consumerAddress + jobId + index + nonce, or by the expiring
capability token that the status object's URLs carry. aiohttp's FileResponse gives constant
memory (sendfile), Content-Length and Range/206.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from aiohttp import web

from runnerd import signing
from runnerd.api.keys import DATA_DIR, IDENTITY, STORE
from runnerd.api.params import authenticate, read_params, text
from runnerd.domain import ResultFile
from runnerd.errors import BadRequest, NotFound, RangeNotSatisfiable, Unauthorized

_UNSAFE = re.compile(r'[^A-Za-z0-9._+-]')
_DIGITS = re.compile(r"[0-9]+")  # ASCII only: str.isdigit() accepts "²", which int() refuses


def disposition(filename: str) -> str:
    """Ocean's header form `attachment;filename=<name>` with the name made header-safe."""
    name = _UNSAFE.sub("_", os.path.basename(filename)) or "result"
    return f"attachment;filename={name}"


def check_range(request: web.Request, size: int) -> None:
    """Refuse an unsatisfiable Range here, in the one error shape (FileResponse would answer 416
    itself with an empty body); satisfiable ranges are served by FileResponse as 206."""
    if "Range" not in request.headers:
        return
    try:
        wanted = request.http_range
    except ValueError:
        raise RangeNotSatisfiable("the Range header is malformed; use bytes=START-END",
                                  headers={"Content-Range": f"bytes */{size}"}) from None
    start = wanted.start
    if start is not None and (start >= size if start >= 0 else size == 0):
        raise RangeNotSatisfiable(f"the range starts at or past the end of the file ({size} bytes)",
                                  headers={"Content-Range": f"bytes */{size}"})


async def compute_result(request: web.Request) -> web.StreamResponse:
    params = await read_params(request)
    job_id = text(params, "jobId", required=True, limit=64)
    index_text = text(params, "index", required=True, limit=9)
    if not _DIGITS.fullmatch(index_text):
        raise BadRequest("index must be a non-negative integer", "invalid", "index")
    index = int(index_text)
    store = request.app[STORE]
    owner = None
    if params.get("token"):
        expires = text(params, "expires", required=True, limit=12)
        if not _DIGITS.fullmatch(expires) or not request.app[IDENTITY].check(job_id, index, int(expires),
                                                                     text(params, "token", limit=64)):
            raise Unauthorized("the result link is invalid or has expired; fetch the job status for a fresh one",
                               "invalid_token", "token")
    else:
        # Ocean's text runs index and nonce together, so "1" + "23" is "12" + "3": what follows the
        # jobId in a used result signature is never accepted again, here or as any other action's
        # nonce (api/auth.py spent, migration 0006).
        suffix = index_text + (signing.nonce_text(params.get("nonce")) or "")
        if store.suffix_spent(job_id, suffix):
            raise Unauthorized("this signature has been used already", "invalid_signature", "signature")
        owner = await authenticate(store, params, [text(params, "consumerAddress"), job_id, index_text])
    job = await store.get(job_id)
    if job is None or (owner is not None and job.owner.lower() != owner.lower()):
        raise NotFound(f"no job {job_id} belongs to {owner}" if owner else f"no job {job_id}", "not_found", "jobId")
    if owner is not None:  # only the owner's own signatures, and only while the job exists (its row's trigger)
        await store.spend_suffix(job_id, suffix)
    if index >= len(job.results):
        raise NotFound(f"job {job_id} has no result {index} (it has {len(job.results)})", "not_found", "index")
    return send_result_file(request, request.app[DATA_DIR] / "jobs" / job_id, job.results[index], index, job_id,
                            "application/octet-stream")


def send_result_file(request: web.Request, job_root: Path, result: ResultFile, index: int, job_id: str,
                     content_type: str) -> web.FileResponse:
    """One published file of a job, as both dialects serve it: only a regular file inside the
    job's folder (a result swapped for a link or a device since it was published is not found),
    with Range checked against its size."""
    path = job_root / result.path
    try:
        st = os.lstat(path)
    except OSError:
        raise NotFound(f"result {index} of job {job_id} is no longer on disk", "not_found", "index") from None
    if not stat.S_ISREG(st.st_mode) or not os.path.realpath(path).startswith(os.path.realpath(job_root) + os.sep):
        raise NotFound(f"result {index} of job {job_id} is not a regular file", "not_found", "index")
    check_range(request, st.st_size)
    return web.FileResponse(path, chunk_size=256 * 1024, headers={
        "Content-Disposition": disposition(result.filename),
        "Access-Control-Expose-Headers": "Content-Disposition",
        "Content-Type": content_type,
    })
