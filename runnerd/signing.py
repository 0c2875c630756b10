"""Ocean Provider's request signatures and nonces (SPEC §2, reference/provider-compute.md §4–5).

Signed text = message parts concatenated without separators, then the nonce exactly as received.
h = keccak256(utf8(text)); the signer is the EIP-191 personal-sign recovery over the 32-byte h.
"""

from __future__ import annotations

import re
from decimal import Decimal

import coincurve
from eth_hash.auto import keccak  # eth_utils.keccak wraps it in argument validation that costs more

# Everything here is libsecp256k1 (coincurve) and keccak directly, not eth-account: the same
# results (tests/test_signing.py checks them against eth-account), without the 0.3 s that importing
# eth-account costs every CLI command, and without its per-call wrapping on the API's hot path.

_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_SIGNATURE = re.compile(r"(0x)?[0-9a-fA-F]{130}")
# Integers (including 19-digit time_ns values) and legacy float strings such as "1693212345678.123".
_EIP191_HASH_PREFIX = b"\x19Ethereum Signed Message:\n32"
_NONCE = re.compile(r"[0-9]{1,30}(\.[0-9]{1,20})?")


# runnerd's own signed texts begin with this, then the action word and ":" (SPEC §2). Every text an
# Ocean client signs (Provider v2: `consumerAddress + ...`; ocean-node: `consumerAddress + nonce +
# command`; Provider's download: `documentId + nonce`) begins with an address or a DID, never with
# "runnerd:", so an own text can never be replayed as an Ocean one, nor one action as another.
OWN_PREFIX = "runnerd:"


def own_text(action: str, parts: list[str]) -> list[str]:
    """The parts of runnerd's own text for `action` (e.g. "computeLogs"): `runnerd:<action>:` and
    then the parts Ocean would sign; the nonce follows as always."""
    return [f"{OWN_PREFIX}{action}:", *parts]


def is_address(value: object) -> bool:
    return isinstance(value, str) and bool(_ADDRESS.fullmatch(value))


def nonce_text(value: object) -> str | None:
    """The nonce as the exact decimal text the client signed, or None if it is not a nonce.

    JSON numbers arrive as int (ocean.py) or str (ocean.js); a JSON float would have lost the
    client's text, so only integral floats are accepted."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        text = str(value)
    elif isinstance(value, float) and value.is_integer() and value >= 0:
        text = str(int(value))
    elif isinstance(value, str):
        text = value
    else:
        return None
    return text if _NONCE.fullmatch(text) else None


def message_hash(parts: list[str], nonce: str) -> bytes:
    return keccak(("".join(parts) + nonce).encode("utf-8"))


def _recover_address(parts: list[str], nonce: str, signature: str) -> bytes | None:
    """The 20-byte address that signed `parts + nonce`, or None if the signature is malformed.

    Equivalent to Account.recover_message(encode_defunct(primitive=h), signature=sig), computed
    with libsecp256k1 (coincurve) directly: every signed request pays for it, and eth-account's
    wrapping costs several times the recovery itself (the test vectors check the equivalence)."""
    if not isinstance(signature, str) or not _SIGNATURE.fullmatch(signature):
        return None
    raw = bytes.fromhex(signature[2:] if signature.startswith("0x") else signature)
    v = raw[64] - 27 if raw[64] >= 27 else raw[64]
    if v not in (0, 1):
        return None
    signable = keccak(_EIP191_HASH_PREFIX + message_hash(parts, nonce))
    try:
        public = coincurve.PublicKey.from_signature_and_message(raw[:64] + bytes([v]), signable, hasher=None)
    except Exception:  # noqa: BLE001 - an invalid point or r/s value: not a signature
        return None
    return keccak(public.format(compressed=False)[1:])[-20:]


def recover_signer(parts: list[str], nonce: str, signature: str) -> str | None:
    """The checksum address that signed `parts + nonce`, or None if the signature is malformed.
    Accepts v in {0, 1, 27, 28} and a missing 0x prefix."""
    address = _recover_address(parts, nonce, signature)
    return None if address is None else to_checksum_address(address)


def verify(address: str, parts: list[str], nonce: str, signature: str) -> bool:
    """Whether `address` (compared case-insensitively) signed `parts + nonce`."""
    signer = _recover_address(parts, nonce, signature)
    return signer is not None and "0x" + signer.hex() == address.lower()


def verify_any(address: str, texts: list[list[str]], nonce: str, signature: str) -> list[str] | None:
    """The first of `texts` that `address` signed (followed by `nonce`), or None."""
    for parts in texts:
        if verify(address, parts, nonce, signature):
            return parts
    return None


def js_number_text(value: Decimal) -> str:
    """`String(Number(x))` as JavaScript prints it: what ocean.js signs when it adds 1 to the
    nonce it read (a 19-digit nonce loses its last digits in a double)."""
    shortest = Decimal(repr(float(value)))  # repr and JS both print the shortest round-trip digits
    if shortest == shortest.to_integral_value():
        return str(int(shortest))
    return format(shortest.normalize(), "f")


def next_nonce_texts(stored: str | None) -> list[str]:
    """The texts a client that does not send its nonce signed: the stored nonce + 1, exactly and as
    ocean.js computes it (they differ only for nonces beyond 2**53)."""
    value = Decimal(stored or "0") + 1
    exact = str(int(value)) if value == value.to_integral_value() else format(value.normalize(), "f")
    texts = [exact]
    js = js_number_text(value)
    if js != exact and _NONCE.fullmatch(js):
        texts.append(js)
    return texts


def to_checksum_address(address: bytes | str) -> str:
    """EIP-55: the hex address with letters upper-cased where keccak of the lower-case hex has a
    nibble >= 8."""
    hexed = address.hex() if isinstance(address, bytes) else address.lower().removeprefix("0x")
    digest = keccak(hexed.encode()).hex()
    return "0x" + "".join(c.upper() if c.isalpha() and int(digest[i], 16) >= 8 else c for i, c in enumerate(hexed))


def _private_key(private_key: str | bytes) -> coincurve.PrivateKey:
    raw = private_key if isinstance(private_key, bytes) else bytes.fromhex(private_key.strip().removeprefix("0x"))
    if len(raw) != 32:
        raise ValueError("a private key is 32 bytes (64 hex digits)")
    return coincurve.PrivateKey(raw)  # ValueError for 0 or a value beyond the curve order


def address_of(private_key: str | bytes) -> str:
    """The checksum address of a private key (what eth-account's Account.from_key(k).address is)."""
    public = _private_key(private_key).public_key.format(compressed=False)[1:]
    return to_checksum_address(keccak(public)[-20:])


def sign(private_key: str | bytes, parts: list[str], nonce: str) -> str:
    """Sign like ocean.py/ocean.js do: EIP-191 over the 32-byte keccak of the text, v = 27/28,
    0x-prefixed; used by the client commands."""
    signable = keccak(_EIP191_HASH_PREFIX + message_hash(parts, nonce))
    raw = _private_key(private_key).sign_recoverable(signable, hasher=None)  # r || s || v (0/1)
    return "0x" + (raw[:64] + bytes([raw[64] + 27])).hex()


# -- over a 32-byte hash (chain mode's provider fees, runnerd/chain/fees.py) -----------------------


def keccak256(data: bytes) -> bytes:
    return keccak(data)


def sign_eip191_hash(private_key: str | bytes, digest: bytes) -> bytes:
    """r ‖ s ‖ v (v = 27/28) of EIP-191 "\\n32" over `digest`: what Solidity's ecrecover on
    keccak("\\x19Ethereum Signed Message:\\n32" ‖ digest) gives back the key's address for."""
    raw = _private_key(private_key).sign_recoverable(keccak(_EIP191_HASH_PREFIX + digest), hasher=None)
    return raw[:64] + bytes([raw[64] + 27])


def eip191_hash_signer(digest: bytes, v: int, r: bytes, s: bytes) -> bytes | None:
    """The 20-byte address that signed `digest` (EIP-191 "\\n32"), or None if it is no signature."""
    recid = v - 27 if v >= 27 else v
    if recid not in (0, 1) or len(r) != 32 or len(s) != 32:
        return None
    try:
        public = coincurve.PublicKey.from_signature_and_message(r + s + bytes([recid]),
                                                                keccak(_EIP191_HASH_PREFIX + digest), hasher=None)
    except Exception:  # noqa: BLE001 - an invalid point or r/s value: not a signature
        return None
    return keccak(public.format(compressed=False)[1:])[-20:]
