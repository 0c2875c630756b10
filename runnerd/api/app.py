"""The aiohttp application: middlewares, routes and what the handlers reach through AppKeys."""

from __future__ import annotations

import sys
from pathlib import Path

from aiohttp import web

from runnerd.api import console, followers, keys
from runnerd.api.middleware import cors, errors, gate, timing
from runnerd.api.routes import setup_routes
from runnerd.api.views import StatusView
from runnerd.config import Settings
from runnerd.engine.service import Engine
from runnerd.identity import NodeIdentity, console_token
from runnerd.metrics import Metrics
from runnerd.store import JobStore

# What a client sends is parsed with the interpreter's recursion limit as its depth bound (a body
# nested deeper is a RecursionError, answered 400). A library may raise that limit when imported
# (py_ecc, under eth-account, sets 100000); at such a depth the C stack overflows first and the
# process dies. So whatever serves the API holds the limit at most this (the default is 1000).
MAX_RECURSION = 5000


def create_app(settings: Settings, engine: Engine, store: JobStore, identity: NodeIdentity,
               data_dir: Path, metrics: Metrics | None = None, host: str | None = None) -> web.Application:
    """`host`: the address the daemon listens on (None: unknown, so the console asks for its token)."""
    sys.setrecursionlimit(min(sys.getrecursionlimit(), MAX_RECURSION))
    metrics = metrics or Metrics()
    app = web.Application(client_max_size=settings.maxRequestBytes,
                          middlewares=[cors, timing(metrics), errors, gate])
    app[keys.SETTINGS] = settings
    app[keys.ENGINE] = engine
    app[keys.STORE] = store
    app[keys.IDENTITY] = identity
    app[keys.DATA_DIR] = Path(data_dir)
    live_usage = engine.trust.current if engine is not None else (lambda job_id: None)  # None: route listing only
    app[keys.VIEW] = StatusView(identity, settings.resultUrlTtl, settings.publicUrl, live_usage)
    app[keys.READY] = {"ready": False}
    app[keys.METRICS] = metrics
    app[console.CONSOLE] = console.Console(console_token(data_dir),
                                           console.is_loopback_host(host) and not settings.publicUrl)
    followers.install(app, settings, lambda job_id: store.status_of(job_id))
    setup_routes(app)
    return app
