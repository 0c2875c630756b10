"""GET /api/services/computeLogs: the algorithm's log, streamed to its owner while the job runs
(`runnerd logs -f`), and GET /metrics for Prometheus."""

from __future__ import annotations

from aiohttp import web

from runnerd import signing
from runnerd.api.auth import authenticate
from runnerd.api.followers import FOLLOWERS
from runnerd.api.keys import DATA_DIR, ENGINE, METRICS, STORE
from runnerd.api.params import read_params, text
from runnerd.errors import NotFound
from runnerd.metrics import CONTENT_TYPE_LATEST

_CHUNK = 64 * 1024


async def compute_logs(request: web.Request) -> web.StreamResponse:
    """Signed over runnerd's own text `runnerd:computeLogs:` + consumerAddress + jobId + nonce (what
    runnerd's client signs), or over ocean.js 4.x's `consumerAddress + jobId + nonce` (advertised
    as computeStreamableLogs). `follow=1` keeps the response open until the job is terminal."""
    params = await read_params(request)
    job_id = text(params, "jobId", required=True, limit=64)
    store = request.app[STORE]
    address = text(params, "consumerAddress")
    owner = await authenticate(store, params, [[address, job_id], signing.own_text("computeLogs", [address, job_id])])
    job = await store.get(job_id)
    if job is None or job.owner.lower() != owner.lower():
        raise NotFound(f"no job {job_id} belongs to {owner}", "not_found", "jobId")
    follow = text(params, "follow", limit=5).lower() in ("1", "true", "yes")
    return await stream_log(request, job_id, owner, follow)


async def stream_log(request: web.Request, job_id: str, owner: str, follow: bool) -> web.StreamResponse:
    """The algorithm's log of a job the caller may read; with `follow`, until the job is terminal
    (both dialects' live-log routes)."""
    store = request.app[STORE]
    path = request.app[DATA_DIR] / "jobs" / job_id / "logs" / "algorithm.log"
    headers = {"Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    if not follow:
        response = web.StreamResponse(headers=headers)
        await response.prepare(request)
        await _send_new_bytes(response, path, 0)
        await response.write_eof()
        return response
    followers = request.app[FOLLOWERS]
    with followers.follow(job_id, owner, path) as watch:  # 429 beyond the caps, before anything is sent
        response = web.StreamResponse(headers=headers)
        await response.prepare(request)
        offset = 0
        while True:
            woken = watch.event  # taken before reading, so growth after the read wakes us
            offset = await _send_new_bytes(response, path, offset)
            current = store.status_of(job_id)
            if current is None or current.terminal or followers.closing.is_set():
                await _send_new_bytes(response, path, offset)  # what was written before the end
                break
            if request.transport is None or request.transport.is_closing():
                raise ConnectionResetError("the follower hung up")  # the errors middleware: a client gone (499)
            await woken.wait()
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
