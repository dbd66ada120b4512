"""A virtual clock for tests: sleeping moves its time forward and returns at once."""

from __future__ import annotations

import random


class FakeClock:
    """Implements `avatario_wrapper.Clock` with virtual time.

    `sleeps` records every sleep the client asked for; `advance()` lets a fake transport
    pretend that a request took time. The jitter comes from a seeded `random.Random`, so a
    test sees the same delays on every run.
    """

    def __init__(self, *, seed: int = 0, start: float = 1_700_000_000.0) -> None:
        self.now: float = 0.0
        self.epoch = start
        self.sleeps: list[float] = []
        self._random = random.Random(seed)  # noqa: S311 - jitter for tests

    def advance(self, seconds: float) -> None:
        """Move virtual time forward by `seconds` (a request that "took" that long)."""
        self.now += seconds

    def monotonic(self) -> float:
        """Virtual seconds since the clock was made."""
        return self.now

    def time(self) -> float:
        """Virtual seconds since the epoch (`start` + `now`)."""
        return self.epoch + self.now

    def sleep(self, seconds: float) -> None:
        """Record the sleep and move virtual time forward; returns at once."""
        self.sleeps.append(seconds)
        self.now += seconds

    async def asleep(self, seconds: float) -> None:
        """Record the sleep and move virtual time forward; yields once to the loop."""
        self.sleeps.append(seconds)
        self.now += seconds
        import asyncio  # noqa: PLC0415 - a coroutine is running: already imported

        await asyncio.sleep(0)  # still a point where the task can be cancelled

    def uniform(self, low: float, high: float) -> float:
        """A seeded random float in [low, high]."""
        return self._random.uniform(low, high)
