"""ocean-node's request authentication: a signature over `address + nonce + command`, or an auth
token (createAuthToken) in the `Authorization` header.

The signature is runnerd's usual one (keccak256 of the text, EIP-191 over the 32 bytes) and the
nonce is claimed in the same ledger, with the same compare-and-set, as the Provider-v2 dialect's:
a nonce used in one dialect is used in both. The texts cannot be confused: Provider-v2 texts end in
the nonce's digits, these in a command word, and runnerd's own begin with `runnerd:`.

Tokens are HS256 JWTs with an `address` claim (ocean.js reads it client-side), signed with a key
derived from the node key, and usable only while their row in the store exists and has not
expired. Unlike ocean-node's main branch, a token acts only for the address it was issued to: a
request that names another address is refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

from aiohttp import web

from runnerd import signing
from runnerd.api.keys import IDENTITY, STORE
from runnerd.api.params import bearer_token, claim, read_params, text
from runnerd.errors import BadRequest, Unauthorized
from runnerd.store.tokens import AuthTokens

FREE_START, START, STOP, RESULT, LOGS = (
    "freeStartCompute", "startCompute", "stopCompute", "getComputeResult", "getComputeStreamableLogs")
CREATE_TOKEN, INVALIDATE_TOKEN = "createAuthToken", "invalidateAuthToken"
DELETE = "deleteCompute"  # runnerd's: ocean-node has no delete

TOKENS = web.AppKey("node_tokens", AuthTokens)
TOKEN_TTL = 24 * 3600  # without validUntil
TOKEN_MAX_TTL = 30 * 24 * 3600


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text_: str) -> bytes:
    return base64.urlsafe_b64decode(text_ + "=" * (-len(text_) % 4))


def _key(request: web.Request) -> bytes:
    private = bytes.fromhex(request.app[IDENTITY].private_key.removeprefix("0x"))
    return hashlib.sha256(b"runnerd auth token\x00" + private).digest()


def mint(request: web.Request, address: str, nonce: str, valid_until: float) -> str:
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    claims = {"address": address, "nonce": nonce, "createdAt": int(time.time() * 1000), "exp": int(valid_until)}
    body = _b64(json.dumps(claims, separators=(",", ":")).encode())
    mac = hmac.new(_key(request), f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{_b64(mac)}"


def _token_address(request: web.Request, token: str) -> str | None:
    """The address a token of ours was issued to, if it is genuine, live and not invalidated."""
    pieces = token.split(".")
    if len(pieces) != 3 or len(token) > 2048:
        return None
    header, body, mac = pieces
    expected = hmac.new(_key(request), f"{header}.{body}".encode(), hashlib.sha256).digest()
    try:
        if not hmac.compare_digest(_unb64(mac), expected):
            return None
        claims = json.loads(_unb64(body))
    except (ValueError, UnicodeDecodeError):
        return None
    address = claims.get("address") if isinstance(claims, dict) else None
    if not isinstance(address, str) or not signing.is_address(address) \
            or request.app[TOKENS].address_of(token) != address.lower():
        return None
    return address


def token_of(request: web.Request) -> str:
    """The raw token in `Authorization` (ocean.js sends it bare; `Bearer ` is accepted too)."""
    bearer = bearer_token(request)
    return bearer if bearer is not None else request.headers.get("Authorization", "").strip()


def address_param(params: dict[str, Any], name: str = "consumerAddress", required: bool = True) -> str:
    address = text(params, name, required=required)
    if address and not signing.is_address(address):
        raise BadRequest(f"{name} must be a 0x-prefixed 40-hex-digit address", "invalid", name)
    return address


def by_token(request: web.Request, params: dict[str, Any], name: str = "consumerAddress") -> str | None:
    """The token's address when the request carries a token of ours (None without one); 401 for a
    token that is not valid or that was issued to another address than `name` says."""
    token = token_of(request)
    if not token or token == "undefined":  # ocean.js's Aquarius sends the literal "undefined"
        return None
    address = _token_address(request, token)
    if address is None:
        raise Unauthorized("the auth token is not valid (expired, invalidated or not issued here); create a new "
                           "one with createAuthToken", "invalid_token", "Authorization")
    named = address_param(params, name, required=False)
    if named and named.lower() != address.lower():
        raise Unauthorized(f"the auth token was issued to {address}, not {named}", "token_address_mismatch", name)
    return named or address


async def authenticate(request: web.Request, params: dict[str, Any], command: str, *,
                       name: str = "consumerAddress", texts: list[list[str]] | None = None,
                       allow_token: bool = True) -> str:
    """The address that signed `address + nonce + command` (its nonce claimed before anything
    acts), or the address of the request's auth token. A signed request is checked first, as
    ocean-node does. `texts`: other accepted texts (each followed by nothing: they hold the nonce)."""
    signature, raw_nonce = params.get("signature"), params.get("nonce")
    if allow_token and not signature and raw_nonce in (None, ""):
        address = by_token(request, params, name)
        if address is not None:
            return address
    address = address_param(params, name)
    nonce = signing.nonce_text(raw_nonce)
    if nonce is None:
        if raw_nonce in (None, ""):
            raise BadRequest("nonce is required (GET /api/services/nonce gives the last one; send it + 1), or an "
                             "auth token in Authorization", "missing", "nonce")
        raise BadRequest("nonce must be a decimal number", "invalid", "nonce")
    if not isinstance(signature, str) or not signature:
        raise Unauthorized("signature is required", "invalid_signature", "signature")
    candidates = [[address, nonce, command], *(texts or [])]
    if signing.verify_any(address, candidates, "", signature) is None:
        raise Unauthorized(f"invalid signature for {address}: sign keccak256 of '{address}{nonce}{command}' with "
                           "EIP-191 personal_sign", "invalid_signature", "signature")
    await claim(request.app[STORE], address, nonce)
    return address


async def create_token(request: web.Request) -> web.Response:
    """POST auth/token {address, signature, nonce, validUntil?}: signed `address + nonce +
    createAuthToken` (a token cannot make tokens). validUntil (epoch milliseconds, or seconds) is
    capped at 30 days; without it a token lasts a day."""
    params = await read_params(request)
    address = await authenticate(request, params, CREATE_TOKEN, name="address", allow_token=False)
    now = time.time()
    until = _valid_until(params.get("validUntil"), now)
    token = mint(request, address, text(params, "nonce"), until)
    await request.app[TOKENS].add(token, address, now, until)
    return web.json_response({"token": token})


def _valid_until(value: Any, now: float) -> float:
    if value in (None, "", 0):
        return now + TOKEN_TTL
    try:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError
        number = float(value)
    except (ValueError, OverflowError):  # OverflowError: an integer beyond any float (JSON has no bound)
        raise BadRequest("validUntil must be a time (epoch milliseconds)", "invalid", "validUntil") from None
    seconds = number / 1000 if number > 1e11 else number
    if not seconds > now:
        raise BadRequest("validUntil is in the past", "invalid", "validUntil")
    return min(seconds, now + TOKEN_MAX_TTL)


async def invalidate_token(request: web.Request) -> web.Response:
    """POST auth/token/invalidate {address, signature, nonce, token}: ocean.js 8 signs `address +
    nonce` here (no command); `address + nonce + invalidateAuthToken` is accepted too. Only the
    signer's own tokens can be invalidated."""
    params = await read_params(request)
    token = text(params, "token", required=True, limit=2048)
    address = address_param(params, "address")
    nonce = signing.nonce_text(params.get("nonce")) or ""
    address = await authenticate(request, params, INVALIDATE_TOKEN, name="address", allow_token=False,
                                 texts=[[address, nonce]])
    return web.json_response({"success": await request.app[TOKENS].remove(token, address)})
