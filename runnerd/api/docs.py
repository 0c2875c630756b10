"""GET /openapi.json: the OpenAPI 3.0 description of the HTTP API, both dialects.

The document lives next to this module as `openapi.yaml` (the root, Provider-v2 dialect and the
daemon's own routes) and `openapi-node.yaml` (ocean-node's dialect under /c2d/v2), shipped as
package data; both are read once, with yaml.safe_load, merged into one document, and served as
JSON with `info.version` set to the running version.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml
from aiohttp import web

from runnerd import __version__


def _load(name: str) -> dict[str, Any]:
    return yaml.safe_load(resources.files("runnerd.api").joinpath(name).read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def document() -> dict[str, Any]:
    """The OpenAPI document as a dict (a fresh copy is not made: treat it as read-only)."""
    doc = _load("openapi.yaml")
    node = _load("openapi-node.yaml")
    clash = set(doc["paths"]) & set(node["paths"])
    assert not clash, f"both dialects document {clash}"
    doc["paths"].update(node["paths"])
    doc.setdefault("tags", []).extend(node.get("tags", []))
    for section, entries in node.get("components", {}).items():
        doc["components"].setdefault(section, {}).update(entries)
    doc["info"]["version"] = __version__
    return doc


@lru_cache(maxsize=1)
def _json_body() -> bytes:
    return json.dumps(document(), separators=(",", ":")).encode()


async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(body=_json_body(), content_type="application/json", charset="utf-8")
