"""One error shape for every failure, CORS for browser clients, and a last line of defence:
the daemon never answers with a traceback."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

from aiohttp import web

from runnerd.api.keys import READY
from runnerd.errors import RunnerdError

log = logging.getLogger("runnerd.api")

_HTTP_CODES = {
    400: "invalid", 404: "not_found", 405: "method_not_allowed", 408: "request_timeout", 413: "payload_too_large",
    414: "uri_too_long", 415: "unsupported_media_type", 416: "range_not_satisfiable", 431: "headers_too_large",
}
# What the metrics (and the log) call a request whose client went away before its answer was
# sent (nginx's convention). No client ever receives it: there is no one left to receive it.
CLIENT_GONE = 499


def error_response(status: int, message: str, code: str, field: str | None = None,
                   headers: dict[str, str] | None = None) -> web.Response:
    body = {"error": message, "code": code}
    if field:
        body["field"] = field
    return web.json_response(body, status=status, headers=headers)


@web.middleware
async def errors(request: web.Request, handler):
    try:
        return await handler(request)
    except RunnerdError as exc:
        return error_response(exc.http_status, exc.message, exc.code, exc.field, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "Content-Range")}
        message = exc.reason
        if exc.status == 404:
            message = f"no route {request.method} {request.path}; GET / lists the service endpoints"
        elif exc.status == 405:
            message = f"{request.method} is not allowed on {request.path}"
        elif exc.status == 413:
            message = "the request body is too large (see maxRequestBytes)"
        elif exc.status == 408:
            message = "the request body did not arrive in time (see requestBodySeconds); the connection is closed"
        elif exc.status == 415:
            message = "the request body must be JSON (Content-Type: application/json)"
        response = error_response(exc.status, message, _HTTP_CODES.get(exc.status, f"http_{exc.status}"),
                                  headers=headers)
        if exc.status == 408:
            response.force_close()
        return response
    except asyncio.CancelledError:
        raise
    except (ConnectionError, web.RequestPayloadError) as exc:
        if _client_gone(request):
            # A client that hangs up (mid-body, or mid-stream) is not a fault of the daemon.
            log.info("client went away during %s %s (%s)", request.method, request.path,
                     type(exc).__name__)
            return web.Response(status=CLIENT_GONE)
        if isinstance(exc, web.RequestPayloadError):  # a broken chunked encoding, say: the client's fault
            return error_response(400, "the request body is malformed", "invalid")
        return _internal(request)
    except Exception:  # noqa: BLE001 - the defence of last resort; the traceback goes to the log only
        return _internal(request)


def _internal(request: web.Request) -> web.Response:
    ref = uuid.uuid4().hex[:12]
    log.exception("internal error %s on %s %s", ref, request.method, request.path)
    return error_response(500, f"internal error (reference {ref}); the daemon log has the details",
                          "internal_error")


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


@web.middleware
async def cors(request: web.Request, handler):
    """All origins, like Ocean Provider (flask-cors): browser wallets call providers directly.
    Not the operator's console: no other origin may read it (its access is by cookie or loopback)."""
    if request.path == "/console" or request.path.startswith("/console/"):
        return await handler(request)
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        response: web.StreamResponse = web.Response(status=204, headers={
            "Access-Control-Allow-Methods": "GET, POST, PUT, DELETE",
            "Access-Control-Allow-Headers": request.headers.get("Access-Control-Request-Headers", "*"),
            "Access-Control-Max-Age": "600",
        })
    else:
        response = await handler(request)
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response


@web.middleware
async def gate(request: web.Request, handler):
    """Until recovery is done only /health answers, so no job is touched twice."""
    if not request.app[READY]["ready"] and request.path != "/health":
        return error_response(503, "runnerd is starting (recovering jobs); retry in a moment", "starting")
    return await handler(request)


def timing(metrics):
    """API latency by route template (not raw path: job ids would explode the label set)."""

    @web.middleware
    async def observe(request: web.Request, handler):
        started = time.perf_counter()
        code = 500
        try:
            response = await handler(request)
            code = response.status
            return response
        except web.HTTPException as exc:
            code = exc.status
            raise
        finally:
            info = request.match_info.route.resource
            route = info.canonical if info is not None else "unmatched"
            metrics.requests.labels(request.method, route, str(code)).observe(time.perf_counter() - started)

    return observe
