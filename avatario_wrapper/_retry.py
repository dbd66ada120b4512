"""The retry decision in one place: whether a failure is sent again, when, and until when.

What a failure means comes from the outcome table (`_outcome`): not sent, refused, unknown or
started. `is_retryable` applies the policy to it: a failure not sent is retried; a refusal when
its status is in ``retry_statuses`` (408, 429, 503 by default); an unknown outcome only for an
operation that only reads, or with ``retry_unknown_outcome=True`` (a deployment known to
deduplicate by ``Idempotency-Key``); a 2xx never.

`plan_delay` (pure) then weighs the attempts left, Retry-After and the deadline: the next attempt
is sent only if, after its delay, at least ``min_attempt_time`` of ``max_elapsed`` is left to
hear its answer; otherwise the call ends with the last error and says why. `RetryState.decide`
adds the retry budget and records the verdict on the error (`retryable`,
`not_retried_because`) and the delay on the state.

`backoff` (imported only here, and only when a first retry is due) drives the retries: its
give-up rule and on-backoff hook only read the verdict; the hook logs one WARNING and sleeps on
the client's `Clock`, and backoff itself is told to wait zero seconds. Before every retry the
loop checks that the client is still open and, on the async client, that the task has not been
cancelled (a library that turned the caller's cancellation into a timeout cannot make us send
again). Telemetry (`_telemetry`) hears of every attempt, wait and refusal when it is on.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Awaitable, Callable, Generator
from typing import TYPE_CHECKING, Any, TypeVar

from ._budget import RetryBudget
from ._clock import Clock
from ._settings import RetryPolicy
from .errors import APIError, APIStatusError, Outcome

if TYPE_CHECKING:
    from ._telemetry import CallTrace

logger = logging.getLogger("avatario_wrapper")

T = TypeVar("T")

#: The shortest timeout an attempt is given (only the first attempt can be that short: a retry
#: needs `RetryPolicy.min_attempt_time` left).
MIN_ATTEMPT_TIMEOUT = 0.001
#: Exponential growth stops here (2**62 is already far past any max_delay).
_MAX_EXPONENT = 62


def is_retryable(error: BaseException, policy: RetryPolicy, *, idempotent: bool) -> bool:
    """May this failure be sent again under `policy`, by its outcome alone? Pure.

    `idempotent`: the operation only reads, so resending after an unknown outcome is safe.
    """
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
) -> tuple[float | None, str | None]:
    """``(seconds to wait before the next attempt, None)``, or ``(None, why not)``. Pure.

    `error.retryable` must already say whether the failure may be retried (if not, the reason
    is None: the error's own message says what happened); `attempts` is how many attempts were
    made so far; `time_left` is what remains of `max_elapsed`.
    """
    if not isinstance(error, APIError) or not error.retryable:
        return None, None
    if attempts >= policy.max_attempts:
        if policy.max_attempts == 1:
            return None, "retries are off (max_attempts=1)"
        return None, f"all {policy.max_attempts} attempts are used (max_attempts)"
    asked = error.retry_after if isinstance(error, APIStatusError) else None
    if asked is not None and policy.respect_retry_after:
        if asked > policy.max_retry_after:
            return None, (
                f"the server asked to wait {asked:g} s, more than max_retry_after "
                f"({policy.max_retry_after:g} s)"
            )
        delay = asked
    else:
        ceiling = min(
            policy.max_delay, policy.initial_delay * 2.0 ** min(attempts - 1, _MAX_EXPONENT)
        )
        delay = uniform(0.0, ceiling)
    if time_left - delay < policy.min_attempt_time:
        waited = "the server's Retry-After" if asked is not None else "the backoff delay"
        return None, (
            f"after {waited} ({delay:.2f} s) only {max(0.0, time_left - delay):.2f} s of "
            f"max_elapsed ({policy.max_elapsed:g} s) would be left, less than min_attempt_time "
            f"({policy.min_attempt_time:g} s) to hear an answer"
        )
    return delay, None


#: not_retried_because when the client is closed during a backoff wait.
CLOSED_DURING_WAIT = "the client was closed during the wait before the next attempt"


class RetryState:
    """The retry state of one call: its policy, attempts so far, deadline, budget and trace."""

    __slots__ = (
        "attempts",
        "budget",
        "cancelling",
        "clock",
        "delay",
        "idempotent",
        "is_closed",
        "name",
        "policy",
        "started",
        "timeout",
        "trace",
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
        is_closed: Callable[[], bool],
        trace: CallTrace | None = None,
    ) -> None:
        self.name = name
        self.policy = policy
        self.timeout = timeout
        self.clock = clock
        self.budget = budget
        self.idempotent = idempotent
        self.is_closed = is_closed
        self.trace = trace
        self.attempts = 0
        self.delay: float | None = None
        self.cancelling = 0  # the task's cancellation requests when the call began (async)
        self.started = clock.monotonic()

    def time_left(self) -> float:
        return self.policy.max_elapsed - (self.clock.monotonic() - self.started)

    def begin_attempt(self) -> float:
        """Count an attempt and return its timeout: the client's, cut to the time left."""
        self.attempts += 1
        if self.attempts == 1 and self.policy.retry_budget is not None:
            self.budget.deposit()
        return max(MIN_ATTEMPT_TIMEOUT, min(self.timeout, self.time_left()))

    def decide(self, error: APIError) -> bool:
        """Record on `error` whether it is retried and why not; True when it is (after
        `self.delay` seconds)."""
        policy = self.policy
        error.attempts = self.attempts
        error.retryable = is_retryable(error, policy, idempotent=self.idempotent)
        delay, why_not = plan_delay(
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
            why_not = (
                f"the retry budget is spent (retries are capped at {policy.retry_budget:.0%} "
                "of this client's recent calls while Avatario is failing)"
            )
            self._log(error, "not retried: the retry budget is spent")
            if self.trace is not None:
                self.trace.budget_refused()
            delay = None
        error.not_retried_because = why_not
        self.delay = delay
        return delay is not None

    def stop_before_retry(self, error: APIError) -> bool:
        """After a wait: True (and the reason recorded on `error`) if the retry must not go."""
        if self.is_closed():
            error.not_retried_because = CLOSED_DURING_WAIT
            return True
        return False

    def log_retry(self, error: APIError) -> None:
        """One WARNING per retry; the error text never holds a secret or raw server text."""
        self._log(error, f"retrying in {self.delay or 0.0:.2f}s")
        if self.trace is not None:
            self.trace.backoff(
                self.delay or 0.0,
                from_retry_after=getattr(error, "retry_after", None) is not None
                and self.policy.respect_retry_after,
            )

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


# -- one attempt, traced or not -----------------------------------------------------------------


def _attempt(state: RetryState, attempt: Callable[[float], T]) -> T:
    timeout = state.begin_attempt()
    trace = state.trace
    if trace is None:
        return attempt(timeout)
    trace.attempt_started(state.attempts)
    try:
        result = attempt(timeout)
    except BaseException as error:
        trace.attempt_ended(None, error)
        raise
    trace.attempt_ended(result, None)
    return result


async def _attempt_async(state: RetryState, attempt: Callable[[float], Awaitable[T]]) -> T:
    timeout = state.begin_attempt()
    trace = state.trace
    if trace is None:
        return await attempt(timeout)
    trace.attempt_started(state.attempts)
    try:
        result = await attempt(timeout)
    except BaseException as error:
        trace.attempt_ended(None, error)
        raise
    trace.attempt_ended(result, None)
    return result


# -- cancellation (async) -----------------------------------------------------------------------


def cancel_requests() -> int:
    """How many cancellations of the current task are pending (0 on Python 3.10, which does not
    count them; there the async transports keep the caller's cancellation from being lost)."""
    if sys.version_info >= (3, 11):
        # asyncio is imported by whoever runs a coroutine (not here: the sync client never
        # needs it), so it is taken from sys.modules without an import statement per call.
        task = sys.modules["asyncio"].current_task()
        return task.cancelling() if task is not None else 0  # type: ignore[no-any-return]
    return 0  # pragma: no cover - Python 3.10


def _raise_if_cancelled(state: RetryState) -> None:
    """The caller cancelled the task while an attempt ran and a library swallowed it: honour
    it now rather than send again (or report a timeout)."""
    if cancel_requests() > state.cancelling:
        import asyncio  # noqa: PLC0415

        raise asyncio.CancelledError


# -- the loop, driven by backoff --------------------------------------------------------------
#
# The first attempt runs as a plain call: most calls succeed at once, and they need neither
# backoff's loop nor the import of backoff (which imports asyncio: tens of milliseconds at
# start-up). The first failure that is to be retried hands the call to backoff, which then
# drives every retry: its first "attempt" re-raises that failure, so its give-up rule and
# on-backoff hook see it like any other.


def _zero_waits() -> Generator[float, Any, None]:
    # The delay is planned by RetryState.decide and slept on the client's clock by the hooks.
    while True:
        yield 0.0


#: Where a failed attempt's error carries its state (and so its verdict) to backoff's hooks.
_STATE = "_avatario_retry_state"


def _give_up(error: Exception) -> bool:
    state: RetryState = error.__dict__[_STATE]
    return state.delay is None


def _sleep(details: Any) -> None:
    state: RetryState = details["exception"].__dict__[_STATE]
    state.log_retry(details["exception"])
    state.clock.sleep(state.delay or 0.0)


async def _asleep(details: Any) -> None:
    state: RetryState = details["exception"].__dict__[_STATE]
    state.log_retry(details["exception"])
    await state.clock.asleep(state.delay or 0.0)


def _carry(state: RetryState, error: APIError) -> APIError:
    error.__dict__[_STATE] = state
    return error


def _sync_retries(
    state: RetryState, attempt: Callable[[float], T], pending: list[APIError], last: list[APIError]
) -> T:
    if pending:
        raise pending.pop()
    if state.stop_before_retry(last[0]):
        state.delay = None
        raise last[0]
    try:
        return _attempt(state, attempt)
    except APIError as error:
        state.decide(error)
        last[0] = _carry(state, error)
        raise


async def _async_retries(
    state: RetryState,
    attempt: Callable[[float], Awaitable[T]],
    pending: list[APIError],
    last: list[APIError],
) -> T:
    if pending:
        raise pending.pop()
    _raise_if_cancelled(state)
    if state.stop_before_retry(last[0]):
        state.delay = None
        raise last[0]
    try:
        return await _attempt_async(state, attempt)
    except APIError as error:
        _raise_if_cancelled(state)
        state.decide(error)
        last[0] = _carry(state, error)
        raise


@functools.cache
def _loops() -> tuple[Any, Any]:
    """backoff's sync and async loops, built once, on the first retry."""
    import backoff  # noqa: PLC0415 - only when a retry is due (see above)

    def retrying(on_backoff: Any) -> Any:
        # Attempts, the deadline and the delays are counted by RetryState, not by backoff.
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


def _ended(state: RetryState, result: Any, error: BaseException | None) -> None:
    if state.trace is not None:
        state.trace.ended(result, error, state.attempts)


def run_sync(state: RetryState, attempt: Callable[[float], T]) -> T:
    """Run `attempt(timeout)` until it succeeds or `state` gives up, sleeping on its clock."""
    try:
        try:
            result = _attempt(state, attempt)
        except APIError as error:
            if not state.decide(error):
                raise
            first = _carry(state, error)
        else:
            _ended(state, result, None)
            return result
        try:
            result = _loops()[0](state, attempt, [first], [first])
        except APIError as error:
            error.__dict__.pop(_STATE, None)
            raise
    except BaseException as error:
        _ended(state, None, error)
        raise
    _ended(state, result, None)
    return result


async def run_async(state: RetryState, attempt: Callable[[float], Awaitable[T]]) -> T:
    """The same as `run_sync` for a coroutine; cancellation ends the call at once."""
    state.cancelling = cancel_requests()
    try:
        try:
            result = await _attempt_async(state, attempt)
        except APIError as error:
            _raise_if_cancelled(state)
            if not state.decide(error):
                raise
            first = _carry(state, error)
        else:
            _ended(state, result, None)
            return result
        try:
            result = await _loops()[1](state, attempt, [first], [first])
        except APIError as error:
            error.__dict__.pop(_STATE, None)
            raise
    except BaseException as error:
        _ended(state, None, error)
        raise
    _ended(state, result, None)
    return result
