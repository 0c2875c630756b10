"""GET /openapi.json: the OpenAPI 3.0 description of the HTTP API.

The document lives next to this module as `openapi.yaml` (shipped as package data); it is read
once, with yaml.safe_load, and served as JSON with `info.version` set to the running version.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml
from aiohttp import web

from runnerd import __version__


@lru_cache(maxsize=1)
def document() -> dict[str, Any]:
    """The OpenAPI document as a dict (a fresh copy is not made: treat it as read-only)."""
    text = resources.files("runnerd.api").joinpath("openapi.yaml").read_text(encoding="utf-8")
    doc = yaml.safe_load(text)
    doc["info"]["version"] = __version__
    return doc


@lru_cache(maxsize=1)
def _json_body() -> bytes:
    return json.dumps(document(), separators=(",", ":")).encode()


async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(body=_json_body(), content_type="application/json", charset="utf-8")
