"""Chain mode for the engine and the API: which parts of a job need an order, checking those
orders off the event loop within a bounded time, and quoting provider fees (initializeCompute).

Every failure is one of three answers, never a crash and never a free job:
  PolicyRejected  order_invalid / in_use_or_not_on_chain / fees_not_paid (400), Provider's codes;
  Unavailable     chain_unavailable (503): the node could not be asked in time, try again;
  nothing         every order checked out, the job may be queued.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from runnerd.catalog import Asset
from runnerd.chain import fees
from runnerd.chain.orders import Order, OrderRefused, OrderTarget, token_decimals, verify_order
from runnerd.chain.rpc import ChainUnavailable, Rpc, Transport
from runnerd.config import Chain, Environment, Settings
from runnerd.errors import PolicyRejected, Unavailable

log = logging.getLogger("runnerd.chain")
T = TypeVar("T")


@dataclass(frozen=True)
class Ordered:
    """One part of a job that is paid for with an order: `res` is Provider's resource name
    ("dataset", "datasets[1]", "algorithm"), `tx` the transferTxId the consumer sent for it."""

    res: str
    chain_id: int
    target: OrderTarget
    tx: str

    @property
    def key(self) -> str:
        """What the store records so an order pays for one job only."""
        return f"{self.chain_id}:{self.tx.lower()}"


def ordered_part(res: str, asset: Asset, service_id: str, tx: str) -> Ordered | None:
    """The order this part needs, or None for a local asset (no nftAddress: nothing to pay)."""
    if asset.nft_address is None or asset.chain_id is None:
        return None
    service = asset.service(service_id) or {}
    target = OrderTarget(asset.nft_address, str(service.get("datatokenAddress", "")).lower(), str(service_id),
                         asset.service_index(service_id), int(service.get("timeout", 0) or 0))
    return Ordered(res, asset.chain_id, target, tx)


def refusal(part: Ordered, reason: str) -> PolicyRejected:
    if part.res == "algorithm":
        return PolicyRejected(f"algorithm order: {reason}", "in_use_or_not_on_chain", "algorithm")
    return PolicyRejected(f"{part.res} order: {reason}", "order_invalid", f"{part.res}.serviceId")


class ChainGate:
    def __init__(self, settings: Settings, fee_address: str, private_key: str, transport: Transport | None = None):
        self.settings = settings
        self.fee_address = fee_address
        self._key = private_key
        self._transport = transport
        self._rpcs: dict[int, Rpc] = {}
        self._decimals: dict[int, int] = {}
        # Its own threads: a slow or silent node then holds at most these, never the loop's default
        # executor that other parts of the daemon use. A start that finds them all busy waits within
        # its own deadline, then answers 503 like any other outage.
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="runnerd-chain")

    def chain(self, chain_id: int) -> Chain | None:
        return self.settings.chain(chain_id)

    def _rpc(self, chain: Chain) -> Rpc:
        if chain.chainId not in self._rpcs:
            self._rpcs[chain.chainId] = Rpc(chain.rpcUrl, chain.rpcTimeout, self._transport)
        return self._rpcs[chain.chainId]

    async def _off_loop(self, chain: Chain, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking chain call in a worker thread, with a deadline of 3 RPC timeouts (the
        calls share it, so the thread ends by then too). An outage is a 503, never a 500."""
        budget = 3 * chain.rpcTimeout
        deadline = time.monotonic() + budget
        try:
            call = functools.partial(fn, *args, deadline=deadline, **kwargs)
            return await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(self._pool, call), budget + 1)
        except (ChainUnavailable, asyncio.TimeoutError) as exc:
            log.warning("chain %d: %s", chain.chainId, exc or "the check ran out of time")
            raise Unavailable(f"the node of chain {chain.chainId} did not answer in time; try again later",
                              "chain_unavailable") from None
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:  # an answer not shaped as expected
            log.warning("chain %d: unusable answer: %r", chain.chainId, exc)
            raise Unavailable(f"the node of chain {chain.chainId} gave an unusable answer; try again later",
                              "chain_unavailable") from None

    def _chain_for(self, part: Ordered) -> Chain:
        chain = self.chain(part.chain_id)
        if chain is None:
            raise refusal(part, f"this node does not check orders on chain {part.chain_id} (no chain mode for it)")
        return chain

    async def decimals(self, chain: Chain) -> int:
        if chain.chainId not in self._decimals:
            rpc = self._rpc(chain)
            self._decimals[chain.chainId] = await self._off_loop(chain, token_decimals, rpc, chain.feeToken)
        return self._decimals[chain.chainId]

    async def verify(self, part: Ordered, owner: str, env: Environment | None, allow_expired: bool = False) -> Order:
        chain = self._chain_for(part)
        if not part.tx:
            raise refusal(part, "transferTxId is required: the asset is paid for with an order")
        try:
            return await self._off_loop(chain, verify_order, self._rpc(chain), part.tx, part.target, owner,
                                        self.fee_address, env.id if env is not None else None,
                                        confirmations=chain.confirmations, allow_expired=allow_expired)
        except OrderRefused as exc:
            raise refusal(part, str(exc)) from None

    async def required_fee(self, chain: Chain, env: Environment, valid_until: int, now: float) -> int:
        if env.priceMin <= 0 or int(chain.feeToken, 16) == 0:
            return 0
        return fees.fee_amount(env.priceMin, valid_until, now, await self.decimals(chain), chain.feeToken)

    async def check_start(self, parts: list[Ordered], owner: str, env: Environment,
                          used: Callable[[str], bool]) -> list[Order]:
        """Every order of a start, in Provider's order (inputs, then the algorithm), then the fee:
        at least one order's provider fee covers priceMin until the latest validUntil, in this
        chain's fee token. `used(key)` says whether an order already paid for a job."""
        orders: list[tuple[Ordered, Order]] = []
        for part in parts:
            self._chain_for(part)
            if used(part.key):  # cheap, and spares the node a check that cannot pass
                raise refusal(part, "this order has already been used for a job")
            orders.append((part, await self.verify(part, owner, env if part.res != "algorithm" else None)))
        if env.priceMin <= 0:
            return [o for _, o in orders]
        if not orders:
            raise PolicyRejected(f"environment {env.id!r} costs {env.priceMin:g} per minute, and this job names no "
                                 "order that could pay for it (see initializeCompute)", "fees_not_paid", "order")
        now = time.time()
        valid_until = max(o.valid_until for _, o in orders)
        for part, order in orders:
            chain = self._chain_for(part)
            if order.fee_token != chain.feeToken.lower():
                continue
            if order.fee_amount >= await self.required_fee(chain, env, valid_until, now):
                return [o for _, o in orders]
        raise PolicyRejected(f"no order's provider fee covers environment {env.id!r} at {env.priceMin:g} per minute "
                             "until its validUntil", "fees_not_paid", "order")

    async def quote(self, part: Ordered, env: Environment, valid_until: int, charge: bool) -> dict[str, Any]:
        """A signed providerFee for this part: the whole fee if `charge`, else amount 0."""
        chain = self._chain_for(part)
        now = time.time()
        amount = await self.required_fee(chain, env, valid_until, now) if charge else 0
        data = fees.provider_data(env.id, now, part.target.datatoken, part.target.service_id)
        return fees.sign_fee(self._key, self.fee_address, chain.feeToken, amount, valid_until, data)


def parts_of(params: dict[str, Any], catalog: Any) -> list[Ordered]:
    """The orders a start request (already through intake, so well formed) must name: each input
    with a datatoken, then a published algorithm with one. Local assets need none."""
    dataset = params["dataset"]
    extra = params.get("additionalDatasets") or (params.get("datasets") or [])[1:]
    parts = []
    for i, item in enumerate([dataset, *extra]):
        asset = catalog.get(str(item["documentId"]))
        part = asset and ordered_part("dataset" if i == 0 else f"datasets[{i}]", asset, str(item["serviceId"]),
                                      str(item.get("transferTxId") or ""))
        if part:
            parts.append(part)
    algorithm = params.get("algorithm") or {}
    if not algorithm.get("meta") and algorithm.get("documentId"):
        asset = catalog.get(str(algorithm["documentId"]))
        part = asset and ordered_part("algorithm", asset, str(algorithm.get("serviceId", "")),
                                      str(algorithm.get("transferTxId") or ""))
        if part:
            parts.append(part)
    return parts


def probe(chain: Chain, transport: Transport | None = None) -> str:
    """For `runnerd doctor`: "" when rpcUrl answers for this chain id and the fee token answers
    decimals(), else why not (for the operator: it may name the URL)."""
    rpc = Rpc(chain.rpcUrl, chain.rpcTimeout, transport)
    deadline = time.monotonic() + 3 * chain.rpcTimeout
    try:
        got = rpc.chain_id(deadline)
        if got != chain.chainId:
            return f"the node at rpcUrl is on chain {got}, not {chain.chainId}"
        if int(chain.feeToken, 16):
            token_decimals(rpc, chain.feeToken, deadline)
    except ChainUnavailable as exc:
        return f"the node does not answer: {exc}"
    except (ValueError, TypeError, OverflowError):  # eth_abi's decoding errors are ValueErrors
        return f"feeToken {chain.feeToken} does not answer decimals(): not an ERC-20 on chain {chain.chainId}?"
    return ""
