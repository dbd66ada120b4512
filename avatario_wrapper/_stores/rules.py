"""The rules for one scope, as a pure value: the budget window, cool-down, trouble and probe.

The process and host stores apply these to a `ScopeState` at a time they give (the process
store on its monotonic clock, the host store on wall time); the Redis store's Lua scripts
(`redis_scripts`) apply the same rules inside Redis, and the tests hold all three to the same
answers. Wall clocks step, so every stored time is bounded on reading: a start "from the
future" counts as now, a deadline further ahead than its maximum as over, and a budget slot
more than a window ahead as forgotten; so a clock stepped back never blocks anything for
longer than the rule's own bound.
"""

from __future__ import annotations

import math

from .base import RefusedBy

#: The window over which calls and retries are counted, in seconds (Finagle's default ttl).
WINDOW_SECONDS = 10.0
#: The window is kept in this many slots; a slot older than the window is forgotten whole.
SLOTS = 10
SLOT_SECONDS = WINDOW_SECONDS / SLOTS
#: Retries always allowed per window whatever the traffic, so a lone failing call can retry.
#: 3: with `retry_budget=0.2`, 40 calls in a window may make 40 + 40 x 0.2 + 3 = 51 requests,
#: 1.275 per call, inside issue 26's 1.3 (a reserve of 4 would be exactly 1.3).
DEFAULT_RESERVE = 3.0
#: The longest shared cool-down a server's answer can impose, in seconds.
MAX_COOL_DOWN = 60.0
#: The longest probe lease, in seconds.
MAX_LEASE = 60.0
#: A scope with no write for this long is forgotten (the Redis key's TTL).
IDLE_SECONDS = 600.0
#: Trouble ends at a success when failures are less than this share of the attempts of the
#: last two slots (about 1-2 s): Avatario answers again, and the failures stopped. A share,
#: not a single success, so that a steady overload (every other request refused) stays in
#: trouble, where the budget binds, while a blip's end is seen within a second or two.
RECOVERED_SHARE = 0.25
#: ... and only once those two slots hold this many successful attempts: a share of a few
#: attempts is noise (when a steady overload's calls stop coming, its waiters' probes alone,
#: one success among them, ended the trouble, and the released waiters went outside the
#: budget); a blip's end brings them within a second or so.
RECOVERED_MIN = 4
#: The furthest back a failure is dated (`BudgetStore.failed`'s `dated`): well inside the
#: window, so its slot is always one the window still counts.
MAX_DATED = 5.0
#: Trouble with no failed attempt for this long is over without a success: longer than a
#: call's whole life (the default deadline is 30 s), so a call riding the trouble out, which
#: sends nothing while it waits, never sees the trouble end because it went quiet; and short
#: enough that a rare caller after a long quiet spell rides out a fresh trouble.
QUIET_SECONDS = 120.0

_NO_SLOT = -(1 << 62)


class ScopeState:
    """One scope's budget ring, cool-down, trouble, successes and probe lease."""

    __slots__ = (
        "calls",
        "cooling_until",
        "fails",
        "last_failure",
        "last_success",
        "lease_until",
        "oks",
        "retries",
        "slot_of",
        "successes",
        "touched",
        "trouble_since",
    )

    def __init__(self) -> None:
        self._clear()

    def _clear(self) -> None:
        # A ring of SLOTS entries: slot_of[i] is the slot number entry i counts for.
        self.slot_of = [_NO_SLOT] * SLOTS
        self.calls = [0] * SLOTS
        self.retries = [0] * SLOTS
        self.fails = [0] * SLOTS  # failed attempts
        self.oks = [0] * SLOTS  # successful attempts
        self.trouble_since: float | None = None
        self.last_failure: float | None = None
        self.cooling_until: float | None = None
        self.successes = 0
        self.last_success: float | None = None
        self.lease_until: float | None = None
        self.touched: float | None = None

    # -- the budget ------------------------------------------------------------------------

    def _entry(self, now: float) -> int:
        """The ring index of now's slot, emptied first if it held another slot."""
        slot = math.floor(now / SLOT_SECONDS)
        i = slot % SLOTS
        if self.slot_of[i] != slot:
            self.slot_of[i] = slot
            self.calls[i] = 0
            self.retries[i] = 0
            self.fails[i] = 0
            self.oks[i] = 0
        return i

    def recovered(self, now: float) -> bool:
        """Avatario answers again: this slot and the one before hold `RECOVERED_MIN`
        successful attempts, and failures are under `RECOVERED_SHARE` of their attempts."""
        slot = math.floor(now / SLOT_SECONDS)
        fails = oks = 0
        for i in range(SLOTS):
            if slot - 2 < self.slot_of[i] <= slot:
                fails += self.fails[i]
                oks += self.oks[i]
        return oks >= RECOVERED_MIN and fails < RECOVERED_SHARE * (fails + oks)

    def window(self, now: float) -> tuple[int, int]:
        """Calls and retries in the window. A slot up to a window ahead (the clock stepped
        back a little) counts as now's until the clock passes it; one further ahead is as
        forgotten as one older than the window (as after a step forward)."""
        slot = math.floor(now / SLOT_SECONDS)
        calls = retries = 0
        for i in range(SLOTS):
            if slot - SLOTS < self.slot_of[i] < slot + SLOTS:
                calls += self.calls[i]
                retries += self.retries[i]
        return calls, retries

    def _room(self, now: float, share: float | None, reserve: float) -> bool:
        if share is None:
            return True
        calls, retries = self.window(now)
        return retries + 1 <= calls * share + reserve

    def _withdraw(self, now: float) -> None:
        self.retries[self._entry(now)] += 1

    # -- time ---------------------------------------------------------------------------------

    def settle(self, now: float) -> None:
        """Forget an idle scope; bound every stored time to what `now` allows."""
        if self.touched is not None and now - self.touched > IDLE_SECONDS:
            self._clear()  # forgotten: as new
            return
        if self.touched is not None and self.touched > now:
            self.touched = now
        if self.trouble_since is not None and self.trouble_since > now:
            self.trouble_since = now
        if self.last_failure is not None and self.last_failure > now:
            self.last_failure = now
        if self.trouble_since is not None and (
            self.last_failure is None or now - self.last_failure > QUIET_SECONDS
        ):
            self.trouble_since = None  # no failure for so long: the trouble is over
        if self.last_success is not None and self.last_success > now:
            self.last_success = now
        self.cooling_until = _live(self.cooling_until, now, MAX_COOL_DOWN)
        self.lease_until = _live(self.lease_until, now, MAX_LEASE)

    # -- the operations (call `settle` first) --------------------------------------------------

    def deposit(self, now: float) -> bool:
        """A call's first attempt; True when the scope is in trouble (call `settle` first)."""
        self.calls[self._entry(now)] += 1
        self.touched = now
        return self.trouble_since is not None

    def failed(
        self,
        now: float,
        *,
        retry: bool,
        share: float | None,
        cool_until: float | None,
        reserve: float,
        dated: float = 0.0,
    ) -> tuple[bool, RefusedBy | None]:
        """(allowed, refused_by) after an attempt failed at `now`; `dated`: how many seconds
        before `now` the failure's evidence dates from (see `BudgetStore.failed`)."""
        self.touched = now
        self.fails[self._entry(now - _dated(dated))] += 1
        self.last_failure = now
        if self.trouble_since is None:
            self.trouble_since = now
        if cool_until is not None and cool_until > now:
            until = min(cool_until, now + MAX_COOL_DOWN)
            if self.cooling_until is None or until > self.cooling_until:
                self.cooling_until = until
        if not retry:
            return False, None
        if self.cooling_until is not None and (
            cool_until is None or self.cooling_until > cool_until + 1e-3
        ):
            return False, "cool_down"  # a cool-down this call's own wait does not cover
        if not self._room(now, share, reserve):
            return False, "budget"
        self._withdraw(now)
        return True, None

    def succeeded(self, now: float) -> bool:
        """A successful attempt at `now`; True while the scope is still in trouble after it."""
        self.touched = now
        self.oks[self._entry(now)] += 1
        self.lease_until = None
        self.successes += 1
        self.last_success = now
        if self.trouble_since is not None and self.recovered(now):
            self.trouble_since = None
        return self.trouble_since is not None

    def take_probe(self, now: float, *, lease: float, share: float | None, reserve: float) -> bool:
        if self.cooling_until is not None or self.lease_until is not None:
            return False
        if not self._room(now, share, reserve):
            return False
        self.touched = now
        self.lease_until = now + min(max(lease, 0.0), MAX_LEASE)
        if share is not None:  # None: the retry is paid for already, or there is no budget
            self._withdraw(now)
        return True


def _dated(seconds: float) -> float:
    """How far back a failure is counted (at most `MAX_DATED`)."""
    return min(max(seconds, 0.0), MAX_DATED)


def _live(until: float | None, now: float, longest: float) -> float | None:
    """A deadline still running at `now`, or None: over, or further than `longest` ahead (a
    deadline set before the clock stepped back)."""
    if until is None or until <= now or until > now + longest:
        return None
    return until
