"""Request parameters and signed-request authentication (SPEC §2).

Parameters come from the query string if it is non-empty, else from the JSON body (PUT and DELETE
accept both; ocean.py sends queries, ocean.js JSON). Unknown extra parameters are ignored.
"""

from __future__ import annotations

import asyncio
import json
import json.scanner
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import hdrs, web

from runnerd import signing
from runnerd.api.keys import SETTINGS
from runnerd.api.transport import drop_unread_body
from runnerd.errors import BadRequest, Unauthorized
from runnerd.fields import text  # the one validator of a scalar field; the handlers take it from here
from runnerd.store import JobStore

# Bodies up to this size are parsed on the event loop (the C parser takes about a millisecond at
# worst); every Ocean request but a start with large raw code is far below it.
INLINE_JSON_BYTES = 64 * 1024


class _YieldingDecoder(json.JSONDecoder):
    """The standard decoder with the pure-Python scanner on top of the C string scanner. The C
    parser holds the GIL for a whole document (60 ms for 4 MiB of small values), so a thread does
    not help with it; this one gives the event loop its turn every switch interval. Long strings
    (raw code) are still scanned in C, so the common large body costs about the same."""

    def __init__(self) -> None:
        super().__init__()
        self.scan_once = json.scanner.py_make_scanner(self)  # type: ignore[attr-defined]  # not in typeshed


_DECODER = _YieldingDecoder()
# One thread: large bodies are parsed one at a time, which also bounds the memory their parsed
# form takes (4 MiB of `{}` is 90 MB of dicts).
_PARSER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="runnerd-json")


def _parse(raw: bytes) -> Any:
    return _DECODER.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))


async def parse_off_loop(raw: bytes) -> Any:
    return await asyncio.get_running_loop().run_in_executor(_PARSER, _parse, raw)


async def read_params(request: web.Request) -> dict[str, Any]:
    if request.query:
        return {k: request.query.getone(k) for k in request.query}
    if not request.can_read_body:
        return {}
    return await read_json(request)


async def read_json(request: web.Request) -> dict[str, Any]:
    """The JSON object in the body, after the cheap checks (the route and method were matched
    before any handler ran): a JSON content type, a declared length within maxRequestBytes. The
    body must arrive within requestBodySeconds; a large one is parsed off the event loop."""
    if hdrs.CONTENT_TYPE in request.headers and not _is_json(request.content_type):
        raise web.HTTPUnsupportedMediaType()
    limit = request.client_max_size
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(limit, request.content_length)
    try:
        async with asyncio.timeout(request.app[SETTINGS].requestBodySeconds):
            raw = await request.read()  # bounded by the app's client_max_size (413 beyond it)
    except TimeoutError:
        drop_unread_body(request)
        raise web.HTTPRequestTimeout() from None
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw) if len(raw) <= INLINE_JSON_BYTES else await parse_off_loop(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise BadRequest("the request body is not valid JSON (or nested too deeply)", "invalid_json") from None
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object", "invalid_json")
    return body


def _is_json(content_type: str) -> bool:
    return content_type == "application/json" or (content_type.startswith("application/")
                                                   and content_type.endswith("+json"))


def consumer(params: dict[str, Any]) -> str:
    address = text(params, "consumerAddress", required=True)
    if not signing.is_address(address):
        raise BadRequest("consumerAddress must be a 0x-prefixed 40-hex-digit address", "invalid", "consumerAddress")
    return address


async def authenticate(store: JobStore, params: dict[str, Any], parts: list[str]) -> str:
    """Verify the signature over `parts + nonce`, then claim the nonce (compare-and-set) before
    anything else happens. Returns the consumer address as sent."""
    address = consumer(params)
    nonce = signing.nonce_text(params.get("nonce"))
    if nonce is None:
        if params.get("nonce") in (None, ""):
            raise BadRequest("nonce is required (GET /api/services/nonce gives the last one; send it + 1)",
                             "missing", "nonce")
        raise BadRequest("nonce must be a decimal number", "invalid", "nonce")
    signature = params.get("signature")
    if not signature:
        raise Unauthorized("signature is required", "invalid_signature", "signature")
    if not signing.verify(address, parts, nonce, signature if isinstance(signature, str) else ""):
        raise bad_signature(address, parts, nonce)
    await claim(store, address, nonce)
    return address


def bad_signature(address: str, parts: list[str], nonce: str) -> Unauthorized:
    return Unauthorized(f"invalid signature for {address}: sign keccak256 of '{''.join(parts)}' followed by the "
                        f"nonce ({nonce}) with EIP-191 personal_sign", "invalid_signature", "signature")


async def claim(store: JobStore, address: str, nonce: str) -> None:
    """Claim the nonce (compare-and-set, durable before anything acts) or refuse the request."""
    if not await store.claim_nonce(address, nonce):
        last = await store.nonce(address)
        raise Unauthorized(f"invalid nonce: expected a nonce greater than {last or 0}, got {nonce}",
                           "invalid_nonce", "nonce")


def bearer_token(request: web.Request) -> str | None:
    """The token of an `Authorization: Bearer <token>` header; None without one (absent, or another
    scheme). The console, the job-site routes and the ocean-node dialect all read it here."""
    value = request.headers.get("Authorization", "").strip()
    return value[7:].strip() if value[:7].lower() == "bearer " else None
