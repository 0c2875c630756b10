"""The job-site transfer routes (#17, internal): how a provision or filter step running on a cluster
node, which shares no disk with runnerd, gets its seed and sends back its out folder.

    GET /site/v1/jobs/{jobId}/{step}/in    the seed, a tar stream (Content-Length known up front)
    PUT /site/v1/jobs/{jobId}/{step}/out   the step's /runnerd/out as a tar (chunked or not)

Both take `Authorization: Bearer <token>` (engine/site_tokens.py); the rules on who, when and how
much are the engine's (engine/site_transfer.py). The body of a PUT is read here chunk by chunk, each
chunk due within requestBodySeconds (an upload of gigabytes may take long, a stalled one may not),
and handed to the engine's spool, which counts it against the step's cap as it comes.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from runnerd.api.keys import ENGINE, SETTINGS
from runnerd.api.params import bearer_token
from runnerd.api.transport import drop_unread_body
from runnerd.errors import RunnerdError

log = logging.getLogger("runnerd.api")

PREFIX = "/site/v1/jobs/{jobId}/{step}"
_BUFFER = 1024 * 1024  # what is gathered before one write to the spool (in a thread)


def setup(app: web.Application) -> None:
    # No HEAD: it would list the seed (and open its files) to send nothing.
    app.router.add_get(f"{PREFIX}/in", site_in, allow_head=False)
    app.router.add_put(f"{PREFIX}/out", site_out)


def _token(request: web.Request) -> str:
    return bearer_token(request) or ""


async def site_in(request: web.Request) -> web.StreamResponse:
    seed = await request.app[ENGINE].site_transfer.seed(request.match_info["jobId"], request.match_info["step"],
                                                        _token(request))
    response = web.StreamResponse(headers={"Content-Type": "application/x-tar", "Cache-Control": "no-store"})
    response.content_length = seed.length
    await response.prepare(request)
    chunks = seed.chunks()
    try:
        while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
            await response.write(chunk)
    except OSError as exc:
        # A file changed under the stream: the step sees a short body (Content-Length) and retries.
        log.warning("job %s: the %s seed could not be sent whole: %s", request.match_info["jobId"],
                    request.match_info["step"], exc)
        if request.transport is not None:
            request.transport.abort()
        raise ConnectionResetError("seed aborted") from None
    finally:
        chunks.close()
    await response.write_eof()
    return response


async def site_out(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    idle = request.app[SETTINGS].requestBodySeconds
    incoming = None
    try:
        incoming = await engine.site_transfer.receiver(request.match_info["jobId"], request.match_info["step"],
                                                       _token(request), request.content_length)
        pending: list[bytes] = []
        size = 0
        while True:
            try:
                async with asyncio.timeout(idle):
                    chunk = await request.content.readany()
            except TimeoutError:
                drop_unread_body(request)
                raise web.HTTPRequestTimeout() from None
            if chunk:
                pending.append(chunk)
                size += len(chunk)
            if pending and (size >= _BUFFER or not chunk):
                await engine.site_transfer.write(incoming, b"".join(pending))
                pending, size = [], 0
            if not chunk:
                break
        answer = await engine.site_transfer.install(incoming)
    except RunnerdError:
        drop_unread_body(request)  # refused (403, 409, 413, ...): close rather than drain what is left
        raise
    finally:
        if incoming is not None:
            await engine.site_transfer.discard(incoming)
    return web.json_response(answer)
