"""The in-process store: one process's budgets, kept on its monotonic clock, thread-safe.

What the clients have always had (a budget per client and its `with_options` copies), now per
scope; also the fallback of the shared stores. Monotonic time cannot step, so only the times
it hands out (and the `cool_until` it is given) are converted from and to wall time.
"""

from __future__ import annotations

import threading

from .._clock import SYSTEM_CLOCK, Clock
from .base import InlineAsync, Status, Verdict, check_scope
from .rules import DEFAULT_RESERVE, IDLE_SECONDS, ScopeState

#: Idle scopes are looked for (and dropped) only when there are more than this many.
_PRUNE_ABOVE = 64


class ProcessStore(InlineAsync):
    """Budgets shared by the threads and tasks of one process."""

    name = "process"

    def __init__(self, *, clock: Clock = SYSTEM_CLOCK, reserve: float = DEFAULT_RESERVE) -> None:
        self._clock = clock
        self._reserve = reserve
        self._lock = threading.Lock()
        self._scopes: dict[str, ScopeState] = {}

    def __repr__(self) -> str:
        return f"ProcessStore(reserve={self._reserve}, scopes={len(self._scopes)})"

    def _state(self, scope: str) -> ScopeState:
        """The scope's state (made on first use); call with the lock held."""
        state = self._scopes.get(scope)
        if state is None:
            check_scope(scope)
            if len(self._scopes) >= _PRUNE_ABOVE:
                self._prune()
            state = self._scopes[scope] = ScopeState()
        return state

    def _prune(self) -> None:
        now = self._clock.monotonic()
        for scope, state in list(self._scopes.items()):
            if state.touched is None or now - state.touched > IDLE_SECONDS:
                del self._scopes[scope]

    def _wall(self, moment: float | None, now: float) -> float | None:
        """A monotonic `moment` as epoch seconds."""
        if moment is None:
            return None
        return self._clock.time() - (now - moment)

    def deposit(self, scope: str) -> bool:
        with self._lock:
            state = self._state(scope)
            now = self._clock.monotonic()
            state.settle(now)
            return state.deposit(now)

    def failed(
        self,
        scope: str,
        *,
        retry: bool,
        share: float | None,
        cool_until: float | None,
        dated: float = 0.0,
    ) -> Verdict:
        with self._lock:
            state = self._state(scope)
            now = self._clock.monotonic()
            state.settle(now)
            until = None if cool_until is None else now + (cool_until - self._clock.time())
            allowed, refused_by = state.failed(
                now,
                retry=retry,
                share=share,
                cool_until=until,
                reserve=self._reserve,
                dated=dated,
            )
            return Verdict(
                allowed,
                refused_by,
                self._wall(state.cooling_until, now),
                self._wall(state.trouble_since, now),
            )

    def succeeded(self, scope: str) -> bool:
        with self._lock:
            state = self._state(scope)
            now = self._clock.monotonic()
            state.settle(now)
            return state.succeeded(now)

    def status(self, scope: str) -> Status:
        with self._lock:
            state = self._state(scope)
            now = self._clock.monotonic()
            state.settle(now)
            return Status(
                self._wall(state.trouble_since, now),
                self._wall(state.cooling_until, now),
                state.successes,
                self._wall(state.last_success, now),
            )

    def take_probe(self, scope: str, *, lease: float, share: float | None) -> bool:
        with self._lock:
            state = self._state(scope)
            now = self._clock.monotonic()
            state.settle(now)
            return state.take_probe(now, lease=lease, share=share, reserve=self._reserve)

    def close(self) -> None:
        """Nothing to release."""
