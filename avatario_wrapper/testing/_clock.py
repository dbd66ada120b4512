"""A virtual clock for tests: sleeping moves its time forward and returns at once."""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable


class FakeTimer:
    """A callback due at a virtual time of a `FakeClock` (see `FakeClock.call_later`)."""

    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], object]) -> None:
        self.when: float = when
        self.callback: Callable[[], object] = callback
        self.cancelled: bool = False

    def cancel(self) -> None:
        """Never run it (a no-op once it ran)."""
        self.cancelled = True

    def __repr__(self) -> str:
        state = " cancelled" if self.cancelled else ""
        return f"FakeTimer(when={self.when:g}{state})"


class FakeClock:
    """Implements `avatario_wrapper.Clock` with virtual time.

    `sleeps` records every sleep the client asked for; `advance()` lets a fake transport
    pretend that a request took time. The jitter comes from a seeded `random.Random`, so a
    test sees the same delays on every run.

    `call_later(delay, callback)` runs `callback` when virtual time reaches it: time passes
    only when someone sleeps on the clock (or calls `advance`), and a sleep that passes a
    timer's time runs it there, in order, with `now` at the timer's time. An async sleep
    yields to the event loop after each timer, so what the timer did (an avatar joining a
    `StandInRoom`, say) is seen, and a sleeper cancelled by it stops at that time.
    """

    def __init__(self, *, seed: int = 0, start: float = 1_700_000_000.0) -> None:
        self.now: float = 0.0
        self.epoch = start
        self.sleeps: list[float] = []
        self._random = random.Random(seed)  # noqa: S311 - jitter for tests
        self._timers: list[tuple[float, int, FakeTimer]] = []
        self._order = itertools.count()

    def call_later(self, delay: float, callback: Callable[[], object]) -> FakeTimer:
        """Run `callback()` once virtual time has moved `delay` seconds on from now."""
        timer = FakeTimer(self.now + max(0.0, delay), callback)
        heapq.heappush(self._timers, (timer.when, next(self._order), timer))
        return timer

    def advance(self, seconds: float) -> None:
        """Move virtual time forward by `seconds` (a request that "took" that long), running
        the timers due on the way."""
        target = self.now + seconds
        while self._run_next_timer(target):
            pass
        self.now = max(self.now, target)

    def monotonic(self) -> float:
        """Virtual seconds since the clock was made."""
        return self.now

    def time(self) -> float:
        """Virtual seconds since the epoch (`start` + `now`)."""
        return self.epoch + self.now

    def sleep(self, seconds: float) -> None:
        """Record the sleep and move virtual time forward (running due timers); returns at
        once."""
        self.sleeps.append(seconds)
        self.advance(seconds)

    async def asleep(self, seconds: float) -> None:
        """Record the sleep and move virtual time forward, yielding to the loop after each
        timer due on the way and once at the end."""
        import asyncio  # noqa: PLC0415 - a coroutine is running: already imported

        self.sleeps.append(seconds)
        target = self.now + seconds
        ran_a_timer = True
        while ran_a_timer:
            ran_a_timer = self._run_next_timer(target)
            if not ran_a_timer:
                self.now = max(self.now, target)
            # What a timer did runs now, and a cancel stops the sleep at its time; once at the
            # end it is still a point where the task can be cancelled.
            await asyncio.sleep(0)

    def uniform(self, low: float, high: float) -> float:
        """A seeded random float in [low, high]."""
        return self._random.uniform(low, high)

    def _run_next_timer(self, until: float) -> bool:
        """Run the earliest timer due by `until` (time moved to it); False when none is."""
        while self._timers and self._timers[0][0] <= until:
            when, _, timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            self.now = max(self.now, when)
            timer.cancelled = True  # it ran: cancelling it now changes nothing
            timer.callback()
            return True
        return False
