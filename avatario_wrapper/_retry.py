"""The retry decision in one place: what a failure means, whether to retry, when, and until when.

Every failed attempt is classified by what Avatario may have done (`errors.Outcome`):

    not sent   DNS, refused, connect/TLS/pool failure, or a reused keep-alive connection that
               the server had closed before any response byte   -> retried
    refused    a status: 408, 429 and 503 may be retried (if in `retry_statuses`); other 4xx
               are final                                          -> retried if listed
    unknown    read timeout or reset after the request went out, 500, 502, 504 (and any other
               5xx)                                               -> retried only with
                                                                     retry_unknown_outcome
    started    any 2xx, even with a bad body                      -> never

`decide` applies that table, the attempt count, the deadline (`max_elapsed`), Retry-After and
the retry budget to one error, and records the verdict on it: `error.retryable`,
`error.not_retried_because`, and the planned delay. `backoff` (imported only here, and only
when a first retry is due) drives the retries: its give-up rule and on-backoff handler only
read that verdict; the handler logs the WARNING and sleeps on the client's `Clock`, and backoff
itself is told to wait zero seconds.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Generator
from typing import Any, TypeVar

from ._budget import RetryBudget
from ._clock import Clock
from ._settings import RetryPolicy
from .errors import APIError, APIStatusError, Outcome

logger = logging.getLogger("avatario_wrapper")

T = TypeVar("T")

#: The shortest timeout an attempt is given when the deadline is that close.
MIN_ATTEMPT_TIMEOUT = 0.001
#: Exponential growth stops here (2**62 is already far past any max_delay).
_MAX_EXPONENT = 62
#: Statuses that say the server did not act on the request, though it may later.
_REFUSED_5XX = frozenset({503})


def status_outcome(status: int) -> Outcome:
    """What a non-2xx status says Avatario did: 4xx and 503 refused, other statuses unknown."""
    if 200 <= status < 300:
        return Outcome.STARTED
    if 400 <= status < 500 or status in _REFUSED_5XX or 300 <= status < 400:
        return Outcome.REFUSED
    return Outcome.UNKNOWN


def is_retryable(error: BaseException, policy: RetryPolicy, *, idempotent: bool) -> bool:
    """The table above: may this failure be sent again under `policy`? Pure."""
    if not isinstance(error, APIError) or error.outcome is Outcome.STARTED:
        return False
    if isinstance(error, APIStatusError) and error.status_code not in policy.retry_statuses:
        return False
    if error.outcome is Outcome.UNKNOWN:
        return policy.retry_unknown_outcome or idempotent
    return True


def plan_delay(
    policy: RetryPolicy,
    error: BaseException,
    *,
    attempts: int,
    time_left: float,
    uniform: Callable[[float, float], float],
) -> float | None:
    """Seconds to wait before the next attempt, or None to give up and raise `error`.

    `error.retryable` must already say whether the failure may be retried; `attempts` is how
    many attempts were made so far; `time_left` is what remains of `max_elapsed`. Pure.
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


class Call:
    """The retry state of one call: its policy, attempts so far, deadline and budget."""

    __slots__ = (
        "attempts",
        "budget",
        "clock",
        "delay",
        "idempotent",
        "name",
        "policy",
        "started",
        "timeout",
    )

    def __init__(
        self,
        *,
        name: str,
        policy: RetryPolicy,
        timeout: float,
        clock: Clock,
        budget: RetryBudget,
        idempotent: bool,
    ) -> None:
        self.name = name
        self.policy = policy
        self.timeout = timeout
        self.clock = clock
        self.budget = budget
        self.idempotent = idempotent
        self.attempts = 0
        self.delay: float | None = None
        self.started = clock.monotonic()

    def time_left(self) -> float:
        return self.policy.max_elapsed - (self.clock.monotonic() - self.started)

    def begin_attempt(self) -> float:
        """Count an attempt and return its timeout: the client's, cut to the time left."""
        self.attempts += 1
        if self.attempts == 1 and self.policy.retry_budget is not None:
            self.budget.deposit()
        return max(MIN_ATTEMPT_TIMEOUT, min(self.timeout, self.time_left()))

    def decide(self, error: APIError) -> None:
        """Record on `error` whether it is retried and after how long (`self.delay`)."""
        policy = self.policy
        error.retryable = is_retryable(error, policy, idempotent=self.idempotent)
        delay = plan_delay(
            policy,
            error,
            attempts=self.attempts,
            time_left=self.time_left(),
            uniform=self.clock.uniform,
        )
        if (
            delay is not None
            and policy.retry_budget is not None
            and not self.budget.try_withdraw(policy.retry_budget)
        ):
            error.not_retried_because = (
                f"the retry budget is spent (retries are capped at {policy.retry_budget:.0%} "
                "of this client's recent calls while Avatario is failing)"
            )
            self._log(error, "not retried: the retry budget is spent")
            delay = None
        self.delay = delay

    def log_retry(self, error: APIError) -> None:
        """One WARNING per retry; the error text never holds a secret or raw server text."""
        self._log(error, f"retrying in {self.delay or 0.0:.2f}s")

    def _log(self, error: APIError, what_next: str) -> None:
        status = getattr(error, "status_code", None)
        request_id = getattr(error, "request_id", None)
        what = (
            f"HTTP {status}" if status is not None else f"{type(error).__name__}: {error.message}"
        )
        logger.warning(
            "Avatario %s attempt %d/%d failed (%s, request id %s); %s",
            self.name,
            self.attempts,
            self.policy.max_attempts,
            what,
            request_id or "none",
            what_next,
            extra={
                "avatario_operation": self.name,
                "avatario_attempt": self.attempts,
                "avatario_max_attempts": self.policy.max_attempts,
                "avatario_status_code": status,
                "avatario_request_id": request_id,
                "avatario_outcome": error.outcome.value,
                "avatario_delay": self.delay if what_next.startswith("retrying") else None,
            },
        )


# -- the loop, driven by backoff --------------------------------------------------------------
#
# The first attempt runs as a plain call: most calls succeed at once, and they need neither
# backoff's loop nor the import of backoff (which imports asyncio: tens of milliseconds at
# start-up). The first failure that is to be retried hands the call to backoff, which then
# drives every retry: its first "attempt" re-raises that failure, so its give-up rule and
# on-backoff hook see it like any other.


def _zero_waits() -> Generator[float, Any, None]:
    # The delay is planned by Call.decide and slept on the client's clock by _sleep / _asleep.
    while True:
        yield 0.0


#: Where a failed attempt's error carries its call (and so its verdict) to backoff's hooks.
_CALL = "_avatario_call"


def _give_up(error: Exception) -> bool:
    call: Call = error.__dict__[_CALL]
    return call.delay is None


def _sleep(details: Any) -> None:
    call: Call = details["exception"].__dict__[_CALL]
    call.log_retry(details["exception"])
    call.clock.sleep(call.delay or 0.0)


async def _asleep(details: Any) -> None:
    call: Call = details["exception"].__dict__[_CALL]
    call.log_retry(details["exception"])
    await call.clock.asleep(call.delay or 0.0)


def _decided(call: Call, error: APIError) -> bool:
    """Record the verdict on `error`; True when it is to be retried."""
    error.attempts = call.attempts
    call.decide(error)
    return call.delay is not None


def _sync_retries(call: Call, attempt: Callable[[float], T], pending: list[APIError]) -> T:
    if pending:
        raise pending.pop()
    try:
        return attempt(call.begin_attempt())
    except APIError as error:
        _decided(call, error)
        error.__dict__[_CALL] = call
        raise


async def _async_retries(
    call: Call, attempt: Callable[[float], Awaitable[T]], pending: list[APIError]
) -> T:
    if pending:
        raise pending.pop()
    try:
        return await attempt(call.begin_attempt())
    except APIError as error:
        _decided(call, error)
        error.__dict__[_CALL] = call
        raise


@functools.cache
def _loops() -> tuple[Any, Any]:
    """backoff's sync and async loops, built once, on the first retry."""
    import backoff  # noqa: PLC0415 - only when a retry is due (see above)

    def retrying(on_backoff: Any) -> Any:
        # Attempts, the deadline and the delays are counted by Call.decide, not by backoff.
        return backoff.on_exception(
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

    return retrying(_sleep)(_sync_retries), retrying(_asleep)(_async_retries)


def run_sync(call: Call, attempt: Callable[[float], T]) -> T:
    """Run `attempt(timeout)` until it succeeds or `call` gives up, sleeping on its clock."""
    try:
        return attempt(call.begin_attempt())
    except APIError as error:
        if not _decided(call, error):
            raise
        error.__dict__[_CALL] = call
        first = error
    try:
        result: T = _loops()[0](call, attempt, [first])
    except APIError as error:
        error.__dict__.pop(_CALL, None)
        raise
    return result


async def run_async(call: Call, attempt: Callable[[float], Awaitable[T]]) -> T:
    """The same as `run_sync` for a coroutine; cancellation during a sleep ends the call."""
    try:
        return await attempt(call.begin_attempt())
    except APIError as error:
        if not _decided(call, error):
            raise
        error.__dict__[_CALL] = call
        first = error
    try:
        result: T = await _loops()[1](call, attempt, [first])
    except APIError as error:
        error.__dict__.pop(_CALL, None)
        raise
    return result
