"""The one table of URL → handler."""

from __future__ import annotations

from aiohttp import web

from runnerd.api import compute, discovery, docs, live, results

COMPUTE = "/api/services/compute"


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/", discovery.root)
    app.router.add_get("/health", discovery.health)
    app.router.add_get("/api/services/nonce", discovery.nonce)
    app.router.add_get("/api/services/computeEnvironments", discovery.environments)
    app.router.add_post(COMPUTE, compute.start_job)
    app.router.add_get(COMPUTE, compute.job_status)
    app.router.add_put(COMPUTE, compute.stop_jobs)
    app.router.add_delete(COMPUTE, compute.delete_jobs)
    app.router.add_get("/api/services/computeResult", results.compute_result)
    app.router.add_get("/api/services/computeLogs", live.compute_logs)
    app.router.add_get("/metrics", live.metrics)
    app.router.add_get("/openapi.json", docs.openapi_json)
