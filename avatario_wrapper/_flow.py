"""One call, start to end: every decision in one pure flow, read top to bottom.

    flow = call_flow(call)          a generator: it decides everything and does no I/O
    step = next(flow)               Attempt · Sleep · Ask · WatchRoom (`_steps`)
    step = flow.send(answer)        what the step brought back ...
                                    ... until it returns the result or raises the final error

A driver (`_drivers.drive`, `drive_async`) does what each step says. The flow, in order:

1. Count the call in its retry budget (`Ask("deposit")`): first attempts are never held back.
2. Each attempt gets its limits: the client's timeout cut to what is left of ``max_elapsed``,
   the connect timeout, and the time that must be left when its request is written.
3. The answer is read into the result or the error (`_reply.read_reply`). A success is told
   to the budget (`Ask("succeeded")`), which passes it on to its store after the call's own
   failure or while this process heard the scope in trouble: it may end the trouble for
   everyone.
4. A failure is classified (`_retry.is_retryable`, over the outcome table of `_outcome`) and
   its retry planned (`_retry.plan_delay`: attempts, Retry-After, the deadline,
   ``min_attempt_time``, the backoff schedule); the budget hears of it (`Ask("failed")`:
   the trouble, the shared cool-down, a retry withdrawn or refused).
5. While the scope's trouble is younger than ``ride_out``, the retry is not sent into it:
   the call rides it out (`_ride_out`) — sends nothing until Avatario answers again or its
   own probe goes — then retries. Once the trouble is older, the budget alone decides: a
   refused retry fails at once. A retry logs one WARNING and waits its delay; after any
   wait the call stops if the client was closed.
6. With no retry left and an avatar that may have started, an `AvatarSession`'s call watches
   the room (`WatchRoom`) as long as an avatar may take to join (`RoomWatch.seconds`) within
   what is left of ``max_elapsed``: joined means started; not joined means one resend with
   the same idempotency key.

Telemetry (`_telemetry`) hears of every attempt, wait and refusal. The request was made
before (`_request.prepare`: inputs checked, body serialised once): every attempt sends the
same bytes.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ._call_log import clock_time
from ._call_log import log_attempt as _log
from ._reply import read_reply
from ._retry import (
    CLOSED_DURING_WAIT,
    MIN_ATTEMPT_TIMEOUT,
    backoff_delays,
    is_retryable,
    min_send_time,
    plan_delay,
)
from ._ride_out import Probe, ride_out
from ._steps import Ask, Attempt, Call, Deadline, RoomWatch, Sleep, Step, WatchRoom
from .errors import APIConnectionError, APIError, APIStatusError, Outcome

if TYPE_CHECKING:
    from ._clock import Clock
    from ._settings import RetryPolicy
    from ._stores.base import Verdict

logger = logging.getLogger("avatario_wrapper")

ResultT = TypeVar("ResultT")


def call_flow(call: Call[ResultT]) -> Generator[Step, Any, ResultT]:
    """The whole call as a generator of steps (see the module docstring)."""
    policy, clock, trace, request = call.policy, call.clock, call.trace, call.request
    deadline = Deadline(clock, policy.max_elapsed)
    schedule = Backoff(policy, clock)
    attempts = 0
    probe = Probe()
    resent_after_watch = False
    # 1. Counted, never held back.
    if call.scope is not None:
        yield Ask("deposit")
    try:
        while True:
            # 2. The attempt.
            attempts += 1
            trace.attempt_started(attempts)
            began = clock.monotonic()
            try:
                answer = yield _attempt(call, attempts, deadline.left())
            except BaseException as error:  # cancelled, interrupted, or a bug: still recorded
                trace.attempt_ended(None, error)
                raise
            # 3. Its answer.
            try:
                if isinstance(answer, APIConnectionError):
                    raise answer
                result: ResultT = read_reply(request, answer, attempts, clock.time())
            except APIError as error:
                failure = error
            else:
                trace.attempt_ended(result, None)
                if call.scope is not None:
                    yield Ask("succeeded", retried=attempts > 1)
                trace.ended(result, None, attempts)
                return result
            trace.attempt_ended(None, failure)

            # 4 and 5. A retry, now or after riding the trouble out; or none.
            dated = _dated(failure, clock.monotonic() - began)
            if (yield from _retry(call, failure, attempts, deadline, schedule, probe, dated)):
                if call.is_closed():
                    failure.not_retried_because = CLOSED_DURING_WAIT
                    raise failure
                continue

            # 6. No retry. Unless the room can say whether the avatar started, that is the end.
            if call.room is None or not failure.may_have_started:
                raise failure
            settled = yield from _settle_by_room(
                call, call.room, failure, attempts, deadline, resent_after_watch
            )
            if settled is not None:
                trace.ended(settled.value, None, attempts)
                return settled.value
            resent_after_watch = True  # at once: the room waited already
    except GeneratorExit:  # abandoned, never driven to its end: nothing to record
        raise
    except BaseException as error:
        trace.ended(None, error, attempts)
        raise


class Backoff:
    """The call's backoff schedule (`_retry.backoff_delays`), made at its first retry, when
    backoff is imported."""

    __slots__ = ("_clock", "_delays", "_policy")

    def __init__(self, policy: RetryPolicy, clock: Clock) -> None:
        self._policy = policy
        self._clock = clock
        self._delays: Iterator[float] | None = None

    def next_delay(self) -> float:
        if self._delays is None:
            self._delays = backoff_delays(self._policy, self._clock.uniform)
        return next(self._delays)


def _attempt(call: Call[Any], number: int, time_left: float) -> Attempt:
    """The limits of attempt `number`: the client's timeout cut to what is left of the call."""
    timeout = max(MIN_ATTEMPT_TIMEOUT, min(call.timeout, time_left))
    connect = call.connect_timeout
    return Attempt(
        number,
        timeout,
        timeout if connect is None else min(connect, timeout),
        min_send_time(call.policy, timeout),
    )


def _retry(
    call: Call[Any],
    failure: APIError,
    attempts: int,
    deadline: Deadline,
    schedule: Backoff,
    probe: Probe,
    dated: float,
) -> Generator[Step, Any, bool]:
    """Whether `failure` is sent again (True: now), after the waits this takes. Records on it
    `attempts`, `retryable` and, when not, `not_retried_because`. `dated`: how long ago the
    failure's evidence dates from (`_dated`)."""
    policy, clock = call.policy, call.clock
    failure.attempts = attempts
    failure.retryable = is_retryable(failure, policy, idempotent=not call.request.starts_session)
    delay, failure.not_retried_because = plan_delay(
        policy, failure, attempts=attempts, time_left=deadline.left(), jittered=schedule.next_delay
    )
    verdict: Verdict | None = None
    if call.scope is not None and _is_trouble(failure, policy):
        verdict = yield Ask(
            "failed",
            retry=delay is not None,
            share=policy.retry_budget,
            cool_until=_cool_until(failure, policy, delay, clock),
            dated=dated,
        )
    if delay is None:
        return False
    if verdict is not None and _young(verdict.trouble_since, policy, clock):
        yield from ride_out(
            call,
            failure,
            attempts,
            deadline,
            delay,
            verdict.trouble_since,
            probe,
            paid=verdict.allowed,
        )
        return True
    if verdict is not None and not verdict.allowed:
        failure.not_retried_because = _refusal(call, verdict)
        _log(call, failure, attempts, f"not retried: {failure.not_retried_because}")
        call.trace.budget_refused()
        return False
    _log(call, failure, attempts, f"retrying in {delay:.2f}s", delay)
    call.trace.backoff(delay, from_retry_after=_from_retry_after(failure, policy))
    yield Sleep(delay)
    return True


def _dated(failure: APIError, took: float) -> float:
    """How long ago `failure` tells of the way to Avatario: a request never sent (a connect
    that timed out or was refused) tells of the moment its attempt began, `took` seconds ago,
    so the store counts it then (a blackhole's last connects, timing out a second after it
    ended, are no news against the successes since); an answer tells of now."""
    return took if failure.outcome is Outcome.NOT_SENT else 0.0


def _is_trouble(failure: APIError, policy: RetryPolicy) -> bool:
    """A failure that says Avatario (or the way to it) is in trouble, not that this request
    was wrong: no answer, an unknown outcome, or a status the policy would retry."""
    if isinstance(failure, APIStatusError):
        return failure.status_code in policy.retry_statuses
    return failure.outcome in (Outcome.NOT_SENT, Outcome.UNKNOWN)


def _cool_until(
    failure: APIError, policy: RetryPolicy, delay: float | None, clock: Clock
) -> float | None:
    """When the server asked everyone to wait until (its Retry-After, shared by the scope)."""
    asked = getattr(failure, "retry_after", None)
    if asked is None or not policy.respect_retry_after or asked > policy.max_retry_after:
        return None
    return clock.time() + float(asked)


def _young(trouble_since: float | None, policy: RetryPolicy, clock: Clock) -> bool:
    """The scope's trouble is worth riding out: younger than ``ride_out`` (0: never)."""
    if policy.ride_out <= 0:
        return False
    return trouble_since is None or clock.time() - trouble_since < policy.ride_out


def _refusal(call: Call[Any], verdict: Verdict) -> str:
    """Why the budget's store refused a retry, in the words of `not_retried_because`."""
    if verdict.refused_by == "cool_down" and verdict.cooling_until is not None:
        return (
            "Avatario asked every caller to wait until "
            f"{clock_time(verdict.cooling_until)} (a Retry-After one of them heard)"
        )
    share = call.policy.retry_budget or 0.0
    where = _SCOPES.get(call.scope.name if call.scope else "", "recent calls")
    reason = (
        f"the retry budget is spent (retries are capped at {share:.0%} of {where} while "
        "Avatario is failing)"
    )
    if call.policy.ride_out > 0 and verdict.trouble_since is not None:
        reason += (
            f"; Avatario did not answer again within the {call.policy.ride_out:g} s ride-out "
            f"(failing since {clock_time(verdict.trouble_since)})"
        )
    return reason


_SCOPES = {
    "process": "this client's recent calls",
    "host": "the recent calls of every process of this user on this machine",
    "redis": "the recent calls of every process sharing this Redis",
}


class _Settled(Generic[ResultT]):
    __slots__ = ("value",)

    def __init__(self, value: ResultT) -> None:
        self.value = value


def _settle_by_room(
    call: Call[ResultT],
    room: RoomWatch[ResultT],
    failure: APIError,
    attempts: int,
    deadline: Deadline,
    resent: bool,
) -> Generator[Step, Any, _Settled[ResultT] | None]:
    """Watch the room: the result when the avatar joined; None to send once more (same key;
    outside the budget: the room, not a guess, says it is needed); else `failure` is raised."""
    watched = max(0.0, min(room.seconds, deadline.left()))
    joined = yield WatchRoom(watched)
    if joined:
        _log_settled(failure)
        return _Settled(room.settled(failure, attempts))
    why = _why_no_resend(call.policy, failure, joined, attempts, deadline, resent)
    if why is not None:
        _log_unsettled(watched, f"not sent again: {why}")
        raise failure
    _log_unsettled(watched, "sending once more with the same idempotency key")
    return None


def _why_no_resend(
    policy: RetryPolicy,
    failure: APIError,
    joined: bool | None,
    attempts: int,
    deadline: Deadline,
    resent: bool,
) -> str | None:
    """Why an unknown outcome the room did not settle is not sent once more, or None."""
    if joined is None:
        return "the room cannot show whether the avatar joined"
    if failure.outcome is Outcome.STARTED:
        return "a 2xx arrived, so it is never sent again"
    if resent:
        return "it was sent once more already"
    if attempts >= policy.max_attempts or deadline.left() < policy.min_attempt_time:
        return "the retry policy's attempts or deadline are used up"
    return None


def _from_retry_after(failure: APIError, policy: RetryPolicy) -> bool:
    return getattr(failure, "retry_after", None) is not None and policy.respect_retry_after


def _log_unsettled(seconds: float, what_next: str) -> None:
    logger.warning(
        "Avatario start-session outcome unknown and the avatar did not join within %.3g s; %s",
        seconds,
        what_next,
    )


def _log_settled(error: APIError) -> None:
    logger.info(
        "Avatario start-session outcome was unknown (%s); the avatar joined the room, so it "
        "started",
        type(error).__name__,
    )
