"""Typed keys for what the application carries (aiohttp AppKey)."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from runnerd.api.views import StatusView
from runnerd.config import Settings
from runnerd.engine.service import Engine
from runnerd.identity import NodeIdentity
from runnerd.metrics import Metrics
from runnerd.store import JobStore

SETTINGS = web.AppKey("settings", Settings)
ENGINE = web.AppKey("engine", Engine)
STORE = web.AppKey("store", JobStore)
IDENTITY = web.AppKey("identity", NodeIdentity)
VIEW = web.AppKey("view", StatusView)
DATA_DIR = web.AppKey("data_dir", Path)
METRICS = web.AppKey("metrics", Metrics)
READY = web.AppKey("ready", dict)  # {"ready": bool}: flipped once recovery is done


def base_url(request: web.Request) -> str:
    """The origin clients reached us at, for the URLs we hand back."""
    return f"{request.scheme}://{request.host}"
