"""`runnerd serve`: run the daemon until SIGTERM/SIGINT.

Order: store → Docker → HTTP listening (answers 503 "starting") → recovery → ready (READY=1).
On SIGTERM runnerd stops admitting and leaves running containers alone, so a restart or an upgrade
does not kill jobs: the next start re-attaches to them.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from pathlib import Path

from aiohttp import web

from runnerd import notify
from runnerd.api.app import create_app
from runnerd.api.keys import READY
from runnerd.config import Settings
from runnerd.daemon import open_daemon

log = logging.getLogger("runnerd.server")


async def serve(settings: Settings, data_dir: Path, assets_dir: Path, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with open_daemon(settings, data_dir, assets_dir) as daemon:
        app = create_app(settings, daemon.engine, daemon.store, daemon.identity, daemon.data_dir, daemon.metrics)
        # Longer request lines than aiohttp's 8 KiB default, so an overlong parameter reaches our
        # own checks (and the one error shape) instead of the HTTP parser's plain-text 400.
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=5,
                               max_line_size=65536, max_field_size=65536)
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        log.info("listening on http://%s:%d (data %s, assets %s, config %s)", host, port, daemon.data_dir,
                 daemon.assets_dir, settings.source)
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
        await runner.cleanup()


async def _watchdog() -> None:
    interval = notify.watchdog_interval() or 10
    while True:
        notify.notify("WATCHDOG=1")
        await asyncio.sleep(interval)
