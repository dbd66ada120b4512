"""The retry budget: retries at most a share of the calls a client made recently.

Modelled on Finagle's ``RetryBudget`` (a leaky token bucket over a ten-second window: every
request deposits, every retry withdraws ``1 / percentCanRetry`` of a deposit, and a reserve of
``minRetriesPerSec * ttl`` lets a lone caller retry) and gRPC's retry throttling (retries stop
when too many recent attempts failed). First attempts only deposit: they are never delayed or
refused. One budget serves a client and its `with_options` copies, across threads and tasks.
"""

from __future__ import annotations

import threading
from collections import deque

from ._clock import Clock

#: The window over which calls and retries are counted, in seconds (Finagle's default ttl).
WINDOW_SECONDS = 10.0
#: The window is kept in this many slots; a slot older than the window is forgotten whole.
SLOTS = 10
#: Retries always allowed per window whatever the traffic, so a lone failing call can retry.
RESERVE = 5.0


class RetryBudget:
    """Counts first attempts and retries per slot of the last `WINDOW_SECONDS`."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._slot_seconds = WINDOW_SECONDS / SLOTS
        # (slot number, calls, retries), oldest first
        self._slots: deque[list[float]] = deque()
        self._slot_ends = float("-inf")  # when the newest slot ends (on the clock)

    def _current(self) -> list[float]:
        now = self._clock.monotonic()
        slot = float(int(now // self._slot_seconds))
        slots = self._slots
        while slots and slots[0][0] <= slot - SLOTS:
            slots.popleft()
        if not slots or slots[-1][0] != slot:
            slots.append([slot, 0.0, 0.0])
        self._slot_ends = (slot + 1) * self._slot_seconds
        return slots[-1]

    def deposit(self) -> None:
        """A call made its first attempt."""
        with self._lock:
            if self._clock.monotonic() < self._slot_ends:  # still the newest slot's time
                self._slots[-1][1] += 1
            else:
                self._current()[1] += 1

    def try_withdraw(self, share: float) -> bool:
        """Take one retry if calls x `share` + the reserve still cover it; False if spent."""
        with self._lock:
            current = self._current()
            calls = sum(s[1] for s in self._slots)
            retries = sum(s[2] for s in self._slots)
            if retries + 1 > calls * share + RESERVE:
                return False
            current[2] += 1
            return True
