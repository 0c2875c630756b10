"""POST /api/services/fileinfo (Provider v2), for registered assets only: whether each file of a
service can be used, without saying where it is.

ocean.py's `ocean.compute.start` asks this before every start (its "connectivity check"). Only the
`{did, serviceId}` form is answered: Provider's `{type: url, url}` form makes the node fetch any
URL a caller names, which runnerd never does outside a job's provision step. Nothing is fetched
here either: a URL file is `valid` when it is well formed (the provision step checks the rest,
under the node's address rules); a local file when it resolves inside the catalog's folders.
"""

from __future__ import annotations

import os

from aiohttp import web

from runnerd.api.keys import ENGINE
from runnerd.api.params import read_params, text
from runnerd.catalog import DID_RE, AssetError
from runnerd.errors import BadRequest


async def fileinfo(request: web.Request) -> web.Response:
    params = await read_params(request)
    did = text(params, "did")
    if not did:
        raise BadRequest("only registered assets are answered: send {did, serviceId}", "missing", "did")
    catalog = request.app[ENGINE].catalog
    asset = catalog.get(did) if DID_RE.fullmatch(did) else None
    if asset is None:
        raise BadRequest("Cannot resolve DID", "did_not_found", "did")
    service = asset.service(text(params, "serviceId"))
    if service is None:
        raise BadRequest("Invalid serviceId.", "not_found", "serviceId")
    out = []
    for index, entry in enumerate(service.get("files") or []):
        info: dict = {"index": index, "type": str(entry.get("type", "")), "valid": False}
        try:
            resolved = catalog.resolve_file(entry)
            info["valid"] = True
            if resolved["type"] == "file":
                info["contentLength"] = str(os.stat(resolved["path"]).st_size)
        except (AssetError, OSError):
            pass
        out.append(info)
    if not out:
        raise BadRequest("Unable to get dataset files", "file_unavailable", "serviceId")
    return web.json_response(out)
