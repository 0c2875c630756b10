"""The connection layer under the app: what a client meets before a request reaches a handler.

aiohttp bounds neither the number of connections nor the time a request's head may take, and its
HTTP parser answers a malformed or over-long request in plain text. A daemon bound beyond
localhost serves untrusted clients, so each connection here is

- counted: beyond `maxConnections` a new one is answered a canned 503 and closed at once, before
  anything is parsed (it costs one write);
- timed: once a request's first byte has arrived its head must be complete within
  `requestHeaderSeconds` (408, closed); an idle keep-alive connection is closed after
  `keepAliveSeconds` (aiohttp's own timer, which also runs from the moment a connection opens);
- answered in the one error shape when the HTTP parser refuses a request (414, 431, 400).

The body's deadline belongs to the reader (params.read_json), which knows when a handler waits
for it; `drop_unread_body` lets it close the connection right after its 408.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
import weakref
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMethod, HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler

from runnerd.api.middleware import error_response
from runnerd.config import Settings
from runnerd.metrics import Metrics

log = logging.getLogger("runnerd.api")

_WARN_EVERY = 60.0  # seconds between two "connection limit reached" warnings
_REQUEST_LINE = re.compile(rb"^(/|\*|[a-z][a-z0-9+.-]*://|[A-Z]+ )", re.I)


def _raw_error(status: int, reason: str, message: str, code: str) -> bytes:
    """A whole HTTP/1.1 error response in the error shape, for when there is no request object."""
    body = json.dumps({"error": message, "code": code}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\nAccess-Control-Allow-Origin: *\r\n\r\n")
    return head.encode() + body


class Listener:
    """The protocol factory given to `loop.create_server`: one `Connection` per accepted socket
    while fewer than `maxConnections` are open, a `_Refused` beyond."""

    def __init__(self, server: web.Server, settings: Settings, metrics: Metrics) -> None:
        self._server = server
        self._settings = settings
        self._metrics = metrics
        # Weak, so a protocol whose socket never got connected cannot hold a slot forever.
        self._open: weakref.WeakSet[Connection] = weakref.WeakSet()
        self._warned = 0.0
        self._too_many = _raw_error(503, "Service Unavailable", "too many open connections (maxConnections "
                                    f"{settings.maxConnections}); retry later", "too_many_connections")
        metrics.connections.set_function(lambda: len(self._open))

    def __call__(self) -> asyncio.Protocol:
        if len(self._open) >= self._settings.maxConnections:
            self._metrics.refused.labels("connections").inc()
            now = time.monotonic()
            if now - self._warned > _WARN_EVERY:
                self._warned = now
                log.warning("connection limit reached (maxConnections %d): new connections get 503 and are "
                            "closed", self._settings.maxConnections)
            return _Refused(self._too_many)
        # The server's kwargs are those AppRunner was given plus the app's (debug, access log class):
        # the same a plain aiohttp connection would get.
        conn = Connection(self._server, loop=asyncio.get_running_loop(), limits=self._settings,
                          metrics=self._metrics, **self._server._kwargs)
        self._open.add(conn)
        conn.on_close = self._open.discard
        return conn


class _Refused(asyncio.Protocol):
    """Over the limit: answer without reading and close (no parser, no buffers, no timers)."""

    def __init__(self, answer: bytes) -> None:
        self._answer = answer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(self._answer)  # type: ignore[attr-defined]
        transport.close()


class Connection(RequestHandler):
    """aiohttp's HTTP/1.1 protocol plus a deadline on request heads and error-shape answers for
    requests the parser refuses."""

    def __init__(self, manager: web.Server, *, limits: Settings, metrics: Metrics, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.on_close: Any = None
        self._head_seconds = limits.requestHeaderSeconds
        self._metrics = metrics
        self._head_timer: asyncio.TimerHandle | None = None
        self._body: Any = None  # the payload of the last request whose head arrived

    def data_received(self, data: bytes) -> None:
        heads = self._request_count
        # Judged before parsing: the chunk that completes a body leaves it at EOF.
        in_body = self._body is not None and not self._body.is_eof()
        super().data_received(data)
        if self._request_count != heads:  # a head (or a refused request) is complete
            self._disarm()
            self._body = self._messages[-1][1] if self._messages else None
        elif data and not in_body and self._head_timer is None and not (self._close or self._force_close):
            # Bytes that are not a body: the start of a new request head. (A head that begins in
            # the chunk that ends a body is left to the keep-alive timer.)
            self._head_timer = self._loop.call_later(self._head_seconds, self._head_expired)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_expired(self) -> None:
        self._head_timer = None
        if self.transport is None or self._force_close:
            return
        if self._request_in_progress:
            # A pipelined head behind a request still being answered: its time starts after that.
            self._head_timer = self._loop.call_later(self._head_seconds, self._head_expired)
            return
        self._metrics.refused.labels("header_timeout").inc()
        log.debug("request head from %s incomplete after %ss: 408, closed", self.peername, self._head_seconds)
        self.transport.write(_raw_error(408, "Request Timeout", "the request headers did not arrive within "
                                        f"{self._head_seconds:g} s (requestHeaderSeconds)", "request_timeout"))
        self.force_close()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        self._body = None
        if self.on_close is not None:
            self.on_close(self)
        super().connection_lost(exc)

    def drop_unread_body(self) -> None:
        """Close the connection right after the current response instead of draining the rest of
        the body for up to 10 s (aiohttp's lingering close): after a body timeout it is no use."""
        self._lingering_time = 0.0

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """aiohttp calls this for a request its parser refused, and for an exception that escaped
        every middleware: answer in the error shape, and log one line, not a traceback, for what
        a client sent (a client can send those as fast as it likes)."""
        if request.writer.output_size > 0:
            raise ConnectionError("the response had begun; the connection is dropped")
        if isinstance(exc, HttpProcessingError) and status < 500:
            status, code, text = _describe(exc)
            self._metrics.refused.labels("malformed").inc()
            log.debug("refused a malformed request from %s: %s %s", request.remote, status, exc)
        else:
            ref = uuid.uuid4().hex[:12]
            log.error("internal error %s outside the handlers (%s)", ref, status, exc_info=exc)
            status, code = 500, "internal_error"
            text = f"internal error (reference {ref}); the daemon log has the details"
        response = error_response(status, text, code, headers={"Access-Control-Allow-Origin": "*"})
        response.force_close()
        return response


def _describe(exc: HttpProcessingError) -> tuple[int, str, str]:
    if isinstance(exc, LineTooLong):
        line = exc.args[0]
        line = bytes(line) if isinstance(line, (bytes, bytearray)) else str(line).encode(errors="replace")
        limit = exc.args[1]
        if _REQUEST_LINE.match(line):
            return 414, "uri_too_long", f"the request line is longer than {limit} bytes"
        return 431, "headers_too_large", f"a request header is longer than {limit} bytes"
    if "too many headers" in str(exc.message).lower():
        return 431, "headers_too_large", "the request has too many headers"
    if isinstance(exc, BadHttpMethod):
        return 400, "invalid", "not an HTTP/1.x request"
    return 400, "invalid", "malformed HTTP request"


def drop_unread_body(request: web.Request) -> None:
    if isinstance(request.protocol, Connection):
        request.protocol.drop_unread_body()
