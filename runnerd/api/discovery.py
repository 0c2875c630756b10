"""GET / (discovery), /health, /api/services/nonce and /api/services/computeEnvironments."""

from __future__ import annotations

import re
import time
from functools import lru_cache
from typing import Any

from aiohttp import web

from runnerd import __version__, signing
from runnerd.api.keys import ENGINE, IDENTITY, READY, SETTINGS, STORE
from runnerd.api.params import read_params, text
from runnerd.config import Environment
from runnerd.errors import BadRequest

SERVICE_ENDPOINTS = {
    "computeStart": ["POST", "/api/services/compute"],
    "computeStatus": ["GET", "/api/services/compute"],
    "computeStop": ["PUT", "/api/services/compute"],
    "computeDelete": ["DELETE", "/api/services/compute"],
    "computeResult": ["GET", "/api/services/computeResult"],
    "computeEnvironments": ["GET", "/api/services/computeEnvironments"],
    "nonce": ["GET", "/api/services/nonce"],
    "initializeCompute": ["POST", "/api/services/initializeCompute"],
    "fileinfo": ["POST", "/api/services/fileinfo"],  # registered assets only (ocean.py's compute.start asks it)
    # runnerd's live log, under its own name and under the one ocean.js 4.x looks up
    "computeLogs": ["GET", "/api/services/computeLogs"],
    "computeStreamableLogs": ["GET", "/api/services/computeLogs"],
}
ZERO_ADDRESS = "0x" + "0" * 40


async def root(request: web.Request) -> web.Response:
    settings, address = request.app[SETTINGS], request.app[IDENTITY].address
    return web.json_response({
        "software": "runnerd",
        "version": __version__,
        "providerAddress": address,
        "providerAddresses": {str(c): address for c in settings.chainIds},
        "chainIds": list(settings.chainIds),
        "serviceEndpoints": SERVICE_ENDPOINTS,
    })


async def health(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    if not request.app[READY]["ready"]:
        return web.json_response({"error": "runnerd is starting (recovering jobs)", "code": "starting",
                                  "status": "starting"}, status=503)
    if not engine.docker_up:
        return web.json_response({"error": "Docker is not reachable; jobs wait until it is back",
                                  "code": "docker_unavailable", "status": "degraded", "docker": "down"}, status=503)
    return web.json_response({"status": "ok", "docker": "up"})


async def nonce(request: web.Request) -> web.Response:
    params = await read_params(request)
    address = text(params, "userAddress", required=True)
    if not signing.is_address(address):
        raise BadRequest("userAddress must be a 0x-prefixed 40-hex-digit address", "invalid", "userAddress")
    stored = await request.app[STORE].nonce(address) or "0"
    value: int | float = int(stored) if stored.isdigit() else float(stored)
    return web.json_response({"nonce": value})


@lru_cache(maxsize=1)
def host_cpu_type() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def environment_view(env: Environment, current: int, queued: int, consumer: str,
                     fee_token: str = ZERO_ADDRESS) -> dict[str, Any]:
    return {
        "id": env.id,
        "desc": env.description,
        "description": env.description,
        "cpuNumber": env.nCPU,
        "nCPU": env.nCPU,
        "cpuType": env.cpuType or host_cpu_type(),
        "gpuNumber": env.nGPU,
        "nGPU": env.nGPU,
        "gpuType": env.gpuType,
        "ramGB": env.ramGB,
        "diskGB": env.diskGB,
        "priceMin": env.priceMin,
        "currentJobs": current,
        "queuedJobs": queued,
        "maxJobs": env.maxJobs,
        "maxQueue": env.maxQueue,
        "maxJobDuration": env.maxJobDuration,
        "storageExpiry": env.storageExpiry,
        "allowNetwork": env.allowNetwork,
        "consumerAddress": consumer,
        "feeToken": fee_token,  # the chain's, in chain mode (#16)
        "lastSeen": f"{time.time():.6f}",
    }


async def environments(request: web.Request) -> web.Response:
    params = await read_params(request)
    settings, engine = request.app[SETTINGS], request.app[ENGINE]
    counts = await request.app[STORE].counts()
    chain = text(params, "chainId", limit=20)
    if chain and not re.fullmatch(r"[0-9]+", chain):
        raise BadRequest("chainId must be an integer", "invalid", "chainId")
    in_mode = settings.chain(int(chain) if chain else settings.chainIds[0])
    envs = [environment_view(e, engine.current_jobs(e.id), counts.get((e.id, 1), 0), request.app[IDENTITY].address,
                             in_mode.feeToken if in_mode else ZERO_ADDRESS)
            for e in settings.environments]
    if not chain:
        return web.json_response(envs)
    return web.json_response({chain: envs if int(chain) in settings.chainIds else []})
