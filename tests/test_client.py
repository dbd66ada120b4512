"""The clients over httpx.MockTransport: statuses, errors, retries, deadline, secrets.

Every test runs on both the sync and the async client (the `run` fixture) with a FakeClock,
so no test really sleeps.
"""

from __future__ import annotations

import email.utils
import json
import logging
import uuid

import httpx
import pytest

from avatario_wrapper import (
    APIConnectionError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    AvatarioConfigError,
    AvatarioError,
    BadRequestError,
    ConflictError,
    InternalServerError,
    MissingAgentIdentityError,
    NotFoundError,
    Outcome,
    PermissionDeniedError,
    RateLimitError,
    RetryPolicy,
    UnprocessableEntityError,
    VideoOptions,
)
from avatario_wrapper.testing import FakeClock

from .conftest import API_KEY, BASE_URL, TOKEN, Script, error, ok


def test_success_returns_the_result_and_sends_one_well_formed_request(run, clock) -> None:
    script = Script(ok(status="starting"))
    result = run(script, clock)

    assert result.session_id == "sess_1"
    assert result.data == {"session_id": "sess_1", "status": "starting"}
    assert result.request_id == "r"
    assert result.attempts == 1
    assert result.status_code == 200
    [request] = script.requests
    assert request.method == "POST"
    assert str(request.url) == f"{BASE_URL}/start-session"
    assert request.headers["x-api-key"] == API_KEY
    assert request.headers["content-type"] == "application/json"
    assert "authorization" not in request.headers
    assert uuid.UUID(request.headers["idempotency-key"]).version == 4
    assert json.loads(request.content) == {
        "avatario_face_id": "face_4f1c2a",
        "agent_id": "agent-7",
        "livekit": {"url": "wss://rooms.example.com", "token": TOKEN},
        "video_height": 720,
        "video_width": 1280,
    }
    assert clock.sleeps == []


def test_video_options_and_idempotency_key_are_sent(run, clock) -> None:
    script = Script(ok())
    video = VideoOptions(height=1080, width=1920, background_url="https://cdn.example.com/b.png")
    run(script, clock, video=video, idempotency_key="my-key-1")

    [request] = script.requests
    body = json.loads(request.content)
    assert (body["video_height"], body["video_width"]) == (1080, 1920)
    assert body["custom_background_url"] == "https://cdn.example.com/b.png"
    assert request.headers["idempotency-key"] == "my-key-1"


@pytest.mark.parametrize(
    ("status", "cls", "retried"),
    [
        (400, BadRequestError, False),
        (401, AuthenticationError, False),
        (403, PermissionDeniedError, False),
        (404, NotFoundError, False),
        (409, ConflictError, False),
        (422, UnprocessableEntityError, False),
        (429, RateLimitError, True),
        (408, APIStatusError, True),
        (418, APIStatusError, False),
        (302, APIStatusError, False),
        (500, InternalServerError, False),
        (501, InternalServerError, False),
        (502, InternalServerError, False),
        (503, InternalServerError, True),
        (504, InternalServerError, False),
        (599, InternalServerError, False),
    ],
)
def test_each_status_maps_to_its_class_and_retry_rule(run, clock, status, cls, retried) -> None:
    script = Script(error(status, headers={"x-request-id": "req-9"}))
    with pytest.raises(cls) as caught:
        run(script, clock)

    err = caught.value
    assert type(err) is cls
    assert err.status_code == status
    assert err.request_id == "req-9"
    assert err.retryable is retried
    assert json.loads(err.body)["message"] == f"status {status}"
    assert err.headers["x-request-id"] == "req-9"
    assert len(script.requests) == err.attempts == (3 if retried else 1)
    assert f"HTTP {status}" in str(err)
    assert "req-9" in str(err)
    assert err.may_have_started is (status >= 500 and status != 503)
    assert err.idempotency_key == script.requests[0].headers["idempotency-key"]


@pytest.mark.parametrize("status", [500, 502, 504])
def test_unknown_outcome_statuses_are_retried_only_when_the_policy_says_so(
    run, clock, status
) -> None:
    script = Script(error(status), ok())
    with pytest.raises(InternalServerError) as caught:
        run(script, clock)
    assert caught.value.outcome is Outcome.UNKNOWN
    assert caught.value.may_have_started is True
    assert len(script.requests) == 1

    script = Script(error(status), ok())
    result = run(script, clock, RetryPolicy(retry_unknown_outcome=True))
    assert result.attempts == 2
    keys = {r.headers["idempotency-key"] for r in script.requests}
    assert keys == {result.idempotency_key}


def test_a_recovered_call_reports_its_attempts(run, clock) -> None:
    script = Script(error(503), error(429), ok())
    result = run(script, clock)
    assert result.attempts == 3
    assert len(clock.sleeps) == 2


@pytest.mark.parametrize(
    "body",
    [b"<html>ok</html>", b"[1, 2]", b'"text"', b"", b'{"session_id": 42}', b"{" * 100_000],
)
def test_a_2xx_with_a_bad_body_is_a_validation_error_and_never_resent(run, clock, body) -> None:
    script = Script(httpx.Response(200, content=body))
    with pytest.raises(APIResponseValidationError) as caught:
        run(script, clock)
    assert len(script.requests) == 1
    assert caught.value.attempts == 1
    assert caught.value.retryable is False
    assert "not sent again" in str(caught.value)


def test_a_2xx_other_than_200_with_an_object_is_a_success(run, clock) -> None:
    script = Script(httpx.Response(201, json={"whatever": True}))
    result = run(script, clock)
    assert result.status_code == 201
    assert result.session_id is None
    assert result.data == {"whatever": True}


def test_a_success_body_over_one_mib_is_refused_without_a_resend(run, clock) -> None:
    big = json.dumps({"session_id": "s", "pad": "x" * (2 * 1024 * 1024)}).encode()
    script = Script(httpx.Response(200, content=big))
    with pytest.raises(APIResponseValidationError, match="larger than"):
        run(script, clock)
    assert len(script.requests) == 1


def test_error_bodies_are_bounded(run, clock) -> None:
    script = Script(httpx.Response(400, content=b"e" * 5_000_000))
    with pytest.raises(BadRequestError) as caught:
        run(script, clock)
    assert caught.value.body == "e" * 4096


def test_an_html_502_from_a_proxy_is_an_internal_server_error(run, clock) -> None:
    page = httpx.Response(502, content=b"<html><body>Bad gateway</body></html>")
    script = Script(page, page, ok())
    assert run(script, clock, RetryPolicy(retry_unknown_outcome=True)).attempts == 3


@pytest.mark.parametrize(
    ("exc", "cls", "outcome"),
    [
        (httpx.ConnectError("[Errno 111] Connection refused"), APIConnectionError, "not_sent"),
        (httpx.ReadError("connection reset by peer"), APIConnectionError, "unknown"),
        (httpx.RemoteProtocolError("server disconnected"), APIConnectionError, "unknown"),
        (httpx.ConnectTimeout("timed out"), APITimeoutError, "not_sent"),
        (httpx.PoolTimeout("timed out"), APITimeoutError, "not_sent"),
        (httpx.ReadTimeout("timed out"), APITimeoutError, "unknown"),
    ],
)
def test_transport_errors_are_mapped_classified_and_keep_their_cause(
    run, clock, exc, cls, outcome
) -> None:
    # A mock transport has no socket to watch: the exception's type alone classifies it.
    script = Script(exc)
    with pytest.raises(cls) as caught:
        run(script, clock)
    assert type(caught.value) is cls
    # The cause is httpx's error as it was, but for the request it held (its body holds the
    # LiveKit token), and it is the only exception chained.
    cause = caught.value.__cause__
    assert type(cause) is type(exc)
    assert str(cause) == str(exc)
    with pytest.raises(RuntimeError):
        cause.request  # noqa: B018 - httpx raises when no request is attached
    assert caught.value.__context__ is None
    assert caught.value.outcome.value == outcome
    retried = outcome == "not_sent"
    assert caught.value.attempts == len(script.requests) == (3 if retried else 1)
    assert caught.value.retryable is retried
    assert caught.value.may_have_started is not retried
    assert type(exc).__name__ in str(caught.value)

    script = Script(exc)
    with pytest.raises(cls):
        run(script, clock, RetryPolicy(retry_unknown_outcome=True))
    assert len(script.requests) == 3


def test_a_transport_error_then_success_recovers(run, clock) -> None:
    script = Script(httpx.ConnectError("refused"), ok())
    assert run(script, clock).attempts == 2


def test_other_exceptions_propagate_unchanged_and_are_not_retried(run, clock) -> None:
    bug = RuntimeError("a bug in a transport")
    script = Script(bug)
    with pytest.raises(RuntimeError) as caught:
        run(script, clock)
    assert caught.value is bug
    assert len(script.requests) == 1


def test_full_jitter_stays_under_the_exponential_ceiling(run) -> None:
    clock = FakeClock(seed=3)
    policy = RetryPolicy(
        max_attempts=6, initial_delay=0.5, max_delay=2.0, max_elapsed=1000, retry_budget=None
    )
    with pytest.raises(InternalServerError):
        run(Script(error(503)), clock, policy)
    assert len(clock.sleeps) == 5
    for n, slept in enumerate(clock.sleeps, start=1):
        assert 0 <= slept <= min(2.0, 0.5 * 2 ** (n - 1))
    assert len(set(clock.sleeps)) == 5  # jittered, not fixed


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "3"}, 3.0),
        ({"Retry-After": "0"}, 0.0),
        ({"Retry-After": "1.5"}, 1.5),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after-ms": "250", "Retry-After": "9"}, 0.25),
    ],
)
def test_retry_after_is_waited_exactly_without_jitter(run, clock, headers, expected) -> None:
    script = Script(error(429, headers=headers), ok())
    assert run(script, clock).attempts == 2
    assert clock.sleeps == [expected]


def test_retry_after_as_an_http_date(run, clock) -> None:
    when = email.utils.formatdate(clock.time() + 4, usegmt=True)
    script = Script(error(503, headers={"Retry-After": when}), ok())
    run(script, clock)
    [slept] = clock.sleeps
    assert 3.0 <= slept <= 4.0  # HTTP-dates have whole seconds


def test_a_retry_after_date_in_the_past_means_now(run, clock) -> None:
    when = email.utils.formatdate(clock.time() - 60, usegmt=True)
    script = Script(error(429, headers={"Retry-After": when}), ok())
    run(script, clock)
    assert clock.sleeps == [0.0]


@pytest.mark.parametrize("skew", [3600, -3600, 0])
def test_a_retry_after_date_counts_from_the_responses_date(run, clock, skew) -> None:
    their_now = clock.time() + skew
    headers = {
        "Date": email.utils.formatdate(their_now, usegmt=True),
        "Retry-After": email.utils.formatdate(their_now + 2, usegmt=True),
    }
    run(Script(error(503, headers=headers), ok()), clock)
    assert clock.sleeps == [2.0]


def test_a_retry_after_date_before_the_responses_date_means_now(run, clock) -> None:
    headers = {
        "Date": email.utils.formatdate(clock.time() + 3600, usegmt=True),
        "Retry-After": email.utils.formatdate(clock.time() + 3590, usegmt=True),
    }
    run(Script(error(429, headers=headers), ok()), clock)
    assert clock.sleeps == [0.0]


@pytest.mark.parametrize("date", ["yesterday", "Mon, 99 Foo 2020", "Sun, 06 Nov 1994 08:49:37"])
def test_an_unreadable_date_leaves_the_local_clock_to_measure(run, clock, date) -> None:
    when = email.utils.formatdate(clock.time() + 4, usegmt=True)
    run(Script(error(503, headers={"Date": date, "Retry-After": when}), ok()), clock)
    [slept] = clock.sleeps
    assert 3.0 <= slept <= 4.0  # as with no Date at all


def test_a_skewed_date_does_not_lift_max_retry_after(run, clock) -> None:
    headers = {
        "Date": email.utils.formatdate(clock.time() - 3600, usegmt=True),
        "Retry-After": email.utils.formatdate(clock.time() - 3600 + 120, usegmt=True),
    }
    script = Script(error(429, headers=headers), ok())
    with pytest.raises(RateLimitError) as caught:
        run(script, clock)
    assert caught.value.retry_after == 120.0
    assert len(script.requests) == 1


@pytest.mark.parametrize("value", ["soon", "-5", "nan", "inf", "", "Mon, 99 Foo 2020"])
def test_garbage_retry_after_falls_back_to_backoff(run, clock, value) -> None:
    script = Script(error(429, headers={"Retry-After": value}), ok())
    run(script, clock)
    [slept] = clock.sleeps
    assert 0 <= slept <= 0.5


def test_retry_after_beyond_max_retry_after_fails_at_once(run, clock) -> None:
    script = Script(error(429, headers={"Retry-After": "120"}), ok())
    with pytest.raises(RateLimitError) as caught:
        run(script, clock)
    assert caught.value.retry_after == 120.0
    assert len(script.requests) == 1
    assert clock.sleeps == []


def test_retry_after_beyond_the_deadline_fails_at_once(run, clock) -> None:
    policy = RetryPolicy(max_elapsed=10.0)
    script = Script(error(503, headers={"Retry-After": "11"}), ok())
    with pytest.raises(InternalServerError) as caught:
        run(script, clock, policy)
    assert caught.value.retry_after == 11.0
    assert clock.sleeps == []
    assert clock.now < 10.0


def test_retry_after_can_be_ignored(run, clock) -> None:
    policy = RetryPolicy(respect_retry_after=False)
    script = Script(error(429, headers={"Retry-After": "30"}), ok())
    run(script, clock, policy)
    [slept] = clock.sleeps
    assert slept <= 0.5


def test_each_attempt_timeout_is_cut_to_the_time_left(run) -> None:
    clock = FakeClock(seed=1)
    policy = RetryPolicy(max_attempts=10, initial_delay=0.5, max_delay=0.5, max_elapsed=12.0)
    script = Script(error(503), clock=clock, took=5.0)
    with pytest.raises(InternalServerError) as caught:
        run(script, clock, policy, client_options={"timeout": 10.0})

    assert 1 < caught.value.attempts == len(script.requests) < 10
    for k, request in enumerate(script.requests):
        elapsed_before = 5.0 * k + sum(clock.sleeps[:k])
        expected = min(10.0, 12.0 - elapsed_before)
        assert request.extensions["timeout"]["read"] == pytest.approx(expected)
        # Connecting has its own, shorter bound (connect_timeout, 1 s by default).
        assert request.extensions["timeout"]["connect"] == pytest.approx(min(1.0, expected))


def test_no_retry_when_the_deadline_is_used_up(run) -> None:
    clock = FakeClock()
    policy = RetryPolicy(max_elapsed=5.0)
    script = Script(error(503), clock=clock, took=5.0)
    with pytest.raises(InternalServerError) as caught:
        run(script, clock, policy)
    assert caught.value.attempts == 1
    assert clock.sleeps == []


def test_one_idempotency_key_on_every_attempt(run, clock) -> None:
    script = Script(error(503), httpx.ConnectError("reset"), ok())
    run(script, clock)
    keys = {r.headers["idempotency-key"] for r in script.requests}
    assert len(script.requests) == 3
    assert len(keys) == 1


def test_each_call_gets_its_own_idempotency_key(clock) -> None:
    from avatario_wrapper import AvatarioClient

    from .conftest import CALL

    script = Script(ok())
    with AvatarioClient(
        API_KEY, base_url=BASE_URL, http_client=httpx.Client(transport=httpx.MockTransport(script))
    ) as client:
        client.start_session(**CALL)
        client.start_session(**CALL)
    first, second = (r.headers["idempotency-key"] for r in script.requests)
    assert first != second


def test_each_retry_logs_one_warning_without_secrets(run, clock, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    script = Script(
        error(503, headers={"x-request-id": "req-a"}), httpx.ConnectError("refused"), ok()
    )
    run(script, clock)

    warnings = [r for r in caplog.records if r.name == "avatario_wrapper"]
    assert [r.levelno for r in warnings] == [logging.WARNING, logging.WARNING]
    first, second = (r.getMessage() for r in warnings)
    assert "attempt 1/3" in first
    assert "HTTP 503" in first
    assert "req-a" in first
    assert f"retrying in {clock.sleeps[0]:.2f}s" in first
    assert "attempt 2/3" in second
    assert "ConnectError" in second
    assert warnings[0].avatario_delay == clock.sleeps[0]
    for record in caplog.records:
        assert API_KEY not in record.getMessage()
        assert TOKEN not in record.getMessage()


def test_secrets_echoed_by_the_server_are_redacted_from_errors(run, clock) -> None:
    echo = httpx.Response(400, json={"message": f"bad token {TOKEN} for key {API_KEY}"})
    with pytest.raises(BadRequestError) as caught:
        run(Script(echo), clock)
    text = f"{caught.value} {caught.value!r} {caught.value.body}"
    assert TOKEN not in text
    assert API_KEY not in text
    assert "[redacted]" in caught.value.body


@pytest.mark.parametrize("identity", [None, "", "   ", "\t\n"])
def test_a_missing_agent_identity_is_refused_before_any_request(run, clock, identity) -> None:
    script = Script(ok())
    with pytest.raises(MissingAgentIdentityError) as caught:
        run(script, clock, agent_identity=identity)
    assert script.requests == []
    assert caught.value.field == "agent_identity"
    assert isinstance(caught.value, AvatarioConfigError)
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, AvatarioError)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"avatar_id": None}, "avatar_id"),
        ({"avatar_id": ""}, "avatar_id"),
        ({"avatar_id": "  "}, "avatar_id"),
        ({"avatar_id": "face\x00"}, "avatar_id"),
        ({"avatar_id": "f" * 257}, "avatar_id"),
        ({"agent_identity": "agent\n7"}, "agent_identity"),
        ({"livekit_url": "ftp://rooms.example.com"}, "livekit_url"),
        ({"livekit_url": "rooms.example.com"}, "livekit_url"),
        ({"livekit_url": "wss://rooms example.com"}, "livekit_url"),
        ({"livekit_url": "wss://"}, "livekit_url"),
        ({"livekit_token": None}, "livekit_token"),
        ({"livekit_url": None}, "livekit_url"),
        ({"livekit_token": ""}, "livekit_token"),
        ({"livekit_token": "has space"}, "livekit_token"),
        ({"livekit_token": "x" * 8193}, "livekit_token"),
        ({"idempotency_key": ""}, "idempotency_key"),
        ({"idempotency_key": "a b"}, "idempotency_key"),
    ],
)
def test_bad_inputs_name_the_field_and_send_nothing(run, clock, overrides, field) -> None:
    script = Script(ok())
    with pytest.raises(AvatarioConfigError) as caught:
        run(script, clock, **overrides)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")
    assert script.requests == []


def test_a_bad_token_is_never_echoed(run, clock) -> None:
    secret = "SECRET with spaces"
    with pytest.raises(AvatarioConfigError) as caught:
        run(Script(ok()), clock, livekit_token=secret)
    assert secret not in str(caught.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"avatar_id": 42}, "avatar_id must be a str"),
        ({"livekit_token": b"bytes"}, "livekit_token must be a str"),
        ({"video": {"height": 720}}, "video must be a VideoOptions"),
    ],
)
def test_wrong_types_are_type_errors_before_any_request(run, clock, overrides, message) -> None:
    script = Script(ok())
    with pytest.raises(TypeError, match=message):
        run(script, clock, **overrides)
    assert script.requests == []


def test_async_cancellation_during_a_retry_sleep_ends_the_call() -> None:
    import asyncio

    from avatario_wrapper import AsyncAvatarioClient

    from .conftest import CALL

    class BlockingClock(FakeClock):
        def __init__(self) -> None:
            super().__init__()
            self.sleeping = asyncio.Event()

        async def asleep(self, seconds: float) -> None:
            self.sleeping.set()
            await asyncio.Event().wait()  # only cancellation ends this

    async def main() -> Script:
        clock = BlockingClock()
        script = Script(error(503))
        async with (
            httpx.AsyncClient(transport=httpx.MockTransport(script)) as http,
            AsyncAvatarioClient(API_KEY, base_url=BASE_URL, clock=clock, http_client=http) as c,
        ):
            task = asyncio.ensure_future(c.start_session(**CALL))
            await clock.sleeping.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        return script

    script = asyncio.run(main())
    assert len(script.requests) == 1
