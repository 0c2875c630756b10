"""The dialect's discovery document, its environments in ocean-node's shape, and the catalog's
DDOs as ocean-node's Aquarius route serves them."""

from __future__ import annotations

import os
import re
from typing import Any

from aiohttp import web

from runnerd import __version__
from runnerd.api.keys import ENGINE, IDENTITY, SETTINGS, STORE, base_url
from runnerd.api.node.intake import is_free, resources_of
from runnerd.catalog import DID_RE
from runnerd.config import Environment
from runnerd.errors import NotFound

BASE = "/c2d/v2"
SERVICES = "/api/services"
# name -> [method, path]: ocean.js 8 builds each URL as the node URL (which includes BASE) + path
SERVICE_ENDPOINTS = {
    "nonce": ["GET", f"{SERVICES}/nonce"],
    "computeEnvironments": ["GET", f"{SERVICES}/computeEnvironments"],
    "freeCompute": ["POST", f"{SERVICES}/freeCompute"],
    "computeStart": ["POST", f"{SERVICES}/compute"],
    "computeStatus": ["GET", f"{SERVICES}/compute"],
    "computeStop": ["PUT", f"{SERVICES}/compute"],
    "computeDelete": ["DELETE", f"{SERVICES}/compute"],
    "computeResult": ["GET", f"{SERVICES}/computeResult"],
    "computeStreamableLogs": ["GET", f"{SERVICES}/computeStreamableLogs"],
    "generateAuthToken": ["POST", f"{SERVICES}/auth/token"],
    "invalidateAuthToken": ["POST", f"{SERVICES}/auth/token/invalidate"],
    "getDDO": ["GET", "/api/aquarius/assets/ddo/:did"],
}


def node_url(request: web.Request) -> str:
    """This dialect's URL as clients reach it: what they are handed, and what DDOs name."""
    public = request.app[SETTINGS].publicUrl.rstrip("/")
    return (public or base_url(request)) + BASE


async def root(request: web.Request) -> web.Response:
    settings, address = request.app[SETTINGS], request.app[IDENTITY].address
    return web.json_response({
        "nodeId": f"runnerd-{address.lower()}",
        "chainIds": [str(c) for c in settings.chainIds],
        "providerAddress": address,
        "serviceEndpoints": SERVICE_ENDPOINTS,
        "software": "runnerd",
        "version": __version__,
        "dialect": "ocean-node C2D v2",
    })


def _platform() -> dict[str, str]:
    machine = os.uname().machine
    return {"architecture": {"x86_64": "x86_64", "aarch64": "arm64"}.get(machine, machine), "os": "linux"}


def environment_view(env: Environment, running: int, queued: int, consumer: str) -> dict[str, Any]:
    resources = [{"id": r.id, "type": r.id, "kind": "fungible" if r.id != "gpu" else "discrete", "total": r.total,
                  "min": r.min, "max": r.max, "inUse": r.max * running} for r in resources_of(env)]  # at most
    free = is_free(env)
    view: dict[str, Any] = {
        "id": env.id,
        "description": env.description,
        "consumerAddress": consumer,
        "storageExpiry": env.storageExpiry,
        "minJobDuration": 0,
        "maxJobDuration": env.maxJobDuration,
        "maxJobs": env.maxJobs,
        "runningJobs": running,
        "runningfreeJobs": running if free else 0,
        "queuedJobs": queued,
        "queuedFreeJobs": queued if free else 0,
        "queMaxWaitTime": 0,
        "queMaxWaitTimeFree": 0,
        "runMaxWaitTime": 0,
        "runMaxWaitTimeFree": 0,
        "fees": {},  # nothing is paid on chain here
        "resources": resources,
        "platform": _platform(),
        "access": {"addresses": [], "accessLists": None},
        "enableNetwork": env.allowNetwork,
    }
    if free:
        view["free"] = {"storageExpiry": env.storageExpiry, "minJobDuration": 0,
                        "maxJobDuration": env.maxJobDuration, "maxJobs": env.maxJobs,
                        "resources": [{"id": r["id"], "max": r["max"], "inUse": r["inUse"]} for r in resources],
                        "access": {"addresses": [], "accessLists": None}}
    return view


async def environments(request: web.Request) -> web.Response:
    """GET computeEnvironments: a flat list; with `?chainId=`, all of them for a chain this node
    names in chainIds, none for another."""
    settings, engine = request.app[SETTINGS], request.app[ENGINE]
    counts = await request.app[STORE].counts()
    envs = [environment_view(e, engine.current_jobs(e.id), counts.get((e.id, 1), 0), request.app[IDENTITY].address)
            for e in settings.environments]
    chain = request.query.get("chainId", "")
    if chain and not (re.fullmatch(r"[0-9]{1,20}", chain) and int(chain) in settings.chainIds):
        envs = []
    return web.json_response(envs)


async def ddo(request: web.Request) -> web.Response:
    """GET api/aquarius/assets/ddo/<did>: the catalog's DDO with its files stripped (as algorithms
    see it) and each service's endpoint this dialect's URL (the operator's are never shown)."""
    did = request.match_info["did"].lower()
    asset = request.app[ENGINE].catalog.get(did) if DID_RE.fullmatch(did) else None
    if asset is None:
        raise NotFound(f"no asset {request.match_info['did'][:80]} in this node's catalog", "not_found", "did")
    public = asset.public_ddo()
    for service in public.get("services", []):
        service["serviceEndpoint"] = node_url(request)
    return web.json_response(public)
