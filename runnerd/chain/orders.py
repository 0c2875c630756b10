"""Is this transaction a valid order for this service, paid to this node? Ocean Provider's checks
(ocean_provider/utils/datatoken.py validate_order / verify_order_tx), in Provider's order.

Each check exists because skipping it lets someone run a job without paying for it:
  the datatoken is deployed by the asset's NFT     else any token someone minted for free would do
  the receipt exists, is confirmed and has status 1 else a pending, dropped or reverted tx would do
  a ProviderFee event of this datatoken names it    else a fee paid for another asset would do
  … and this environment                           else a cheap environment's fee buys a dear one
  … and this node's fee address, signed by its key else a fee paid to (or signed by) another node
  validUntil (plus Provider's grace) not passed     else one fee would buy unbounded time
  OrderReused is followed to the original order     a reuse pays a new fee, not a new datatoken
  OrderStarted of this datatoken, this service index else an order of another service would do
  amount ≥ 1 datatoken                              else a fraction of the price would do
  the order is younger than the service's timeout  the publisher's access window
  the caller is the order's consumer or payer      else anyone could spend someone else's order
Events are read only from logs the datatoken itself emitted (Provider reads any log with the
event's signature, which another contract in the same transaction could forge).
Using an order for one job only is the store's part (engine/orders.py records it atomically).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any

from runnerd.chain import abi
from runnerd.chain.fees import fee_signer
from runnerd.chain.rpc import ChainUnavailable, Rpc, to_int

TX_HASH = re.compile(r"0x[0-9a-fA-F]{64}")
ONE_DATATOKEN = 10**18
GRACE_SECONDS = 90  # Provider's allowance for a slow confirmation (provider#498, #503)


class OrderRefused(Exception):
    """Not a valid order; the message says which check failed (it names no operator detail)."""


@dataclass(frozen=True)
class OrderTarget:
    """What the order must be for: the asset's NFT and datatoken, the DDO service's id, index
    (its position in `services`) and timeout (seconds, 0 = forever)."""

    nft: str
    datatoken: str
    service_id: str
    service_index: int
    timeout: int


@dataclass(frozen=True)
class Order:
    tx: str  # the transaction the consumer named (startOrder or reuseOrder)
    start_tx: str  # the startOrder it stands for (the same unless it is a reuse)
    fee_amount: int
    fee_token: str
    valid_until: int


def verify_order(rpc: Rpc, tx: str, target: OrderTarget, sender: str, fee_address: str,
                 environment: str | None, confirmations: int = 1, allow_expired: bool = False,
                 now: float | None = None, deadline: float | None = None) -> Order:
    """The order `tx` stands for, or OrderRefused. ChainUnavailable if the node cannot tell."""
    now = time.time() if now is None else now
    if not isinstance(tx, str) or not TX_HASH.fullmatch(tx):
        raise OrderRefused("the transaction id is not 0x followed by 64 hex digits")
    tx = tx.lower()
    dt = target.datatoken.lower()
    deployed = rpc.eth_call(target.nft, abi.call_data("isDeployed(address)", ["address"], [dt]), deadline)
    if len(deployed) < 66 or int(deployed[2:66], 16) != 1:
        raise OrderRefused("the asset's datatoken was not deployed by its NFT")

    receipt = _confirmed_receipt(rpc, tx, confirmations, deadline, "the order transaction")

    fee_log = None
    for log in abi.logs_of(receipt, dt, abi.PROVIDER_FEE):
        fee = abi.provider_fee(log)
        data = _provider_data(fee.provider_data)
        if data and str(data.get("dt", "")).lower() == dt and str(data.get("id", "")).lower() == \
                target.service_id.lower():
            fee_log = (fee, data)  # the last match wins, as in Provider
    if fee_log is None:
        raise OrderRefused("the transaction has no provider fee for this datatoken and service")
    fee, data = fee_log
    if environment is not None and data.get("environment") != environment:
        raise OrderRefused("the provider fee was paid for another compute environment")
    if fee.fee_address != fee_address.lower():
        raise OrderRefused("the provider fee was paid to another provider")
    if fee_signer(fee.provider_data, fee.fee_address, fee.fee_token, fee.amount, fee.valid_until, fee.v, fee.r,
                  fee.s) != fee_address.lower():
        raise OrderRefused("the provider fee is not signed by this provider")
    if fee.valid_until > 0 and not allow_expired and now >= fee.valid_until:
        # Provider's grace: the time the order took to be mined after the quote, plus 90 s.
        quoted = data.get("timestamp")
        block_time = to_int(rpc.block(receipt["blockHash"], deadline).get("timestamp"))
        grace = block_time - float(quoted) + GRACE_SECONDS if isinstance(quoted, (int, float)) and \
            not isinstance(quoted, bool) else 0
        if now >= fee.valid_until + grace:
            raise OrderRefused("the provider fee has expired (validUntil has passed)")

    reused = [abi.order_reused(log) for log in abi.logs_of(receipt, dt, abi.ORDER_REUSED)]
    reuse_time = None
    start_receipt = receipt
    if reused and int(reused[0].order_tx, 16):
        reuse_time = reused[0].timestamp
        start_receipt = _confirmed_receipt(rpc, reused[0].order_tx, 1, deadline, "the order it reuses")

    started = None
    for log in abi.logs_of(start_receipt, dt, abi.ORDER_STARTED):
        event = abi.order_started(log)
        if event.service_index == target.service_index:
            started = event
    if started is None:
        raise OrderRefused("the transaction has no order of this datatoken for this service")
    if started.amount < ONE_DATATOKEN:
        raise OrderRefused("the order paid less than one datatoken")
    ordered_at = reuse_time if reuse_time is not None else started.timestamp
    if target.timeout and now - ordered_at > target.timeout:
        raise OrderRefused(f"the order has expired (the service's timeout is {target.timeout} s)")
    if sender.lower() not in (started.consumer, started.payer):
        raise OrderRefused("the caller is neither the consumer nor the payer of the order")
    return Order(tx, str(start_receipt.get("transactionHash", tx)).lower(), fee.amount, fee.fee_token,
                 fee.valid_until)


def _confirmed_receipt(rpc: Rpc, tx: str, confirmations: int, deadline: float | None, what: str) -> dict[str, Any]:
    receipt = rpc.receipt(tx, deadline)
    if receipt is None:
        raise OrderRefused(f"{what} is not on chain (no receipt)")
    if to_int(receipt.get("status", "0x0")) != 1:
        raise OrderRefused(f"{what} failed on chain (reverted)")
    if confirmations > 1:
        mined = to_int(receipt.get("blockNumber"))
        have = rpc.block_number(deadline) - mined + 1
        if have < confirmations:
            raise OrderRefused(f"{what} has {have} of the {confirmations} confirmations this node waits for; "
                               "try again shortly")
    if not isinstance(receipt.get("logs"), list) or not isinstance(receipt.get("blockHash"), str):
        raise ChainUnavailable("a receipt without logs or blockHash")
    return receipt


def _provider_data(raw: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None  # Provider skips a malformed providerData silently too
    return data if isinstance(data, dict) else None


def token_decimals(rpc: Rpc, token: str, deadline: float | None = None) -> int:
    result = rpc.eth_call(token, abi.call_data("decimals()", [], []), deadline)
    (decimals,) = abi.decode_result(["uint8"], result)
    return int(decimals)
