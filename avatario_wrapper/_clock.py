"""Time and chance, behind one small interface so tests never really sleep.

The clients take a `clock=`; the default is the system's. `avatario_wrapper.testing.FakeClock`
is a virtual clock whose sleeps only move its time forward.
"""

from __future__ import annotations

import random
import time
from typing import Protocol


class Clock(Protocol):
    """What the retry loop needs from the outside world."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (for deadlines)."""

    def time(self) -> float:
        """Seconds since the epoch (to read an HTTP-date Retry-After)."""

    def sleep(self, seconds: float) -> None:
        """Block for `seconds`."""

    async def asleep(self, seconds: float) -> None:
        """Wait for `seconds` without blocking the event loop; cancellable."""

    def uniform(self, low: float, high: float) -> float:
        """A random float in [low, high] (the retry jitter)."""


class SystemClock:
    """The real clock: time.monotonic, time.sleep, asyncio.sleep and a private Random."""

    def __init__(self) -> None:
        self._random = random.Random()  # noqa: S311 - jitter, not cryptography

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    async def asleep(self, seconds: float) -> None:
        import asyncio  # noqa: PLC0415 - not at import: the sync client never needs it

        await asyncio.sleep(seconds)

    def uniform(self, low: float, high: float) -> float:
        return self._random.uniform(low, high)


SYSTEM_CLOCK = SystemClock()
