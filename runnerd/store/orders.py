"""Chain mode's one-use record (#16, migration 0010): every on-chain order (chainId:txHash) that
paid for a job. Spent inside the job's own insert transaction (JobStore.insert), so one order can
never pay for two jobs, not even two starts racing; never deleted, so a deleted job's order stays
spent."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from runnerd.store.connection import Database


class OrderUsed(Exception):
    """An on-chain order that already paid for a job; args[0] is its key."""


async def spend(tx: Any, keys: tuple[str, ...], job_id: str) -> None:
    """Record `keys` for `job_id` in the open write transaction `tx`; OrderUsed for one already
    recorded (the PRIMARY KEY decides, under SQLite's one writer)."""
    for key in keys:
        try:
            await tx.execute("INSERT INTO orders_used (order_key, job_id, used_at) VALUES (?,?,?)",
                             (key, job_id, time.time()))
        except sqlite3.IntegrityError:
            raise OrderUsed(key) from None


def used(db: Database, key: str) -> bool:
    """Whether an order already paid for a job (a primary-key read on the loop's thread)."""
    return bool(db.lookup("SELECT 1 FROM orders_used WHERE order_key = ?", (key,)))
