"""`runnerd serve`: run the daemon until SIGTERM/SIGINT.

Order: store → Docker → HTTP listening (answers 503 "starting") → recovery → ready (READY=1).
On SIGTERM runnerd stops admitting and leaves running containers alone, so a restart or an upgrade
does not kill jobs: the next start re-attaches to them.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import resource
import signal
from pathlib import Path

from aiohttp import web

from runnerd import notify
from runnerd.api.app import create_app
from runnerd.api.console import CONSOLE, console_url
from runnerd.api.keys import READY
from runnerd.api.transport import Listener
from runnerd.config import Settings
from runnerd.daemon import open_daemon

log = logging.getLogger("runnerd.server")


async def serve(settings: Settings, data_dir: Path, assets_dir: Path, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with open_daemon(settings, data_dir, assets_dir) as daemon:
        app = create_app(settings, daemon.engine, daemon.store, daemon.identity, daemon.data_dir, daemon.metrics,
                         host=host)
        # aiohttp's default header limits (8190 bytes a line): the parser's refusal is answered in
        # the error shape by transport.Connection. Connections, request heads and idle keep-alive are
        # bounded there too; bodies by params.read_json.
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=5,
                               keepalive_timeout=settings.keepAliveSeconds)
        await runner.setup()
        _enough_files(settings.maxConnections)
        assert runner.server is not None
        listener = Listener(runner.server, settings, daemon.metrics)
        site = await loop.create_server(listener, host, port, reuse_address=True, backlog=128)
        log.info("listening on http://%s:%d (data %s, assets %s, config %s)", host, port, daemon.data_dir,
                 daemon.assets_dir, settings.source)
        gate = app[CONSOLE]
        log.info("web console: %s%s", console_url(host, port, gate.token, gate.loopback_bound),
                 "" if gate.loopback_bound else " (the token is in console.token in the data dir)")
        await daemon.engine.start()
        app[READY]["ready"] = True
        # Everything loaded so far lives as long as the process: move it out of the collector's
        # sight, and collect the young generation less often. Full collections scanning every
        # module's objects were the API's p99 (bench/api_load.py: 66 ms -> 36 ms under load).
        gc.freeze()
        gc.set_threshold(20_000, 20, 20)
        notify.notify("READY=1\nSTATUS=serving")
        log.info("ready: node address %s, %d environment(s)", daemon.identity.address, len(settings.environments))
        pinger = asyncio.create_task(_watchdog()) if notify.watchdog_interval() else None
        await stop.wait()
        notify.notify("STOPPING=1")
        log.info("shutting down: running containers are left to run; the next start re-attaches to them")
        if pinger:
            pinger.cancel()
        site.close()
        await runner.cleanup()


def _enough_files(connections: int) -> None:
    """Each connection is a file descriptor: raise the soft limit toward the hard one so that
    maxConnections (plus the store, Docker and log files) fit, or say why it cannot."""
    need = connections + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return
    target = need if hard == resource.RLIM_INFINITY else min(need, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        target = soft
    if target < need:
        log.warning("open-file limit %d is below maxConnections %d + 256: connections beyond it fail at accept "
                    "(raise LimitNOFILE or lower maxConnections)", target, connections)


async def _watchdog() -> None:
    interval = notify.watchdog_interval() or 10
    while True:
        notify.notify("WATCHDOG=1")
        await asyncio.sleep(interval)
