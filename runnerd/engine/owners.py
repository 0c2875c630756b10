"""Per-owner start rate: a token bucket per lower-cased consumerAddress, held in memory.

The other per-owner caps (jobs in flight, bytes of kept results) are checked by the store inside
the insert's transaction; a rate is about the recent past only, so it lives here: a restart
forgets it, which costs at most one extra burst.
"""

from __future__ import annotations

import time
from typing import Callable

_PRUNE_AT = 10_000  # buckets kept before the full ones are dropped (a full bucket says nothing)


class StartRate:
    def __init__(self, per_minute: float, clock: Callable[[], float] = time.monotonic):
        self.capacity = float(per_minute)  # the burst is one minute's worth
        self.per_second = per_minute / 60.0
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # owner -> (tokens, when counted)
        self._prune_at = _PRUNE_AT

    def _tokens(self, owner: str, now: float) -> float:
        tokens, then = self._buckets.get(owner, (self.capacity, now))
        return min(self.capacity, tokens + (now - then) * self.per_second)

    def take(self, owner: str) -> float:
        """Take one start for `owner`: 0.0 if it may start now, else the seconds until it may.
        Check and take happen with no await in between, so concurrent starts cannot share a token."""
        if self.capacity <= 0:
            return 0.0
        now = self.clock()
        tokens = self._tokens(owner, now)
        if tokens < 1:
            self._buckets[owner] = (tokens, now)
            return (1 - tokens) / self.per_second
        self._buckets[owner] = (tokens - 1, now)
        if len(self._buckets) > self._prune_at:
            self._prune(now)
        return 0.0

    def give_back(self, owner: str) -> None:
        """Return the token of a start that was refused for another reason (nothing was stored)."""
        if self.capacity <= 0 or owner not in self._buckets:
            return
        now = self.clock()
        self._buckets[owner] = (min(self.capacity, self._tokens(owner, now) + 1), now)

    def _prune(self, now: float) -> None:
        for owner in [o for o in self._buckets if self._tokens(o, now) >= self.capacity]:
            del self._buckets[owner]
        self._prune_at = max(_PRUNE_AT, 2 * len(self._buckets))  # amortised: never a scan per start
