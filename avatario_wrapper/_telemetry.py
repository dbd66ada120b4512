"""Telemetry of calls and attempts: the hooks the request path calls, and nothing else yet.

`start_call` is asked once per call; it returns None when telemetry is off, and then the
request path does no telemetry work at all.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["CallTrace", "start_call"]


class CallTrace(Protocol):
    """What the request path tells telemetry about one call."""

    def attempt_started(self, number: int) -> None:
        """Attempt `number` (1 for the first) is about to be sent."""

    def attempt_ended(self, result: Any, error: BaseException | None) -> None:
        """The attempt returned `result` or raised `error`."""

    def backoff(self, delay: float, *, from_retry_after: bool) -> None:
        """The call waits `delay` seconds before its next attempt."""

    def budget_refused(self) -> None:
        """A retry was due but the retry budget refused it."""

    def ended(self, result: Any, error: BaseException | None, attempts: int) -> None:
        """The call is over: `result` returned, or `error` raised, after `attempts` attempts."""


def start_call(request: Any) -> CallTrace | None:
    """The trace of a call about to start, or None when telemetry is off."""
    return None
