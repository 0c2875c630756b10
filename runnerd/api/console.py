"""The web console: a page for the node's operator (environments, slots, the queue, jobs, recent
failures and the last hour as charts), polling one JSON endpoint.

Access works like Jupyter's: without a token only from this host to a daemon bound to loopback;
otherwise with the operator token the daemon keeps in `<data-dir>/console.token`, given once as
`?token=` (then kept in an HttpOnly, SameSite=Strict cookie) or as `Authorization: Bearer`.
The page never shows results, logs, custom data, specs, algorithm code or dataset locations: the
store read behind it does not even select them (store/console.py)."""

from __future__ import annotations

import hmac
import ipaddress
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from runnerd.api.console_state import HOUR, build_state
from runnerd.api.keys import ENGINE, IDENTITY, SETTINGS, STORE
from runnerd.api.params import bearer_token
from runnerd.errors import Unauthorized

PREFIX = "/console"
COOKIE = "runnerd_console"
STATIC = Path(__file__).resolve().parent / "console_static"
_TYPES = {"console.js": "text/javascript", "console.css": "text/css"}
# A proxy on this host forwards other people's requests from loopback: those are not local.
_FORWARDED = ("Forwarded", "X-Forwarded-For", "X-Real-IP", "X-Forwarded-Host")
# Same-origin only, no framing (clickjacking), no inline script: the page is data, not code.
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
}


@dataclass
class Console:
    token: str
    loopback_bound: bool  # the daemon listens on loopback only and is not published (publicUrl)
    _cache: tuple[float, dict[str, Any]] | None = field(default=None, repr=False)


CONSOLE = web.AppKey("console", Console)


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        addr = ipaddress.ip_address(host.strip("[]").split("%")[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def console_url(host: str, port: int, token: str, loopback_bound: bool) -> str:
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}{PREFIX}"
    return url if loopback_bound else f"{url}?token={token}"


def _local(request: web.Request) -> bool:
    """From this host to a loopback-only daemon, naming a loopback host (a page of another site
    whose name was rebound to 127.0.0.1 sends its own name in Host) and not via a proxy."""
    if not request.app[CONSOLE].loopback_bound:
        return False
    peer = request.transport.get_extra_info("peername") if request.transport else None
    if not peer or not is_loopback_host(str(peer[0])):
        return False
    if any(h in request.headers for h in _FORWARDED):
        return False
    host = request.headers.get("Host", "")
    host = host.rpartition("]")[0] + "]" if host.startswith("[") else host.rpartition(":")[0] or host
    return is_loopback_host(host)


def _matches(given: str | None, token: str) -> bool:
    if not given:
        return False
    return hmac.compare_digest(given.encode(), token.encode())


def _check(request: web.Request) -> str:
    """How the request may see the console ("query": set the cookie, "header", "cookie", "local"),
    or 401 `console_token`."""
    token = request.app[CONSOLE].token
    if _matches(request.query.get("token"), token):
        return "query"
    if _matches(bearer_token(request), token):
        return "header"
    if _matches(request.cookies.get(COOKIE), token):
        return "cookie"
    if _local(request):
        return "local"
    raise Unauthorized("the web console needs the operator token: open the URL the daemon logged at start "
                       "(…/console?token=…), or send Authorization: Bearer <token>; the token is in "
                       "console.token in the daemon's data dir", "console_token")


def _secured(response: web.StreamResponse, request: web.Request, how: str) -> web.StreamResponse:
    response.headers.update(SECURITY_HEADERS)
    if how == "query":
        response.set_cookie(COOKIE, request.app[CONSOLE].token, path=PREFIX, httponly=True, samesite="Strict",
                            secure=request.secure)
    return response


async def page(request: web.Request) -> web.StreamResponse:
    how = _check(request)
    if how == "query":
        # the token leaves the address bar (history, screenshots, shoulder surfers) for the cookie
        return _secured(web.Response(status=303, headers={"Location": PREFIX}), request, how)
    return _secured(web.Response(body=_asset("index.html"), content_type="text/html", charset="utf-8"),
                    request, how)


async def asset(request: web.Request) -> web.StreamResponse:
    how = _check(request)
    name = request.path.rpartition("/")[2]
    return _secured(web.Response(body=_asset(name), content_type=_TYPES[name], charset="utf-8"), request, how)


async def state(request: web.Request) -> web.StreamResponse:
    how = _check(request)
    console = request.app[CONSOLE]
    now = time.time()
    # Every open page polls every 2 s: viewers within a second share one read.
    if console._cache is None or now - console._cache[0] >= 1.0:
        jobs, cut = await request.app[STORE].console_jobs(now - HOUR)
        body = build_state(request.app[SETTINGS], request.app[ENGINE], request.app[IDENTITY].address, jobs, cut,
                           now)
        console._cache = (now, body)
    return _secured(web.json_response(console._cache[1]), request, how)


_ASSETS: dict[str, bytes] = {}


def _asset(name: str) -> bytes:
    if name not in _ASSETS:
        _ASSETS[name] = (STATIC / name).read_bytes()
    return _ASSETS[name]


def setup(app: web.Application) -> None:
    app.router.add_get(PREFIX, page)
    app.router.add_get(f"{PREFIX}/console.js", asset)
    app.router.add_get(f"{PREFIX}/console.css", asset)
    app.router.add_get(f"{PREFIX}/api/state", state)
