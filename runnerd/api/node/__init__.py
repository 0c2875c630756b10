"""ocean-node's compute dialect ("C2D v2", what ocean.js 8.x and ocean-cli speak), served under its
own base path over the same engine, store, nonce ledger, catalog and limits as the Provider-v2
routes at the root. Clients are given the node URL `http://host:port/c2d/v2`; ocean.js 8 builds
every URL from it plus the paths its discovery document lists (docs/api.md, "Two dialects")."""

from __future__ import annotations

from aiohttp import web

from runnerd.api import discovery as v2_discovery
from runnerd.api.keys import STORE
from runnerd.api.node import discovery, jobs, results, signed
from runnerd.api.node.discovery import BASE, SERVICES
from runnerd.store.tokens import AuthTokens


def setup(app: web.Application) -> None:
    store = app.get(STORE)
    if store is not None:  # None: an app built only to read its route table
        app[signed.TOKENS] = AuthTokens(store.db)
    services = BASE + SERVICES
    app.router.add_get(BASE, discovery.root)
    app.router.add_get(BASE + "/", discovery.root)
    app.router.add_get(services + "/nonce", v2_discovery.nonce)  # one ledger for both dialects
    app.router.add_get(services + "/computeEnvironments", discovery.environments)
    app.router.add_post(services + "/freeCompute", jobs.free_compute)
    app.router.add_post(services + "/compute", jobs.paid_compute)
    app.router.add_get(services + "/compute", jobs.job_status)
    app.router.add_put(services + "/compute", jobs.stop_job)
    app.router.add_delete(services + "/compute", jobs.delete_job)
    # signed reads use a nonce: no implicit HEAD on them
    app.router.add_get(services + "/computeResult", results.compute_result, allow_head=False)
    app.router.add_get(services + "/computeStreamableLogs", results.streamable_logs, allow_head=False)
    app.router.add_post(services + "/auth/token", signed.create_token)
    app.router.add_post(services + "/auth/token/invalidate", signed.invalidate_token)
    app.router.add_get(BASE + "/api/aquarius/assets/ddo/{did}", discovery.ddo)
