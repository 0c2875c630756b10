"""Provider fees: the amount, the `providerData`, and the node key's signature over them.

The signature is what ERC20Template._checkProviderFee verifies on chain before it lets an order
through: ecrecover(keccak("\\x19Ethereum Signed Message:\\n32" ‖ keccak(providerData ‖ feeAddress ‖
feeToken ‖ uint256 amount ‖ uint256 validUntil)), v, r, s) == feeAddress. Because the node key
signs the amount, the token and validUntil, a consumer can neither lower the fee nor stretch it.
"""

from __future__ import annotations

import json
from decimal import ROUND_FLOOR, Decimal
from typing import Any

from runnerd.signing import eip191_hash_signer, keccak256, sign_eip191_hash, to_checksum_address

ZERO_ADDRESS = "0x" + "0" * 40


def fee_amount(price_min: float, valid_until: int, now: float, decimals: int, fee_token: str) -> int:
    """priceMin (fee-token units per minute) × the seconds from now until validUntil / 60, in the
    token's smallest unit, rounded down; 0 for a zero fee token (Provider's rule). Unlike
    Provider (which takes timedelta.seconds, wrapping a past validUntil to a day), a validUntil
    in the past costs nothing."""
    if fee_token.lower() == ZERO_ADDRESS or price_min <= 0:
        return 0
    seconds = max(0, int(valid_until - now))
    units = Decimal(str(price_min)) * seconds / 60 * (Decimal(10) ** decimals)
    return int(units.to_integral_value(rounding=ROUND_FLOOR))


def provider_data(environment: str, timestamp: float, datatoken: str, service_id: str) -> bytes:
    """Provider's compact JSON (separators without spaces), as bytes: what the ProviderFee event
    carries back and the order check reads the environment, datatoken and service from."""
    return json.dumps({"environment": environment, "timestamp": timestamp, "dt": datatoken, "id": service_id},
                      separators=(",", ":")).encode()


def fee_hash(data: bytes, fee_address: str, fee_token: str, amount: int, valid_until: int) -> bytes:
    """keccak(abi.encodePacked(bytes providerData, address, address, uint256, uint256))."""
    packed = (data + bytes.fromhex(fee_address[2:]) + bytes.fromhex(fee_token[2:])
              + amount.to_bytes(32, "big") + valid_until.to_bytes(32, "big"))
    return keccak256(packed)


def sign_fee(private_key: str, fee_address: str, fee_token: str, amount: int, valid_until: int,
             data: bytes) -> dict[str, Any]:
    """The `providerFee` object of initializeCompute (Provider v2 field names and types)."""
    raw = sign_eip191_hash(private_key, fee_hash(data, fee_address, fee_token, amount, valid_until))
    return {
        "providerFeeAddress": to_checksum_address(fee_address),
        "providerFeeToken": to_checksum_address(fee_token),
        "providerFeeAmount": str(amount),
        "providerData": "0x" + data.hex(),
        "v": raw[64],
        "r": "0x" + raw[:32].hex(),
        "s": "0x" + raw[32:64].hex(),
        "validUntil": valid_until,
    }


def fee_signer(data: bytes, fee_address: str, fee_token: str, amount: int, valid_until: int, v: int, r: bytes,
               s: bytes) -> str | None:
    """The lower-case address that signed a ProviderFee event's fields, or None if it is not a
    signature at all."""
    signer = eip191_hash_signer(fee_hash(data, fee_address, fee_token, amount, valid_until), v, r, s)
    return None if signer is None else "0x" + signer.hex()
