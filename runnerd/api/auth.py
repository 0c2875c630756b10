"""Which texts each compute request may be signed over, and the nonce rules around them (SPEC §2).

Ocean's texts cannot change, and some of them are the same for different actions (a status read,
a stop and a delete of one job all sign `consumerAddress + jobId + documentId + nonce`). So:
- runnerd's own texts (`runnerd:<action>:` + Ocean's parts + nonce, see signing.own_text) bind
  the action, and runnerd's own client signs only those;
- an action on *every* job of an address (no `jobId`) is accepted only over runnerd's own text, so
  a status or start signature caught on its way can never stop or delete them all;
- the nonce-less forms real clients send are accepted only where they cannot be replayed into
  anything new: a stop of one named job (`consumerAddress + jobId`, idempotent), and a delete
  whose nonce is taken as stored + 1 and claimed like any other.
"""

from __future__ import annotations

from typing import Any

from runnerd import signing
from runnerd.api.params import bad_signature, claim, consumer
from runnerd.errors import BadRequest, Unauthorized
from runnerd.store import JobStore


def texts_for(action: str, address: str, job_id: str, document_id: str, *, read: bool = False) -> list[list[str]]:
    """The texts a GET/PUT/DELETE compute request may sign: Ocean's when it names one job (or for
    a read), and always runnerd's own for `action`."""
    own = signing.own_text(action, [address, job_id, document_id])
    return [[address, job_id, document_id], own] if job_id or read else [own]


def signed_nonce_free(params: dict[str, Any], nonce_free: list[list[str]] | None) -> bool:
    """Whether the request is signed over one of the `nonce_free` texts: then nothing was claimed,
    and anyone who saw the request can send it again, so its answer must give nothing away."""
    signature = params.get("signature")
    return bool(nonce_free) and isinstance(signature, str) and bool(signature) and \
        signing.verify_any(consumer(params), nonce_free or [], "", signature) is not None


def spent(store: JobStore, texts: list[list[str]], parts: list[str], nonce: str) -> bool:
    """Whether `parts + nonce` (Ocean's text, `texts[0]`: consumerAddress + jobId + …) was already
    used as a computeResult signature, whose index and nonce run together into this nonce."""
    return parts is texts[0] and len(parts) >= 2 and bool(parts[1]) and \
        store.suffix_spent(parts[1], "".join(parts[2:]) + nonce)


async def authenticate(store: JobStore, params: dict[str, Any], texts: list[list[str]], *,
                       nonce_free: list[list[str]] | None = None, nonce_optional: bool = False) -> str:
    """Verify that `consumerAddress` signed one of `texts` followed by the nonce, then claim that
    nonce (compare-and-set) before anything else happens. Returns the address as sent.

    `nonce_free`: texts accepted without a nonce (nothing is claimed; only for actions whose
    replay changes nothing). `nonce_optional`: a request without `nonce` is verified against the
    stored nonce + 1, which is then claimed the same way, so replaying it fails."""
    address = consumer(params)
    signature = params.get("signature")
    signature = signature if isinstance(signature, str) else ""
    if signed_nonce_free(params, nonce_free):
        return address
    raw = params.get("nonce")
    nonce = signing.nonce_text(raw)
    if nonce is not None:
        nonces = [nonce]
    elif raw not in (None, ""):
        raise BadRequest("nonce must be a decimal number", "invalid", "nonce")
    elif nonce_optional:
        nonces = signing.next_nonce_texts(await store.nonce(address))
    else:
        raise BadRequest("nonce is required (GET /api/services/nonce gives the last one; send it + 1)",
                         "missing", "nonce")
    if not signature:
        raise Unauthorized("signature is required", "invalid_signature", "signature")
    for candidate in nonces:
        parts = signing.verify_any(address, texts, candidate, signature)
        if parts is not None and not spent(store, texts, parts, candidate):
            break
    else:
        raise bad_signature(address, texts[0], nonces[0])
    await claim(store, address, candidate)
    return address
