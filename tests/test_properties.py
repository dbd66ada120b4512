"""Property-based: for any policy and any sequence of faults, the retry rules hold."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from avatario_wrapper import APIError, RetryPolicy, StartSessionResult
from avatario_wrapper._retry import backoff_delays, plan_delay
from avatario_wrapper.errors import APIConnectionError, InternalServerError, RateLimitError
from avatario_wrapper.testing import FakeClock

from .conftest import CALL, Script, client_runner

policies = st.builds(
    RetryPolicy,
    max_attempts=st.integers(1, 8),
    initial_delay=st.floats(0, 5),
    max_delay=st.floats(0, 20),
    max_elapsed=st.floats(0.01, 60),
    respect_retry_after=st.booleans(),
    max_retry_after=st.floats(0, 120),
)

retry_after = st.one_of(
    st.none(),
    st.integers(-5, 200).map(str),
    st.floats(0, 90, allow_nan=False).map(lambda f: f"{f:.3f}"),
    st.sampled_from(["", "soon", "Wed, 21 Oct 2015 07:28:00 GMT", "nan"]),
)


@st.composite
def faults(draw: st.DrawFn) -> Any:
    kind = draw(st.sampled_from(["status", "reset", "timeout", "ok", "bad200"]))
    took = draw(st.floats(0, 15))
    if kind == "status":
        status = draw(st.sampled_from([400, 401, 408, 409, 422, 429, 500, 502, 503, 504, 418]))
        headers = {}
        value = draw(retry_after)
        if value is not None:
            headers["Retry-After"] = value
        return took, httpx.Response(status, json={"error": "e", "message": "m"}, headers=headers)
    if kind == "reset":
        return took, httpx.ReadError("reset")
    if kind == "timeout":
        return took, httpx.ReadTimeout("timed out")
    if kind == "bad200":
        return took, httpx.Response(200, content=b"not json")
    return took, httpx.Response(200, json={"session_id": "s"})


class TimedScript(Script):
    """Each step takes its own time on the fake clock, never more than the attempt's timeout."""

    def __init__(self, steps: list[Any], clock: FakeClock) -> None:
        super().__init__(*(step for _, step in steps), clock=clock)
        self.durations = [took for took, _ in steps]
        self.delivered: list[int | None] = []  # the status each request got, None if none

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert self.clock is not None
        index = min(len(self.requests), len(self.durations) - 1)
        timeout = request.extensions["timeout"]["read"]
        took = self.durations[index]
        if took > timeout:  # a real transport gives up at its timeout
            self.clock.advance(timeout)
            self.requests.append(request)
            self.delivered.append(None)
            raise httpx.ReadTimeout("timed out")
        self.took = took
        try:
            response = super().__call__(request)
        except httpx.HTTPError:
            self.delivered.append(None)
            raise
        self.delivered.append(response.status_code)
        return response


@pytest.mark.parametrize("kind", ["sync", "async"])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policy=policies, steps=st.lists(faults(), min_size=1, max_size=10), seed=st.integers())
def test_attempts_deadline_and_no_resend_after_2xx(kind, policy, steps, seed) -> None:
    runner = client_runner(kind, "start_session", CALL)
    clock = FakeClock(seed=seed)
    script = TimedScript(steps, clock)
    try:
        outcome: StartSessionResult | APIError = runner(
            script, clock, policy, client_options={"timeout": 10.0}
        )
    except APIError as exc:
        outcome = exc

    attempts = len(script.requests)
    assert 1 <= attempts <= policy.max_attempts
    assert outcome.attempts == attempts
    # The whole call, attempts and sleeps, stays within max_elapsed.
    assert clock.now <= policy.max_elapsed + 1e-9
    # Once a 2xx arrived, nothing more was sent.
    for status in script.delivered[:-1]:
        assert status is None or not 200 <= status < 300
    # One idempotency key for the whole call.
    assert len({r.headers["idempotency-key"] for r in script.requests}) == 1


@settings(max_examples=300, deadline=None)
@given(
    policy=policies,
    attempts=st.integers(1, 10),
    time_left=st.floats(-1, 100),
    asked=st.one_of(st.none(), st.floats(0, 200)),
    draw=st.floats(0, 1),
)
def test_plan_delay_never_breaks_the_policy(policy, attempts, time_left, asked, draw) -> None:
    error: APIError
    if asked is None:
        error = APIConnectionError("x")
        error.retryable = True
    else:
        error = RateLimitError(
            "x",
            status_code=429,
            body="",
            request_id=None,
            headers={},
            retry_after=asked,
        )
        error.retryable = True
    # The backoff schedule as the call flow uses it: one delay drawn per retry so far.
    delays = backoff_delays(policy, lambda low, high: low + (high - low) * draw)
    for _ in range(attempts - 1):
        next(delays)
    delay, why_not = plan_delay(
        policy, error, attempts=attempts, time_left=time_left, jittered=lambda: next(delays)
    )
    if delay is None:
        assert why_not  # a retryable failure that is not retried always says why
        return
    assert why_not is None
    assert attempts < policy.max_attempts
    # The attempt it leads to has at least min_attempt_time left to hear its answer.
    assert 0 <= delay <= time_left - policy.min_attempt_time
    if asked is not None and policy.respect_retry_after:
        assert delay == asked <= policy.max_retry_after
    else:
        assert delay <= min(policy.max_delay, policy.initial_delay * 2 ** (attempts - 1))


def test_plan_delay_gives_up_on_what_is_not_retryable() -> None:
    policy = RetryPolicy()
    not_retryable = InternalServerError("x", status_code=501, body="", request_id=None, headers={})
    never = _never_drawn
    assert plan_delay(policy, not_retryable, attempts=1, time_left=30, jittered=never) == (
        None,
        None,
    )
    assert plan_delay(policy, ValueError("bug"), attempts=1, time_left=30, jittered=never) == (
        None,
        None,
    )
    retryable = APIConnectionError("x")
    retryable.retryable = True
    many = RetryPolicy(max_attempts=5000, max_delay=1.0)
    delays = backoff_delays(many, max)
    for _ in range(3999):
        next(delays)
    big, _ = plan_delay(many, retryable, attempts=4000, time_left=30, jittered=lambda: next(delays))
    assert big == 1.0  # no overflow however many attempts


def _never_drawn() -> float:
    raise AssertionError("no delay is drawn for a failure that is not retried")
