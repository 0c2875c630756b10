"""GET /api/services/computeLogs: the algorithm's log, streamed to its owner while the job runs
(`runnerd logs -f`), and GET /metrics for Prometheus."""

from __future__ import annotations

import asyncio

from aiohttp import web

from runnerd.api.keys import DATA_DIR, ENGINE, METRICS, STORE
from runnerd.api.params import authenticate, read_params, text
from runnerd.errors import NotFound
from runnerd.metrics import CONTENT_TYPE_LATEST

_POLL = 0.2  # how often a follower looks for new bytes in the log file
_CHUNK = 64 * 1024


async def compute_logs(request: web.Request) -> web.StreamResponse:
    """Signed like a status request (consumerAddress + jobId + "" + nonce); `follow=1` keeps the
    response open until the job is terminal."""
    params = await read_params(request)
    job_id = text(params, "jobId", required=True, limit=64)
    store = request.app[STORE]
    owner = await authenticate(store, params, [text(params, "consumerAddress"), job_id, ""])
    job = await store.get(job_id)
    if job is None or job.owner.lower() != owner.lower():
        raise NotFound(f"no job {job_id} belongs to {owner}", "not_found", "jobId")
    follow = text(params, "follow", limit=5).lower() in ("1", "true", "yes")
    path = request.app[DATA_DIR] / "jobs" / job_id / "logs" / "algorithm.log"
    response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8",
                                           "Cache-Control": "no-store", "X-Accel-Buffering": "no"})
    await response.prepare(request)
    offset = 0
    while True:
        offset = await _send_new_bytes(response, path, offset)
        if not follow:
            break
        if request.transport is None or request.transport.is_closing():
            raise ConnectionResetError("the follower hung up")  # the errors middleware: a client gone, not a fault
        current = store.status_of(job_id)
        if current is None or current.terminal:
            await _send_new_bytes(response, path, offset)  # what was written before the end
            break
        await asyncio.sleep(_POLL)
    await response.write_eof()
    return response


async def _send_new_bytes(response: web.StreamResponse, path, offset: int) -> int:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            while chunk := f.read(_CHUNK):
                await response.write(chunk)
                offset += len(chunk)
    except FileNotFoundError:
        pass  # the algorithm has not started yet
    return offset


async def metrics(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    counts = await request.app[STORE].counts()
    running = {e.id: engine.current_jobs(e.id) for e in engine.settings.environments}
    body = request.app[METRICS].render(counts, running)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
