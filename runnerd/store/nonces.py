"""Nonces: a strictly increasing number per address, claimed before any side effect.

Every signed request claims one, so this is the API's hottest write. The compare-and-set is done
on an in-memory ledger, which is authoritative because this process is the only writer: between
the check and the set there is no await, so two requests with one nonce can never both win.
The winner then waits until its claim is durable; claims that arrive together are committed in
one transaction (group commit), so the cost of a commit is shared instead of serialising every
request behind its own.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal, InvalidOperation

from runnerd.store.connection import Database

_UPSERT = ("INSERT INTO nonces (address, nonce) VALUES (?, ?) ON CONFLICT(address) DO UPDATE"
           " SET nonce = excluded.nonce WHERE nonce_gt(excluded.nonce, nonces.nonce)")
_MAX_CACHED = 200_000  # addresses kept in memory; the rest are read back from SQLite when needed


class NonceLedger:
    def __init__(self, db: Database):
        self.db = db
        self._latest: dict[str, tuple[Decimal, str]] = {}  # address -> (value, exact text)
        self._pending: dict[str, str] = {}  # claims not yet committed
        self._waiters: list[asyncio.Future[None]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def last(self, address: str) -> str | None:
        """The last nonce claimed by an address (exact text), or None if it never claimed one."""
        addr = address.lower()
        if addr in self._latest:
            text = self._latest[addr][1]
            return None if text == "0" else text
        row = await self.db.fetchone("SELECT nonce FROM nonces WHERE address = ?", (addr,))
        return row[0] if row else None

    async def claim(self, address: str, nonce: str) -> bool:
        """True if `nonce` is decimal-greater than the address's last one; it is then recorded
        durably before this returns. A replay, a lower nonce or a race loser gets False."""
        addr = address.lower()
        try:
            value = Decimal(nonce)
        except InvalidOperation:
            return False
        if not value > 0:  # an address never seen has nonce 0
            return False
        if addr not in self._latest:
            stored = await self.last(addr) or "0"
            self._latest.setdefault(addr, (Decimal(stored), stored))  # a racing claim may have been first
        if value <= self._latest[addr][0]:
            return False
        self._latest[addr] = (value, nonce)  # the compare-and-set: no await since the check
        self._pending[addr] = nonce
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(done)
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush())
        await done
        return True

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, waiters = self._pending, self._waiters
                self._pending, self._waiters = {}, []
                try:
                    async with self.db.transaction() as tx:
                        await tx.executemany(_UPSERT, list(batch.items()))
                except Exception as exc:  # noqa: BLE001 - handed to every request of the batch
                    for w in waiters:
                        if not w.done():
                            w.set_exception(exc)
                    continue
                for w in waiters:
                    if not w.done():
                        w.set_result(None)
                if len(self._latest) > _MAX_CACHED:
                    self._forget_settled()
        finally:
            self._flusher = None

    def _forget_settled(self) -> None:
        for addr in list(self._latest)[: len(self._latest) // 2]:
            if addr not in self._pending:
                del self._latest[addr]
