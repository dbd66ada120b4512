"""Riding out a blip: a retry not sent into trouble, but after Avatario answers again.

A step of the call flow (`_flow`), taken when a retry is due while the budget's scope is in
trouble that is younger than ``RetryPolicy.ride_out``. The call first waits its backoff delay
(a lone failure behaves as it always did); then, sending nothing and holding no connection,
it looks at the scope (`Ask("status")`, read once per 0.1 s per process) until one of:

    released   Avatario answers again: the trouble ended (another call's success, here or in
               any process sharing the store). The call retries after a random part of the
               trouble's length, so the calls that piled up during it come back at about the
               rate they came in, not all at once.
    probe      no one else is probing and the budget allows this retry (`Ask("take_probe")`:
               one caller per scope at a time, for a lease that grows with the trouble's
               age; a retry the budget refused asks it again): this call's retry is the probe.
    cooling    the server asked everyone to wait (Retry-After): wait until then, then look.
    gives up   the trouble is older than ``ride_out``, or what is left of ``max_elapsed``
               would be less than ``min_attempt_time``: the failure is raised, and
               `not_retried_because` says why.

Models: gRPC's ``wait_for_ready`` with its reconnect backoff, a circuit breaker's half-open
probe, the adaptive throttling of Google's SRE book. Waiting spends none of the call's
``max_attempts``; a probe is an attempt. Cancellation, Ctrl-C and the client's close end the
wait at its next step, as any wait of the flow.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from ._call_log import clock_time, log_attempt
from ._retry import CLOSED_DURING_WAIT
from ._steps import Ask, Call, Deadline, Sleep, Step

if TYPE_CHECKING:
    from ._stores.base import Status
    from .errors import APIError

#: How often a waiting call looks at its scope (jittered by ±50 %).
POLL_SECONDS = 0.2
#: A probe's lease: the trouble's age, within these bounds, plus the probe's own connect time.
MIN_LEASE = 0.5
MAX_LEASE = 4.0


class Probe:
    """A call's hold on its scope's probe: until when (monotonic) its retries are the probe."""

    __slots__ = ("until",)

    def __init__(self) -> None:
        self.until = float("-inf")


def ride_out(
    call: Call[Any],
    failure: APIError,
    attempts: int,
    deadline: Deadline,
    delay: float,
    trouble_since: float | None,
    probe: Probe,
    *,
    paid: bool,
) -> Generator[Step, Any, None]:
    """Wait until the call's retry may go (returns), or give up (raises `failure`).

    `paid`: the budget granted this retry (withdrew it) already. Any waiting call may become
    the probe, but one the budget refused must ask it again (`Ask("take_probe")` with the
    policy's share: granted only when the budget has room by then, as calls come in or the
    window moves on), so a fleet's probes come out of its budget. A call that holds the probe
    goes on probing at its own backoff while its lease lasts and its budget allows."""
    clock, trace = call.clock, call.trace
    began = clock.monotonic()
    since = clock.time() if trouble_since is None else trouble_since
    log_attempt(call, failure, attempts, f"retrying in {delay:.2f}s", delay)
    trace.backoff(delay, from_retry_after=getattr(failure, "retry_after", None) is not None)
    yield Sleep(min(delay, _usable(call, deadline)))  # even 0: a wait, as any retry's
    yield from _wait(call, failure, 0.0)
    waited = False
    while True:
        status: Status = yield Ask("status")
        now = clock.time()
        released = status.trouble_since is None or status.trouble_since > since + 1e-3
        if released and status.known:
            spread = min(max(0.0, now - since), _usable(call, deadline))
            yield from _wait(call, failure, clock.uniform(0.0, spread) if spread > 0 else 0.0)
            trace.ride_out("released", clock.monotonic() - began)
            return
        why = _why_give_up(call, status, since, now, deadline)
        if why is not None:
            failure.not_retried_because = why
            log_attempt(call, failure, attempts, f"not retried: {why}")
            trace.ride_out("gave_up", clock.monotonic() - began)
            raise failure
        cooling = status.cooling_until
        if cooling is not None and cooling > now:
            waited = True
            yield from _wait(call, failure, min(cooling - now, _usable(call, deadline)))
            continue
        lease = min(MAX_LEASE, max(MIN_LEASE, now - since)) + (call.connect_timeout or 1.0)
        share = None if paid else call.policy.retry_budget
        holds = paid and clock.monotonic() < probe.until  # its own probe goes on, if granted
        if holds or (yield Ask("take_probe", lease=lease, share=share)):
            probe.until = max(probe.until, clock.monotonic() + lease)
            if waited:  # a retry that went at once, after its backoff, is no ride-out
                trace.ride_out("probe", clock.monotonic() - began)
            return
        waited = True
        poll = POLL_SECONDS * clock.uniform(0.5, 1.5)
        yield from _wait(call, failure, min(poll, _usable(call, deadline)))


def _usable(call: Call[Any], deadline: Deadline) -> float:
    """How long the call may still wait and leave ``min_attempt_time`` for its retry."""
    return max(0.0, deadline.left() - call.policy.min_attempt_time)


def _wait(call: Call[Any], failure: APIError, seconds: float) -> Generator[Step, Any, None]:
    if seconds > 0:
        yield Sleep(seconds)
    if call.is_closed():
        failure.not_retried_because = CLOSED_DURING_WAIT
        raise failure


def _why_give_up(
    call: Call[Any], status: Status, since: float, now: float, deadline: Deadline
) -> str | None:
    """Why the wait ends without a retry, or None."""
    policy = call.policy
    if now - since >= policy.ride_out:
        return (
            f"Avatario did not answer again within the {policy.ride_out:g} s ride-out; failing "
            f"since {clock_time(since)}"
        )
    if _usable(call, deadline) <= 0:
        return (
            f"Avatario did not answer again before only min_attempt_time "
            f"({policy.min_attempt_time:g} s) of max_elapsed ({policy.max_elapsed:g} s) was left"
        )
    return None
