"""One call, start to end: every decision in one pure flow, and the two loops that drive it.

    flow = call_flow(call)          a generator: it decides everything and does no I/O
    step = next(flow)               Attempt · Sleep · WatchRoom
    step = flow.send(answer)        what the step brought back ...
                                    ... until it returns the result or raises the final error

`drive` (sync) and `drive_async` do what each step says, and nothing else:

    Attempt    send the request once, within the step's limits   → the `Reply`, or the
                                                                    `APIConnectionError`
    Sleep      wait on the client's clock                        → None
    WatchRoom  (AvatarSession) watch the room for the avatar,    → True joined · False not
               on the client's clock                                within the time · None
                                                                    the room cannot tell

The flow, in order: count the call in the retry budget; for each attempt, give it its timeout
(the client's, cut to what is left of ``max_elapsed``), its connect timeout and the time that
must be left when its request is written; read the answer into the result or the error
(`_reply`); classify a failure (`_outcome` via `_retry.is_retryable`), plan the delay
(`_retry.plan_delay`: attempts, Retry-After, the deadline, ``min_attempt_time``), ask the
budget, log one WARNING, sleep; after a wait, stop if the client was closed. When no retry is
left and an avatar may have started, a call that can watch the room (`RoomWatch`) does so,
as long as an avatar may take to join (`RoomWatch.seconds`) within what is left of
``max_elapsed``: joined means started; not joined means one resend with the same idempotency
key. Telemetry (`_telemetry`) hears of every attempt, wait and refusal. The request itself was
made before (`_request.prepare`: inputs checked, body serialised once): every attempt sends
the same bytes.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Generator, Iterator
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from ._reply import Reply, read_reply
from ._retry import (
    CLOSED_DURING_WAIT,
    MIN_ATTEMPT_TIMEOUT,
    backoff_delays,
    is_retryable,
    min_send_time,
    plan_delay,
)
from .errors import APIConnectionError, APIError, Outcome

if TYPE_CHECKING:
    from ._budget import RetryBudget
    from ._clock import Clock
    from ._request import PreparedRequest
    from ._settings import RetryPolicy
    from ._telemetry import CallTrace

logger = logging.getLogger("avatario_wrapper")

ResultT = TypeVar("ResultT")
ResultT_co = TypeVar("ResultT_co", covariant=True)


# -- the steps ----------------------------------------------------------------------------------


class Attempt:
    """Send the request once: the whole attempt within `timeout`, opening a connection within
    `connect_timeout`, and the request written only while `min_send_time` is left."""

    __slots__ = ("connect_timeout", "min_send_time", "number", "timeout")

    def __init__(
        self, number: int, timeout: float, connect_timeout: float, min_send_time: float
    ) -> None:
        self.number = number
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.min_send_time = min_send_time

    def __repr__(self) -> str:
        return f"Attempt({self.number}, timeout={self.timeout:.3f})"


class Sleep:
    """Wait `seconds` on the client's clock before the next attempt."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds


class WatchRoom:
    """Watch the LiveKit room up to `seconds` for the avatar to join."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds


Step = Attempt | Sleep | WatchRoom


class SyncSender(Protocol):
    """What `drive` needs of a transport: one attempt sent (`_transports.base`)."""

    def send(self, request: PreparedRequest[Any], attempt: Attempt) -> Reply:
        """The reply, or an `APIConnectionError` raised."""


class AsyncSender(Protocol):
    """What `drive_async` needs of a transport."""

    async def send(self, request: PreparedRequest[Any], attempt: Attempt) -> Reply:
        """The reply, or an `APIConnectionError` raised."""


class RoomWatch(Protocol[ResultT_co]):
    """How an `AvatarSession` settles an unknown outcome: by the room it sent the avatar to."""

    #: How long the avatar may take to join (bounded by what is left of the call).
    seconds: float

    async def joined(self, seconds: float, clock: Clock) -> bool | None:
        """True when the avatar joins within `seconds` on `clock` (the client's); None when
        the room cannot tell."""

    def settled(self, error: APIError, attempts: int) -> ResultT_co:
        """The result of a call whose answer was lost but whose avatar joined."""


class Call(Generic[ResultT]):
    """What one call's flow needs, made by the client for each call."""

    __slots__ = (
        "budget",
        "clock",
        "connect_timeout",
        "is_closed",
        "policy",
        "request",
        "room",
        "timeout",
        "trace",
    )

    def __init__(
        self,
        request: PreparedRequest[ResultT],
        *,
        policy: RetryPolicy,
        timeout: float,
        connect_timeout: float | None,
        clock: Clock,
        budget: RetryBudget,
        is_closed: Callable[[], bool],
        trace: CallTrace,
        room: RoomWatch[ResultT] | None = None,
    ) -> None:
        self.request = request
        self.policy = policy
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.clock = clock
        self.budget = budget
        self.is_closed = is_closed
        self.trace = trace
        self.room = room


# -- the flow ---------------------------------------------------------------------------------


def call_flow(call: Call[ResultT]) -> Generator[Step, Any, ResultT]:
    """The whole call as a generator of steps (see the module docstring)."""
    policy, clock, trace, request = call.policy, call.clock, call.trace, call.request
    deadline = Deadline(clock, policy.max_elapsed)
    schedule = Backoff(policy, clock)
    attempts = 0
    resent_after_watch = False
    if policy.retry_budget is not None:
        call.budget.deposit()  # first attempts are counted, never held back
    try:
        while True:
            attempts += 1
            trace.attempt_started(attempts)
            try:
                answer = yield _attempt(call, attempts, deadline.left())
            except BaseException as error:  # cancelled, interrupted, or a bug: still recorded
                trace.attempt_ended(None, error)
                raise
            try:
                if isinstance(answer, APIConnectionError):
                    raise answer
                result: ResultT = read_reply(request, answer, attempts, clock.time())
            except APIError as error:
                failure = error
            else:
                trace.attempt_ended(result, None)
                trace.ended(result, None, attempts)
                return result
            trace.attempt_ended(None, failure)

            delay = _delay_before_retry(call, failure, attempts, deadline, schedule)
            if delay is not None:
                _log(request.name, policy, failure, attempts, f"retrying in {delay:.2f}s", delay)
                trace.backoff(delay, from_retry_after=_from_retry_after(failure, policy))
                yield Sleep(delay)
                if call.is_closed():
                    failure.not_retried_because = CLOSED_DURING_WAIT
                    raise failure
                continue

            # No retry. Unless the room can say whether the avatar started, that is the end.
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


class Deadline:
    """What is left of ``max_elapsed``, on the client's clock."""

    __slots__ = ("_clock", "_ends")

    def __init__(self, clock: Clock, seconds: float) -> None:
        self._clock = clock
        self._ends = clock.monotonic() + seconds

    def left(self) -> float:
        return self._ends - self._clock.monotonic()


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


def _delay_before_retry(
    call: Call[Any], failure: APIError, attempts: int, deadline: Deadline, schedule: Backoff
) -> float | None:
    """Whether `failure` is retried and after how long (None: not), recorded on it:
    `attempts`, `retryable` (its outcome under the policy) and `not_retried_because`."""
    policy = call.policy
    failure.attempts = attempts
    failure.retryable = is_retryable(failure, policy, idempotent=not call.request.starts_session)
    delay, failure.not_retried_because = plan_delay(
        policy,
        failure,
        attempts=attempts,
        time_left=deadline.left(),
        jittered=schedule.next_delay,
    )
    if delay is not None and not _budget_allows(call, failure, attempts):
        return None
    return delay


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
    """Watch the room: the result when the avatar joined; None to send once more (same key);
    else `failure` is raised."""
    watched = max(0.0, min(room.seconds, deadline.left()))
    joined = yield WatchRoom(watched)
    if joined:
        _log_settled(failure)
        return _Settled(room.settled(failure, attempts))
    why = _why_no_resend(call, failure, joined, attempts, deadline, resent)
    if why is not None:
        _log_unsettled(watched, f"not sent again: {why}")
        raise failure
    _log_unsettled(watched, "sending once more with the same idempotency key")
    return None


def _budget_allows(call: Call[Any], failure: APIError, attempts: int) -> bool:
    """Withdraw one retry from the budget; False (and the reason on `failure`) if it is spent."""
    share = call.policy.retry_budget
    if share is None or call.budget.try_withdraw(share):
        return True
    failure.not_retried_because = (
        f"the retry budget is spent (retries are capped at {share:.0%} of this client's "
        "recent calls while Avatario is failing)"
    )
    _log(
        call.request.name, call.policy, failure, attempts, "not retried: the retry budget is spent"
    )
    call.trace.budget_refused()
    return False


def _why_no_resend(
    call: Call[Any],
    failure: APIError,
    joined: bool | None,
    attempts: int,
    deadline: Deadline,
    resent: bool,
) -> str | None:
    """Why an unknown outcome the room did not settle is not sent once more, or None."""
    policy = call.policy
    if joined is None:
        return "the room cannot show whether the avatar joined"
    if failure.outcome is Outcome.STARTED:
        return "a 2xx arrived, so it is never sent again"
    if resent:
        return "it was sent once more already"
    if attempts >= policy.max_attempts or deadline.left() < policy.min_attempt_time:
        return "the retry policy's attempts or deadline are used up"
    if not _budget_allows(call, failure, attempts):
        return "the retry budget is spent"
    return None


def _from_retry_after(failure: APIError, policy: RetryPolicy) -> bool:
    return getattr(failure, "retry_after", None) is not None and policy.respect_retry_after


def _log(
    name: str,
    policy: RetryPolicy,
    error: APIError,
    attempts: int,
    what_next: str,
    delay: float | None = None,
) -> None:
    """One WARNING per retry or refusal; the error text never holds a secret or raw server
    text (`_reply` made it one redacted line)."""
    status = getattr(error, "status_code", None)
    request_id = getattr(error, "request_id", None)
    what = f"HTTP {status}" if status is not None else f"{type(error).__name__}: {error.message}"
    logger.warning(
        "Avatario %s attempt %d/%d failed (%s, request id %s); %s",
        name,
        attempts,
        policy.max_attempts,
        what,
        request_id or "none",
        what_next,
        extra={
            "avatario_operation": name,
            "avatario_attempt": attempts,
            "avatario_max_attempts": policy.max_attempts,
            "avatario_status_code": status,
            "avatario_request_id": request_id,
            "avatario_outcome": error.outcome.value,
            "avatario_delay": delay,
        },
    )


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


# -- the two drivers ----------------------------------------------------------------------------


def drive(
    flow: Generator[Step, Any, ResultT],
    transport: SyncSender,
    request: PreparedRequest[Any],
    clock: Clock,
) -> ResultT:
    """Run `flow` on a sync transport: send, sleep, hand back what came of it."""
    step = next(flow)
    while True:
        try:
            if type(step) is Attempt:
                try:
                    answer: Any = transport.send(request, step)
                except APIConnectionError as error:
                    answer = error
            elif type(step) is Sleep:
                clock.sleep(step.seconds)
                answer = None
            else:
                raise TypeError(f"a sync call has no {type(step).__name__} step")
        except BaseException as error:
            flow.throw(error)  # the flow ends the call's trace and raises it again
            raise
        try:
            step = flow.send(answer)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


async def drive_async(
    flow: Generator[Step, Any, ResultT],
    transport: AsyncSender,
    request: PreparedRequest[Any],
    clock: Clock,
    room: RoomWatch[Any] | None = None,
) -> ResultT:
    """Run `flow` on an async transport. A cancellation the caller asked for while a step ran
    ends the call, even where a library swallowed it (Python 3.11+ counts them)."""
    before = _cancel_requests()
    step = next(flow)
    while True:
        try:
            if type(step) is Attempt:
                if step.number > 1:
                    _raise_if_cancelled(before)
                try:
                    answer: Any = await transport.send(request, step)
                except APIConnectionError as error:
                    answer = error
                if type(answer) is not Reply or not 200 <= answer.status < 300:
                    _raise_if_cancelled(before)  # a failure is never what a cancel ends in
            elif type(step) is Sleep:
                await clock.asleep(step.seconds)
                answer = None
            elif type(step) is WatchRoom and room is not None:
                answer = await room.joined(step.seconds, clock)
            else:
                raise TypeError("a WatchRoom step without a room to watch")
        except BaseException as error:
            flow.throw(error)
            raise
        try:
            step = flow.send(answer)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


def _raise_if_cancelled(before: int) -> None:
    """The caller cancelled the task while a step ran and a library swallowed it: honour it
    now rather than send again (or report a timeout)."""
    if _cancel_requests() > before:
        raise sys.modules["asyncio"].CancelledError


def _cancel_requests() -> int:
    """How many cancellations of the current task are pending (0 on Python 3.10, which does
    not count them; there the async transports keep the caller's cancellation from being
    lost)."""
    if sys.version_info >= (3, 11):
        task = sys.modules["asyncio"].current_task()
        return task.cancelling() if task is not None else 0  # type: ignore[no-any-return]
    return 0  # pragma: no cover - Python 3.10
