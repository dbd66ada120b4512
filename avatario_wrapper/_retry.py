"""Retries, built on `backoff`; the only module that imports it.

`backoff.on_exception` drives the attempts: after each `APIError` it asks the give-up rule,
calls the on-backoff handler and tries again; any other exception passes straight through.
Its sync or async loop is picked by whether the attempt is a coroutine function. The two
decorated runners are built once; the call being retried reaches the give-up rule through a
context variable, since backoff hands that rule only the exception.

Four things are ours, because of how backoff 2.2.1 works:

* The attempt count. The give-up rule (`plan_delay`) counts attempts against
  ``max_attempts``, so one decorator serves every policy.

* The deadline. backoff checks ``max_time`` only between attempts, against the wall clock, and
  then sleeps at most the time left, starting an attempt with no time for it. Here the give-up
  rule plans the next delay first and gives up when it would not leave time for an attempt,
  and each attempt's timeout is cut to the time left (`CallState.begin_attempt`).
* The delay. backoff applies jitter to whatever its wait generator yields, which would jitter a
  server's Retry-After. The delay is planned by `plan_delay` (full jitter, or Retry-After as is)
  in the give-up rule, which backoff runs before it asks for the wait.
* The sleep. backoff calls ``time.sleep`` / ``asyncio.sleep`` itself, which no test can replace.
  The on-backoff handler sleeps the planned delay on the client's `Clock` (cancellable on the
  async path) and backoff is handed a wait of zero.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Awaitable, Callable, Generator
from typing import Any, TypeVar

import attrs
import backoff

from ._clock import Clock
from ._models import RetryPolicy
from .errors import APIError, APIStatusError

logger = logging.getLogger("avatario_wrapper")

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

#: The shortest timeout an attempt is given when the deadline is that close.
MIN_ATTEMPT_TIMEOUT = 0.001
#: Exponential growth stops here (2**62 is already far past any max_delay).
_MAX_EXPONENT = 62


def plan_delay(
    policy: RetryPolicy,
    error: BaseException,
    *,
    attempts: int,
    time_left: float,
    uniform: Callable[[float, float], float],
) -> float | None:
    """Seconds to wait before the next attempt, or None to give up and raise `error`.

    `attempts` is how many attempts were made so far; `time_left` is what remains of the
    call's `max_elapsed`. Pure: everything it needs is passed in.
    """
    if not isinstance(error, APIError) or not error.retryable:
        return None
    if attempts >= policy.max_attempts:
        return None
    asked = error.retry_after if isinstance(error, APIStatusError) else None
    if asked is not None and policy.respect_retry_after:
        if asked > policy.max_retry_after or asked >= time_left:
            return None  # waiting would break the policy or the deadline: fail now
        return asked
    ceiling = min(policy.max_delay, policy.initial_delay * 2.0 ** min(attempts - 1, _MAX_EXPONENT))
    delay = uniform(0.0, ceiling)
    if delay >= time_left:
        return None
    return delay


@attrs.define
class CallState:
    """The retry bookkeeping of one call: attempts so far, the deadline, the next delay."""

    policy: RetryPolicy
    timeout: float
    clock: Clock
    started: float = attrs.field(init=False)
    attempts: int = attrs.field(init=False, default=0)
    delay: float = attrs.field(init=False, default=0.0)

    def __attrs_post_init__(self) -> None:
        self.started = self.clock.monotonic()

    def time_left(self) -> float:
        return self.policy.max_elapsed - (self.clock.monotonic() - self.started)

    def begin_attempt(self) -> float:
        """Count an attempt and return its timeout: the client's, cut to the time left."""
        self.attempts += 1
        return max(MIN_ATTEMPT_TIMEOUT, min(self.timeout, self.time_left()))

    def give_up(self, error: Exception) -> bool:
        """backoff's give-up rule: plans the next delay, or says to give up."""
        delay = plan_delay(
            self.policy,
            error,
            attempts=self.attempts,
            time_left=self.time_left(),
            uniform=self.clock.uniform,
        )
        if delay is None:
            return True
        self.delay = delay
        return False

    def log_retry(self, error: BaseException) -> None:
        """One WARNING per retry; the error text never holds a secret."""
        status = getattr(error, "status_code", None)
        request_id = getattr(error, "request_id", None)
        detail = error.message if isinstance(error, APIError) else str(error)
        what = f"HTTP {status}" if status is not None else f"{type(error).__name__}: {detail}"
        logger.warning(
            "Avatario start-session attempt %d/%d failed (%s, request id %s); retrying in %.2fs",
            self.attempts,
            self.policy.max_attempts,
            what,
            request_id or "none",
            self.delay,
            extra={
                "avatario_attempt": self.attempts,
                "avatario_max_attempts": self.policy.max_attempts,
                "avatario_status_code": status,
                "avatario_request_id": request_id,
                "avatario_delay": self.delay,
            },
        )


def _zero_waits() -> Generator[float, Any, None]:
    # The delay is planned in CallState.give_up and slept by the on-backoff handler.
    while True:
        yield 0.0


#: The call being retried in this thread or task. backoff hands its give-up rule only the
#: exception, so the rule finds the call's state here; the decorated runners below are built
#: once, not per call.
_STATE: contextvars.ContextVar[CallState] = contextvars.ContextVar("avatario_call_state")


def _give_up(error: Exception) -> bool:
    return _STATE.get().give_up(error)


def _sleep(details: Any) -> None:
    state: CallState = details["args"][1]
    state.log_retry(details["exception"])
    state.clock.sleep(state.delay)


async def _asleep(details: Any) -> None:
    state: CallState = details["args"][1]
    state.log_retry(details["exception"])
    await state.clock.asleep(state.delay)


def _retrying(on_backoff: Any) -> Callable[[F], F]:
    # Attempts are counted against max_attempts by the give-up rule (plan_delay).
    decorate: Callable[[F], F] = backoff.on_exception(
        _zero_waits,
        APIError,
        max_tries=None,
        max_time=None,
        jitter=None,
        giveup=_give_up,
        on_backoff=on_backoff,
        raise_on_giveup=True,
        logger=None,
    )
    return decorate


@_retrying(_sleep)
def _attempts(attempt: Callable[[], T], state: CallState) -> T:
    return attempt()


@_retrying(_asleep)
async def _async_attempts(attempt: Callable[[], Awaitable[T]], state: CallState) -> T:
    return await attempt()


def run_sync(attempt: Callable[[], T], state: CallState) -> T:
    """Run `attempt` until it succeeds or the policy gives up, sleeping on the state's clock."""
    token = _STATE.set(state)
    try:
        return _attempts(attempt, state)
    finally:
        _STATE.reset(token)


async def run_async(attempt: Callable[[], Awaitable[T]], state: CallState) -> T:
    """The same as `run_sync` for a coroutine; cancellation during a sleep ends the call."""
    token = _STATE.set(state)
    try:
        return await _async_attempts(attempt, state)
    finally:
        _STATE.reset(token)
