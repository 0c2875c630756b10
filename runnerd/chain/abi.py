"""The ABI pieces chain mode needs: three ERC20Template events and three view calls.

Only what Ocean's contracts (@oceanprotocol/contracts 2.x, ERC20Template / ERC721Template)
declare; decoded with eth_abi, selectors and topics computed from the signatures below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_abi import decode as _abi_decode
from eth_abi import encode
from eth_abi.exceptions import DecodingError

from runnerd.signing import keccak256 as keccak


def decode(types: list[str], data: bytes) -> tuple[Any, ...]:
    """eth_abi's decode, its errors (not ValueErrors) as ValueError: an answer not shaped as the
    ABI says is one kind of unusable answer for the callers."""
    try:
        return tuple(_abi_decode(types, data))
    except DecodingError as exc:
        raise ValueError(f"not ABI-encoded {types}: {exc}") from None


def _topic(signature: str) -> str:
    return "0x" + keccak(signature.encode()).hex()


def selector(signature: str) -> bytes:
    return keccak(signature.encode())[:4]


ORDER_STARTED = _topic("OrderStarted(address,address,uint256,uint256,uint256,address,uint256)")
ORDER_REUSED = _topic("OrderReused(bytes32,address,uint256,uint256)")
PROVIDER_FEE = _topic("ProviderFee(address,address,uint256,bytes,uint8,bytes32,bytes32,uint256)")


@dataclass(frozen=True)
class OrderStarted:
    consumer: str  # lower-case 0x address
    payer: str
    amount: int
    service_index: int
    timestamp: int


@dataclass(frozen=True)
class OrderReused:
    order_tx: str  # 0x + 64 hex, lower-case
    caller: str
    timestamp: int


@dataclass(frozen=True)
class ProviderFee:
    fee_address: str
    fee_token: str
    amount: int
    provider_data: bytes
    v: int
    r: bytes
    s: bytes
    valid_until: int


def _address_topic(topic: str) -> str:
    return "0x" + topic[-40:].lower()


def _data(log: dict[str, Any]) -> bytes:
    return bytes.fromhex(str(log.get("data", "0x"))[2:])


def logs_of(receipt: dict[str, Any], emitter: str, topic: str) -> list[dict[str, Any]]:
    """The receipt's logs with event `topic` emitted by the contract `emitter` itself. Filtering
    on the emitter matters: any contract called in the same transaction can emit an event with
    the same signature, and only the datatoken's own are evidence of an order."""
    out = []
    for log in receipt.get("logs") or []:
        topics = log.get("topics") or []
        if topics and str(topics[0]).lower() == topic and str(log.get("address", "")).lower() == emitter.lower():
            out.append(log)
    return out


def order_started(log: dict[str, Any]) -> OrderStarted:
    payer, amount, index, timestamp, _block = decode(["address", "uint256", "uint256", "uint256", "uint256"],
                                                     _data(log))
    return OrderStarted(_address_topic(log["topics"][1]), payer.lower(), amount, index, timestamp)


def order_reused(log: dict[str, Any]) -> OrderReused:
    tx, caller, timestamp, _number = decode(["bytes32", "address", "uint256", "uint256"], _data(log))
    return OrderReused("0x" + tx.hex(), caller.lower(), timestamp)


def provider_fee(log: dict[str, Any]) -> ProviderFee:
    amount, data, v, r, s, valid_until = decode(["uint256", "bytes", "uint8", "bytes32", "bytes32", "uint256"],
                                                _data(log))
    return ProviderFee(_address_topic(log["topics"][1]), _address_topic(log["topics"][2]), amount, data, v, r, s,
                       valid_until)


def call_data(signature: str, types: list[str], args: list[Any]) -> str:
    return "0x" + (selector(signature) + encode(types, args)).hex()


def decode_result(types: list[str], result: str) -> tuple[Any, ...]:
    return tuple(decode(types, bytes.fromhex(result[2:])))
