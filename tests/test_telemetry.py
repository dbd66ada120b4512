"""OpenTelemetry spans and metrics of calls and attempts, exported in memory by the real SDK.

Spans go to an SDK `TracerProvider` with an `InMemorySpanExporter`, metrics to an SDK
`MeterProvider` with an `InMemoryMetricReader`; both are handed to the package with
`_telemetry.set_providers` (the process-wide providers can be set only once per process:
the global path is tested in subprocesses, in test_telemetry_cost.py). Calls go through an
`httpx.MockTransport` script on a `FakeClock` (the `run` fixture: both clients), except where
a real loopback socket is the point (warm_up, LiveKit).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from opentelemetry import baggage, context, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from avatario_wrapper import (
    APIConnectionError,
    APIError,
    AsyncAvatarioClient,
    AvatarioClient,
    InternalServerError,
    RetryPolicy,
    StartSessionResult,
    _telemetry,
)
from avatario_wrapper.telemetry import (
    TRACE_PROPAGATION_ENV,
    set_enabled,
    set_trace_propagation,
    trace_propagation,
)
from avatario_wrapper.testing import FakeClock

from .conftest import API_KEY, BASE_URL, CALL, Script, error, ok

Runner = Callable[..., Any]


class Recorded:
    """What the SDK exported: finished spans and collected metrics."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def spans(self) -> list[ReadableSpan]:
        return sorted(self.exporter.get_finished_spans(), key=lambda s: s.start_time or 0)

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.name == name]

    def call(self, name: str = "avatario.start_session") -> ReadableSpan:
        [span] = self.named(name)
        return span

    def children(self, parent: ReadableSpan) -> list[ReadableSpan]:
        return [
            s
            for s in self.spans()
            if s.parent is not None and s.parent.span_id == parent.context.span_id
        ]

    def metrics(self) -> dict[str, Any]:
        """Metric name -> the metric (its unit, description and data points)."""
        data = self.reader.get_metrics_data()
        found: dict[str, Any] = {}
        if data is None:
            return found
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    found[metric.name] = metric
        return found

    def points(self, name: str) -> list[Any]:
        metric = self.metrics().get(name)
        return [] if metric is None else list(metric.data.data_points)


@pytest.fixture
def otel() -> Iterator[Recorded]:
    recorded = Recorded()
    before = _telemetry.set_providers(recorded.tracer_provider, recorded.meter_provider)
    assert before is None
    try:
        yield recorded
    finally:
        _telemetry.set_providers(None, None)
        set_trace_propagation(None)
        set_enabled(True)
        recorded.tracer_provider.shutdown()
        recorded.meter_provider.shutdown()


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


# -- one call: the span tree ------------------------------------------------------------------


def test_a_call_that_recovers_from_two_503s_is_one_span_with_an_attempt_span_each(
    otel: Recorded, run: Runner, clock: FakeClock
) -> None:
    script = Script(
        error(503, {"x-request-id": "req-a"}), error(503, {"x-request-id": "req-b"}), ok()
    )
    result = run(script, clock)
    assert result.attempts == 3
    call = otel.call()
    assert call.kind is SpanKind.INTERNAL
    assert call.parent is None
    assert call.status.status_code is StatusCode.UNSET
    assert attrs(call) == {
        "avatario.operation": "start_session",
        "avatario.idempotency_key": result.idempotency_key,
        "avatario.attempts": 3,
        "avatario.outcome": "started",
        "avatario.request_ids": ("req-a", "req-b", "r"),
        "avatario.session_id": "sess_1",
    }
    attempts = otel.children(call)
    assert [a.name for a in attempts] == ["POST", "POST", "POST"]
    assert all(a.kind is SpanKind.CLIENT for a in attempts)
    assert [a.context.trace_id for a in attempts] == [call.context.trace_id] * 3
    common = {
        "http.request.method": "POST",
        "server.address": "avatario.test",
        "server.port": 443,
        "url.full": f"{BASE_URL}/start-session",
    }
    first, second, third = (attrs(a) for a in attempts)
    assert first == {
        **common,
        "http.response.status_code": 503,
        "error.type": "503",
        "avatario.outcome": "refused",
        "avatario.request_id": "req-a",
    }
    assert second["http.request.resend_count"] == 1
    assert second["avatario.request_id"] == "req-b"
    assert third == {
        **common,
        "http.request.resend_count": 2,
        "http.response.status_code": 200,
        "avatario.request_id": "r",
    }
    assert [a.status.status_code for a in attempts] == [
        StatusCode.ERROR,
        StatusCode.ERROR,
        StatusCode.UNSET,
    ]
    assert (
        attempts[0].status.description
        == "Avatario answered HTTP 503 Service Unavailable: status 503 [request id req-a]"
    )
    # The waits between attempts are events of the call span, with the delays really slept.
    backoffs = [e for e in call.events if e.name == "avatario.backoff"]
    assert [dict(e.attributes or {}) for e in backoffs] == [
        {
            "avatario.attempt": 1,
            "avatario.backoff.delay": clock.sleeps[0],
            "avatario.backoff.from_retry_after": False,
        },
        {
            "avatario.attempt": 2,
            "avatario.backoff.delay": clock.sleeps[1],
            "avatario.backoff.from_retry_after": False,
        },
    ]
    # In time order: attempt, wait, attempt, wait, attempt.
    assert attempts[0].end_time <= backoffs[0].timestamp <= attempts[1].start_time
    assert attempts[1].end_time <= backoffs[1].timestamp <= attempts[2].start_time


def test_a_wait_set_by_retry_after_says_so(otel: Recorded, run: Runner, clock: FakeClock) -> None:
    run(Script(error(429, {"retry-after": "2"}), ok()), clock)
    [event] = otel.call().events
    assert event.name == "avatario.backoff"
    assert dict(event.attributes or {}) == {
        "avatario.attempt": 1,
        "avatario.backoff.delay": 2.0,
        "avatario.backoff.from_retry_after": True,
    }


def test_a_failed_call_has_an_error_status_with_its_one_line_message(
    otel: Recorded, run: Runner, clock: FakeClock
) -> None:
    with pytest.raises(InternalServerError) as caught:
        run(Script(error(503)), clock)
    failure = caught.value
    call = otel.call()
    assert call.status.status_code is StatusCode.ERROR
    assert call.status.description == str(failure)
    assert "not retried: all 3 attempts are used" in str(failure)
    assert attrs(call) == {
        "avatario.operation": "start_session",
        "avatario.idempotency_key": failure.idempotency_key,
        "avatario.attempts": 3,
        "avatario.outcome": "refused",
        "avatario.may_have_started": False,
        "avatario.not_retried_because": failure.not_retried_because,
        "error.type": "503",
    }
    assert len(otel.children(call)) == 3


@pytest.mark.parametrize(
    ("step", "error_type", "outcome", "may_have_started"),
    [
        (error(500), "500", "unknown", True),
        (
            httpx.ConnectError("refused"),
            "avatario_wrapper.errors.APIConnectionError",
            "not_sent",
            False,
        ),
        (httpx.ReadTimeout("slow"), "avatario_wrapper.errors.APITimeoutError", "unknown", True),
        (
            httpx.Response(200, content=b"<html>", headers={"x-request-id": "req-html"}),
            "avatario_wrapper.errors.APIResponseValidationError",
            "started",
            True,
        ),
    ],
    ids=["500", "connect", "read-timeout", "bad-2xx"],
)
def test_error_type_and_outcome_of_each_kind_of_failure(
    otel: Recorded,
    run: Runner,
    clock: FakeClock,
    step: Any,
    error_type: str,
    outcome: str,
    may_have_started: bool,
) -> None:
    policy = RetryPolicy(max_attempts=1)
    with pytest.raises(APIError) as caught:
        run(Script(step), clock, retry=policy)
    call = otel.call()
    [attempt] = otel.children(call)
    assert attrs(call)["error.type"] == attrs(attempt)["error.type"] == error_type
    assert attrs(call)["avatario.outcome"] == attrs(attempt)["avatario.outcome"] == outcome
    assert attrs(call)["avatario.may_have_started"] is may_have_started
    assert attempt.status.status_code is StatusCode.ERROR
    assert attempt.status.description == caught.value.message
    status = getattr(caught.value, "status_code", None)
    assert attrs(attempt).get("http.response.status_code") == status
    if status == 200:
        assert attrs(call)["avatario.request_ids"] == ("req-html",)


def test_the_retry_budget_refusal_is_an_event_and_a_count(otel: Recorded) -> None:
    """A server answering 503 to everything: the budget (20% of calls + a reserve of 3)
    refuses retries; every refusal is an event on its call span and one count. (The budget
    alone, as once the trouble is older than the ride-out window.)"""
    clock = FakeClock(seed=3)
    script = Script(error(503))
    failures: list[APIError] = []
    with (
        httpx.Client(transport=httpx.MockTransport(script)) as http,
        AvatarioClient(
            API_KEY, base_url=BASE_URL, clock=clock, http_client=http, retry=RetryPolicy(ride_out=0)
        ) as client,
    ):
        for _ in range(20):
            with pytest.raises(APIError) as caught:
                client.start_session(**CALL)
            failures.append(caught.value)
    refused = [f for f in failures if "retry budget" in (f.not_retried_because or "")]
    assert refused, "the budget never refused a retry"
    calls = otel.named("avatario.start_session")
    events = [e for span in calls for e in span.events if e.name == "avatario.retry_budget.refused"]
    assert len(events) == len(refused)
    [point] = otel.points("avatario.client.retry_budget.refusals")
    assert point.value == len(refused)
    assert dict(point.attributes) == {"avatario.operation": "start_session"}


# -- metrics ---------------------------------------------------------------------------------


def test_the_metrics_of_a_call_that_recovers(otel: Recorded, run: Runner, clock: FakeClock) -> None:
    run(Script(error(503), error(503), ok()), clock)
    metrics = otel.metrics()
    assert {name: (m.unit, type(m.data).__name__) for name, m in metrics.items()} == {
        "http.client.request.duration": ("s", "Histogram"),
        "avatario.client.call.duration": ("s", "Histogram"),
        "avatario.client.call.attempts": ("{attempt}", "Histogram"),
        "avatario.client.calls": ("{call}", "Sum"),
    }
    server = {"http.request.method": "POST", "server.address": "avatario.test", "server.port": 443}
    by_attrs = {
        tuple(sorted(dict(p.attributes).items())): p
        for p in otel.points("http.client.request.duration")
    }
    failed = {**server, "http.response.status_code": 503, "error.type": "503"}
    served = {**server, "http.response.status_code": 200}
    assert set(by_attrs) == {tuple(sorted(failed.items())), tuple(sorted(served.items()))}
    assert by_attrs[tuple(sorted(failed.items()))].count == 2
    assert by_attrs[tuple(sorted(served.items()))].count == 1
    # The bucket boundaries the HTTP conventions advise.
    assert tuple(by_attrs[tuple(sorted(served.items()))].explicit_bounds) == (
        _telemetry.HTTP_DURATION_BUCKETS
    )
    per_call = {"avatario.operation": "start_session", "avatario.outcome": "started"}
    [duration] = otel.points("avatario.client.call.duration")
    assert dict(duration.attributes) == per_call
    assert duration.count == 1
    [attempts] = otel.points("avatario.client.call.attempts")
    assert (dict(attempts.attributes), attempts.sum, attempts.count) == (per_call, 3, 1)
    [calls] = otel.points("avatario.client.calls")
    assert (dict(calls.attributes), calls.value) == (per_call, 1)


def test_outcomes_are_counted_per_outcome(otel: Recorded, clock: FakeClock) -> None:
    steps = [ok(), error(401), error(500), httpx.ConnectError("no"), ok()]
    with (
        httpx.Client(transport=httpx.MockTransport(Script(*steps))) as http,
        AvatarioClient(
            API_KEY,
            base_url=BASE_URL,
            clock=clock,
            http_client=http,
            retry=RetryPolicy(max_attempts=1),
        ) as client,
    ):
        for _ in steps:
            with contextlib.suppress(APIError):
                client.start_session(**CALL)
    counted = {
        (p.attributes.get("avatario.outcome"), p.attributes.get("error.type")): p.value
        for p in otel.points("avatario.client.calls")
    }
    assert counted == {
        ("started", None): 2,
        ("refused", "401"): 1,
        ("unknown", "500"): 1,
        ("not_sent", "avatario_wrapper.errors.APIConnectionError"): 1,
    }


def test_metrics_alone_and_traces_alone(clock: FakeClock) -> None:
    recorded = Recorded()
    try:
        _telemetry.set_providers(None, recorded.meter_provider)
        _run_sync_ok(clock)
        assert recorded.spans() == []
        assert [p.value for p in recorded.points("avatario.client.calls")] == [1]
        _telemetry.set_providers(recorded.tracer_provider, None)
        _run_sync_ok(clock)
        assert [s.name for s in recorded.spans()] == ["avatario.start_session", "POST"]
        assert [p.value for p in recorded.points("avatario.client.calls")] == [1]  # unchanged
    finally:
        _telemetry.set_providers(None, None)


def _run_sync_ok(clock: FakeClock, **options: Any) -> StartSessionResult:
    script = Script(ok())
    with (
        httpx.Client(transport=httpx.MockTransport(script)) as http,
        AvatarioClient(API_KEY, base_url=BASE_URL, clock=clock, http_client=http, **options) as c,
    ):
        return c.start_session(**CALL)


# -- context: nesting, current span, propagation ------------------------------------------------


def test_spans_nest_under_the_current_span_and_each_attempt_is_current_while_it_runs(
    otel: Recorded, run: Runner, clock: FakeClock
) -> None:
    seen: list[trace.Span] = []

    def step(request: httpx.Request) -> httpx.Response:
        seen.append(trace.get_current_span())
        return ok()

    tracer = otel.tracer_provider.get_tracer("the-agent")
    with tracer.start_as_current_span("agent-turn") as parent:
        run(Script(error(503), step), clock)
        assert trace.get_current_span() is parent  # the call left the context as it found it
    call = otel.call()
    assert call.parent is not None
    assert call.parent.span_id == parent.get_span_context().span_id
    attempts = otel.children(call)
    assert [s.get_span_context().span_id for s in seen] == [attempts[1].context.span_id]


def test_no_traceparent_is_sent_by_default(
    otel: Recorded, run: Runner, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TRACE_PROPAGATION_ENV, raising=False)
    assert trace_propagation() is False
    script = Script(error(503), ok())
    run(script, clock)
    assert [r.headers.get("traceparent") for r in script.requests] == [None, None]


@pytest.mark.parametrize("how", ["function", "environment"])
def test_with_propagation_each_attempt_sends_its_own_span_as_traceparent(
    otel: Recorded, run: Runner, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    if how == "function":
        set_trace_propagation(True)
    else:
        monkeypatch.setenv(TRACE_PROPAGATION_ENV, "1")
    script = Script(error(503), ok())
    token = context.attach(baggage.set_baggage("user.email", "someone@example.com"))
    try:
        run(script, clock)
    finally:
        context.detach(token)
    attempts = otel.children(otel.call())
    expected = [
        f"00-{a.context.trace_id:032x}-{a.context.span_id:016x}-{int(a.context.trace_flags):02x}"
        for a in attempts
    ]
    assert [r.headers.get("traceparent") for r in script.requests] == expected
    assert expected[0] != expected[1]  # one per attempt
    for request in script.requests:  # only traceparent: no tracestate, no baggage
        assert "tracestate" not in request.headers
        assert "baggage" not in request.headers


def test_the_function_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        monkeypatch.setenv(TRACE_PROPAGATION_ENV, "on")
        assert trace_propagation() is True
        set_trace_propagation(False)
        assert trace_propagation() is False
        set_trace_propagation(None)
        monkeypatch.setenv(TRACE_PROPAGATION_ENV, "nonsense")
        assert trace_propagation() is False
    finally:
        set_trace_propagation(None)


# -- warm_up, cancellation, switches, failures inside telemetry --------------------------------


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_warm_up_is_a_span_with_its_head_request(otel: Recorded, kind: str) -> None:
    script = Script(httpx.Response(404))
    if kind == "sync":
        with (
            httpx.Client(transport=httpx.MockTransport(script)) as http,
            AvatarioClient(API_KEY, base_url=BASE_URL, http_client=http) as client,
        ):
            client.warm_up()
    else:

        async def main() -> None:
            async with (
                httpx.AsyncClient(transport=httpx.MockTransport(script)) as http,
                AsyncAvatarioClient(API_KEY, base_url=BASE_URL, http_client=http) as client,
            ):
                await client.warm_up()

        asyncio.run(main())
    call = otel.call("avatario.warm_up")
    [head] = otel.children(call)
    # Any answer will do for a warm-up: a 404 to HEAD / is no error, and there is no outcome.
    assert attrs(call) == {"avatario.operation": "warm_up", "avatario.attempts": 1}
    assert call.status.status_code is head.status.status_code is StatusCode.UNSET
    assert attrs(head)["http.request.method"] == "HEAD"
    assert attrs(head)["http.response.status_code"] == 404
    assert attrs(head)["url.full"] == f"{BASE_URL}/"
    [point] = otel.points("avatario.client.calls")
    assert dict(point.attributes) == {"avatario.operation": "warm_up"}


def test_a_warm_up_that_cannot_connect_is_an_error_span(otel: Recorded) -> None:
    script = Script(httpx.ConnectError("refused"))
    with (
        httpx.Client(transport=httpx.MockTransport(script)) as http,
        AvatarioClient(API_KEY, base_url=BASE_URL, http_client=http) as client,
        pytest.raises(APIConnectionError),
    ):
        client.warm_up()
    call = otel.call("avatario.warm_up")
    assert call.status.status_code is StatusCode.ERROR
    assert attrs(call)["avatario.outcome"] == "not_sent"


def test_a_cancelled_call_ends_its_spans_and_restores_the_context(otel: Recorded) -> None:
    started = asyncio.Event()

    async def main() -> None:
        async def hang(request: httpx.Request) -> httpx.Response:
            started.set()
            await asyncio.sleep(60)
            raise AssertionError("never answered")

        async with (
            httpx.AsyncClient(transport=httpx.MockTransport(hang)) as http,
            AsyncAvatarioClient(API_KEY, base_url=BASE_URL, http_client=http) as client,
        ):
            before = trace.get_current_span()
            task = asyncio.ensure_future(client.start_session(**CALL))
            await started.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert trace.get_current_span() is before

    asyncio.run(main())
    call = otel.call()
    [attempt] = otel.children(call)
    for span in (call, attempt):
        assert span.status.status_code is StatusCode.ERROR
        assert span.status.description == "CancelledError"
        assert attrs(span)["error.type"].endswith("CancelledError")


def test_set_enabled_false_records_nothing(otel: Recorded, clock: FakeClock) -> None:
    set_enabled(False)
    _run_sync_ok(clock)
    assert otel.spans() == []
    assert otel.metrics() == {}
    set_enabled(True)
    _run_sync_ok(clock)
    assert len(otel.spans()) == 2


class BrokenTracer:
    """A tracer and meter whose every method raises: telemetry must not fail the call."""

    def get_tracer(self, *args: Any, **kwargs: Any) -> BrokenTracer:
        return self

    def get_meter(self, *args: Any, **kwargs: Any) -> BrokenTracer:
        return self

    def __getattr__(self, name: str) -> Any:
        def broken(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError(f"broken {name}")

        return broken


def test_a_failure_inside_telemetry_never_fails_the_call(run: Runner, clock: FakeClock) -> None:
    broken = BrokenTracer()
    try:
        _telemetry.set_providers(broken, broken)
        result = run(Script(error(503), ok()), clock)
    finally:
        _telemetry.set_providers(None, None)
    assert result.attempts == 2


def test_half_broken_spans_never_fail_the_call(
    otel: Recorded, run: Runner, clock: FakeClock
) -> None:
    """Spans start but every later step raises (a buggy SDK): the call still succeeds and the
    context is left as it was."""

    class Exploding(trace.NonRecordingSpan):
        def set_attribute(self, key: str, value: Any) -> None:
            raise RuntimeError("boom")

        def set_attributes(self, attributes: Any) -> None:
            raise RuntimeError("boom")

        def add_event(self, *args: Any, **kwargs: Any) -> None:
            raise RuntimeError("boom")

    class Tracer:
        def start_span(self, *args: Any, **kwargs: Any) -> trace.Span:
            return Exploding(trace.INVALID_SPAN_CONTEXT)

    class Provider:
        def get_tracer(self, *args: Any, **kwargs: Any) -> Tracer:
            return Tracer()

    _telemetry.set_providers(Provider(), None)
    before = trace.get_current_span()
    result = run(Script(error(503), ok()), clock)
    assert result.attempts == 2
    assert trace.get_current_span() is before
