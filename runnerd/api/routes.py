"""The one table of URL → handler."""

from __future__ import annotations

from aiohttp import web

from runnerd.api import compute, console, discovery, docs, fileinfo, initialize, live, node, results, site

COMPUTE = "/api/services/compute"


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/", discovery.root)
    app.router.add_get("/health", discovery.health)
    app.router.add_get("/api/services/nonce", discovery.nonce)
    app.router.add_get("/api/services/computeEnvironments", discovery.environments)
    app.router.add_post(COMPUTE, compute.start_job)
    app.router.add_post("/api/services/initializeCompute", initialize.initialize_compute)
    app.router.add_post("/api/services/fileinfo", fileinfo.fileinfo)
    # Signed reads consume a nonce: no implicit HEAD on them (Ocean Provider answers 405 too).
    app.router.add_get(COMPUTE, compute.job_status, allow_head=False)
    app.router.add_put(COMPUTE, compute.stop_jobs)
    app.router.add_delete(COMPUTE, compute.delete_jobs)
    app.router.add_get("/api/services/computeResult", results.compute_result, allow_head=False)
    app.router.add_get("/api/services/computeLogs", live.compute_logs, allow_head=False)
    app.router.add_get("/metrics", live.metrics)
    app.router.add_get("/openapi.json", docs.openapi_json)
    console.setup(app)  # the operator's page: /console, /console/api/state
    node.setup(app)  # ocean-node's dialect (ocean.js 8.x) under /c2d/v2, over the same engine
    site.setup(app)  # internal (#17): a step on a cluster node fetches its seed, sends back its out folder
