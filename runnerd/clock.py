"""Time as the engine sees it: the wall clock, a monotonic reading, and sleeping.

Every wait of the engine (a Docker outage's backoff, the watch after a SIGTERM/SIGKILL exit, the
disk re-check, the Docker health watch, the sweep interval) sleeps on a `Clock`, so that a test can
pass one it advances by hand (tests/fakes.py FakeClock) and check a 20-second window without
spending 20 seconds, or a negative ("nothing happened before X") without a sleep that only hopes.
The daemon always runs on `SYSTEM`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch (timestamps that are stored or shown)."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin, never going back (durations, windows)."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


SYSTEM: Clock = SystemClock()
