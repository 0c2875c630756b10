"""Request parameters and signed-request authentication (SPEC §2).

Parameters come from the query string if it is non-empty, else from the JSON body (PUT and DELETE
accept both; ocean.py sends queries, ocean.js JSON). Unknown extra parameters are ignored.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from runnerd import signing
from runnerd.errors import BadRequest, Unauthorized
from runnerd.store import JobStore

MAX_PARAM = 256  # longest accepted scalar parameter (a signature is 132)


async def read_params(request: web.Request) -> dict[str, Any]:
    if request.query:
        return {k: request.query.getone(k) for k in request.query}
    if not request.can_read_body:
        return {}
    raw = await request.read()  # bounded by the app's client_max_size (413 beyond it)
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise BadRequest("the request body is not valid JSON (or nested too deeply)", "invalid_json") from None
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object", "invalid_json")
    return body


def text(params: dict[str, Any], name: str, required: bool = False, limit: int = MAX_PARAM) -> str:
    """A scalar parameter as the exact text the client sent ("" when absent)."""
    value = params.get(name)
    if value is None or value == "":
        if required:
            raise BadRequest(f"{name} is required", "missing", name)
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise BadRequest(f"{name} must be a string", "invalid", name)
    value = str(value)
    if len(value) > limit:
        raise BadRequest(f"{name} is longer than {limit} characters", "invalid", name)
    return value


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
        raise Unauthorized(
            f"invalid signature for {address}: sign keccak256 of '{''.join(parts)}' followed by the nonce "
            f"({nonce}) with EIP-191 personal_sign", "invalid_signature", "signature")
    if not await store.claim_nonce(address, nonce):
        last = await store.nonce(address)
        raise Unauthorized(f"invalid nonce: expected a nonce greater than {last or 0}, got {nonce}",
                           "invalid_nonce", "nonce")
    return address
