"""A small Ethereum JSON-RPC client: blocking, bounded in time, with an injectable transport.

Blocking on purpose: the engine runs the order checks in a worker thread (chain/gate.py), never
on the event loop. Every call has a timeout, and a whole check has a deadline the calls share,
so a node that answers slowly cannot hold a start (or a thread) for longer than that.
"""

from __future__ import annotations

import itertools
import json
import time
import urllib.error
import urllib.request
from typing import Any, Callable

Transport = Callable[[str, bytes, float], bytes]  # (url, request body, timeout s) -> response body


class ChainUnavailable(Exception):
    """The node could not be asked or gave no usable answer (down, slow, garbage, an RPC error).
    The message is for the operator's log: it may name the RPC URL."""


def urllib_transport(url: str, body: bytes, timeout: float) -> bytes:
    # No proxies from the environment: the RPC URL is the operator's, reached as configured.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json", "Accept": "application/json"})
    with opener.open(request, timeout=timeout) as response:
        return response.read(8 * 1024 * 1024 + 1)


class Rpc:
    def __init__(self, url: str, timeout: float = 10.0, transport: Transport | None = None):
        self.url = url
        self.timeout = timeout
        self.transport = transport or urllib_transport
        self._ids = itertools.count(1)

    def call(self, method: str, params: list[Any], deadline: float | None = None) -> Any:
        """The `result` of one call. Raises ChainUnavailable when the node cannot answer in time
        (the per-call timeout, or what is left before `deadline`, a time.monotonic() value)."""
        timeout = self.timeout
        if deadline is not None:
            timeout = min(timeout, deadline - time.monotonic())
            if timeout <= 0:
                raise ChainUnavailable(f"{method}: no time left for the chain check")
        body = json.dumps({"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params}).encode()
        try:
            raw = self.transport(self.url, body, timeout)
        except (OSError, urllib.error.URLError, ValueError) as exc:  # refused, reset, timeout, bad URL
            raise ChainUnavailable(f"{method} on {self.url}: {exc}") from None
        if len(raw) > 8 * 1024 * 1024:
            raise ChainUnavailable(f"{method} on {self.url}: answer larger than 8 MiB")
        try:
            answer = json.loads(raw)
        except ValueError:
            raise ChainUnavailable(f"{method} on {self.url}: the answer is not JSON") from None
        if not isinstance(answer, dict):
            raise ChainUnavailable(f"{method} on {self.url}: the answer is not a JSON-RPC object")
        if answer.get("error") is not None:
            raise ChainUnavailable(f"{method} on {self.url}: {str(answer['error'])[:300]}")
        return answer.get("result")

    # -- the calls the checks make -------------------------------------------------------------

    def receipt(self, tx: str, deadline: float | None = None) -> dict[str, Any] | None:
        result = self.call("eth_getTransactionReceipt", [tx], deadline)
        if result is not None and not isinstance(result, dict):
            raise ChainUnavailable("eth_getTransactionReceipt: not an object")
        return result

    def block(self, block_hash: str, deadline: float | None = None) -> dict[str, Any]:
        result = self.call("eth_getBlockByHash", [block_hash, False], deadline)
        if not isinstance(result, dict):
            raise ChainUnavailable(f"eth_getBlockByHash {block_hash}: no such block")
        return result

    def block_number(self, deadline: float | None = None) -> int:
        return to_int(self.call("eth_blockNumber", [], deadline))

    def chain_id(self, deadline: float | None = None) -> int:
        return to_int(self.call("eth_chainId", [], deadline))

    def eth_call(self, to: str, data: str, deadline: float | None = None) -> str:
        result = self.call("eth_call", [{"to": to, "data": data}, "latest"], deadline)
        if not isinstance(result, str) or not result.startswith("0x"):
            raise ChainUnavailable("eth_call: not a hex string")
        return result


def to_int(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.startswith("0x"):
        try:
            return int(value, 16)
        except ValueError:
            pass
    raise ChainUnavailable(f"not a hex quantity: {str(value)[:80]!r}")
