"""The auth tokens of the ocean-node dialect (createAuthToken / invalidateAuthToken, #11).

A token is usable while its row exists and has not expired. Only a digest of the token is stored,
so the database alone never hands anyone a working token.
"""

from __future__ import annotations

import hashlib
import time

from runnerd.store.connection import Database

MAX_TOKENS_PER_ADDRESS = 100  # an address that keeps asking for tokens replaces its oldest ones
# Keeps the address's newest MAX_TOKENS_PER_ADDRESS: two searches of auth_tokens_by_address (0011)
TRIM_SQL = ("DELETE FROM auth_tokens WHERE address_lc = ? AND digest NOT IN (SELECT digest FROM auth_tokens"
            " WHERE address_lc = ? ORDER BY created_at DESC LIMIT ?)")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


class AuthTokens:
    def __init__(self, db: Database):
        self.db = db

    async def add(self, token: str, address: str, created_at: float, valid_until: float) -> None:
        async with self.db.transaction() as tx:
            now = time.time()
            await tx.execute("DELETE FROM auth_tokens WHERE valid_until < ?", (now,))
            await tx.execute("INSERT OR REPLACE INTO auth_tokens (digest, address_lc, created_at, valid_until)"
                             " VALUES (?, ?, ?, ?)", (_digest(token), address.lower(), created_at, valid_until))
            await tx.execute(TRIM_SQL, (address.lower(), address.lower(), MAX_TOKENS_PER_ADDRESS))

    def address_of(self, token: str, now: float | None = None) -> str | None:
        """The (lower-cased) address a live token was issued to, or None."""
        rows = self.db.lookup("SELECT address_lc, valid_until FROM auth_tokens WHERE digest = ?", (_digest(token),))
        if not rows or rows[0][1] < (now if now is not None else time.time()):
            return None
        return str(rows[0][0])

    async def remove(self, token: str, address: str) -> bool:
        """Invalidate a token of `address` (True), or find none of its own to invalidate (False)."""
        return bool(await self.db.write("DELETE FROM auth_tokens WHERE digest = ? AND address_lc = ?",
                                        (_digest(token), address.lower())))
