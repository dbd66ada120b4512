"""The retry rules, pure: whether a failure may be sent again, after how long, and why not.

What a failure means comes from the outcome table (`_outcome`): not sent, refused, unknown or
started. `is_retryable` applies the policy to it: a failure not sent is retried; a refusal when
its status is in ``retry_statuses`` (408, 429, 503 by default); an unknown outcome only for an
operation that only reads, or with ``retry_unknown_outcome=True`` (a deployment known to
deduplicate by ``Idempotency-Key``); a 2xx never.

`backoff_delays` is the schedule: `backoff`'s exponential wait generator gives each retry's
ceiling, full jitter draws the delay below it. `plan_delay` weighs the attempts left,
Retry-After (used as the server sent it) and the deadline: the next attempt is sent only if,
after its delay, at least ``min_attempt_time`` of ``max_elapsed`` is left to hear its answer;
otherwise the call ends with the last error, and the reason says why. The call flow
(`_flow`) applies these rules; nothing here has state or does I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from ._settings import RetryPolicy
from .errors import APIError, APIStatusError, Outcome

#: The shortest timeout an attempt is given (only a first attempt can be that short: a retry
#: needs `RetryPolicy.min_attempt_time` left).
MIN_ATTEMPT_TIMEOUT = 0.001

#: not_retried_because when the client is closed during a backoff wait.
CLOSED_DURING_WAIT = "the client was closed during the wait before the next attempt"


def is_retryable(error: BaseException, policy: RetryPolicy, *, idempotent: bool) -> bool:
    """May this failure be sent again under `policy`, by its outcome alone?

    `idempotent`: the operation only reads, so resending after an unknown outcome is safe.
    """
    if not isinstance(error, APIError) or error.outcome is Outcome.STARTED:
        return False
    if isinstance(error, APIStatusError) and error.status_code not in policy.retry_statuses:
        return False
    if error.outcome is Outcome.UNKNOWN:
        return policy.retry_unknown_outcome or idempotent
    return True


def backoff_delays(
    policy: RetryPolicy, uniform: Callable[[float, float], float]
) -> Iterator[float]:
    """The delays before retries 1, 2, ...: ``uniform(0, min(max_delay, initial_delay * 2 **
    (n - 1)))``.

    The ceilings are `backoff.expo`'s; the jitter is `backoff.full_jitter`'s formula drawn
    from the client's clock (backoff's own draws from the `random` module, which a test
    cannot seed per client). backoff is imported only here, when a first retry is due.
    """
    import backoff  # noqa: PLC0415 - imports asyncio: tens of ms that most calls never need

    ceilings = backoff.expo(factor=policy.initial_delay, max_value=policy.max_delay)
    next(ceilings)  # backoff's wait generators start with a bare yield, for its decorators
    for ceiling in ceilings:
        yield uniform(0.0, ceiling)


def plan_delay(
    policy: RetryPolicy,
    error: BaseException,
    *,
    attempts: int,
    time_left: float,
    jittered: Callable[[], float],
) -> tuple[float | None, str | None]:
    """``(seconds to wait before the next attempt, None)``, or ``(None, why not)``.

    `error.retryable` must already say whether the failure may be retried (if not, the reason
    is None: the error's own message says what happened); `attempts` is how many attempts were
    made so far; `time_left` is what remains of `max_elapsed`; `jittered()` gives the backoff
    schedule's next delay (drawn for every retry, so the schedule follows the attempts even
    where a Retry-After is used instead).
    """
    if not isinstance(error, APIError) or not error.retryable:
        return None, None
    if attempts >= policy.max_attempts:
        if policy.max_attempts == 1:
            return None, "retries are off (max_attempts=1)"
        return None, f"all {policy.max_attempts} attempts are used (max_attempts)"
    delay = jittered()
    asked = error.retry_after if isinstance(error, APIStatusError) else None
    if asked is not None and policy.respect_retry_after:
        if asked > policy.max_retry_after:
            return None, (
                f"the server asked to wait {asked:g} s, more than max_retry_after "
                f"({policy.max_retry_after:g} s)"
            )
        delay = asked
    if delay > time_left - policy.min_attempt_time:  # (not time_left - delay: floats round)
        waited = "the server's Retry-After" if asked is not None else "the backoff delay"
        return None, (
            f"after {waited} ({delay:.2f} s) only {max(0.0, time_left - delay):.2f} s of "
            f"max_elapsed ({policy.max_elapsed:g} s) would be left, less than min_attempt_time "
            f"({policy.min_attempt_time:g} s) to hear an answer"
        )
    return delay, None


def min_send_time(policy: RetryPolicy, timeout: float) -> float:
    """The least of an attempt that must be left when its request is written: enough to hear
    the answer (`min_attempt_time`), or half the attempt where its whole timeout is shorter."""
    return min(policy.min_attempt_time, timeout / 2)
