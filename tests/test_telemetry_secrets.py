"""The telemetry secret scan: every span, event, status, resource and metric the SDK exports,
across every fault of the fake and a server that echoes the secrets back, on all three
transports, holds neither the API key nor the LiveKit token (nor a piece of either).

Real loopback sockets (the fake Avatario, and `tests/loopback.py` for the echoing server), the
real OpenTelemetry SDK exporting in memory; trace propagation is on, so that path is scanned
too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from avatario_wrapper import (
    AsyncAvatarioClient,
    AvatarioClient,
    AvatarioError,
    RetryPolicy,
    _telemetry,
)
from avatario_wrapper.telemetry import set_trace_propagation
from avatario_wrapper.testing import run_fake_server

from .conftest import REAL_KINDS
from .loopback import loopback
from .test_telemetry import Recorded

pytestmark = pytest.mark.integration

MARK = "LEAKCANARY"
KEY = f"sk_live_{MARK}_KEY_3f9a1c"
TOKEN = f"eyJhbGciOiJIUzI1NiJ9.{MARK}_TOKEN.c2ln"
CALL = {
    "avatar_id": "face_1",
    "agent_identity": "agent-7",
    "livekit_url": "wss://rooms.example.com",
    "livekit_token": TOKEN,
}
#: Short waits: retries come at once, a stall ends at the attempt's timeout, a Retry-After
#: longer than max_retry_after ends the call at once, and a ride-out lasts half a second (then
#: the budget alone decides, so its refusal is seen too).
POLICY = RetryPolicy(
    max_attempts=2,
    initial_delay=0.01,
    max_delay=0.02,
    max_retry_after=0.5,
    min_attempt_time=0.05,
    ride_out=0.5,
)
TIMEOUT = 0.4

#: Every fault of the fake (faults.py): each status family, stall, reset, lost, lost-close,
#: idle-close (the second request on a kept-alive connection), malformed, and each form of
#: Retry-After (seconds, milliseconds, an HTTP-date too far ahead).
FAULTS: list[tuple[str, int]] = [
    ("", 1),
    *[(str(status), 1) for status in (400, 401, 403, 404, 409, 422, 429, 500, 502, 503, 504)],
    ("503*2", 1),
    ("stall", 1),
    ("reset", 1),
    ("reset*2", 1),
    ("lost", 1),
    ("lost-close", 1),
    ("ok,idle-close", 2),
    ("malformed", 1),
    ("429:retry-after=0", 1),
    ("503:retry-after-ms=10", 1),
    ("503:retry-after=date+5", 1),
]


def _echo(status: int, reason: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {reason}", f"Content-Length: {len(body)}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


#: A server that echoes the key and the token everywhere it can: reason phrase, request id,
#: Retry-After, other headers, the JSON error message, the session id, a body that is not JSON.
ECHOES = [
    _echo(
        503,
        f"Unavailable {TOKEN}",
        f'{{"message": "bad key {KEY} for {TOKEN}"}}'.encode(),
        {"x-request-id": f"{KEY}", "retry-after": KEY, "x-debug": TOKEN},
    ),
    _echo(
        200,
        "OK",
        f'{{"session_id": "{KEY}-{TOKEN}", "echo": "{TOKEN}"}}'.encode(),
        {"x-request-id": TOKEN, "content-type": "application/json"},
    ),
    _echo(500, KEY, f"<html>{KEY}{TOKEN}</html>".encode(), {"x-request-id": f"r-{TOKEN}"}),
    _echo(200, "OK", f"not json {KEY} {TOKEN}".encode(), {"x-request-id": KEY}),
    _echo(429, "Slow down", f'{{"error": "{TOKEN}"}}'.encode(), {"retry-after-ms": TOKEN}),
]


@pytest.fixture
def recorded() -> Iterator[Recorded]:
    recorded = Recorded()
    _telemetry.set_providers(recorded.tracer_provider, recorded.meter_provider)
    set_trace_propagation(True)
    try:
        yield recorded
    finally:
        _telemetry.set_providers(None, None)
        set_trace_propagation(None)
        recorded.tracer_provider.shutdown()
        recorded.meter_provider.shutdown()


def _calls(kind: str, base_url: str, count: int, *, warm_up: bool = False) -> list[str]:
    """`count` start_session calls (and a warm_up) on one client of `kind`; their outcomes."""
    options: dict[str, Any] = {"base_url": base_url, "retry": POLICY, "timeout": TIMEOUT}
    outcomes: list[str] = []

    def keep(outcome: Any) -> None:
        outcomes.append(type(outcome).__name__)

    if kind == "sync":
        with AvatarioClient(KEY, **options) as client:
            if warm_up:
                client.warm_up()
            for _ in range(count):
                try:
                    keep(client.start_session(**CALL))
                except AvatarioError as error:
                    keep(error)
        return outcomes

    async def main() -> None:
        async def on(client: AsyncAvatarioClient) -> None:
            if warm_up:
                await client.warm_up()
            for _ in range(count):
                try:
                    keep(await client.start_session(**CALL))
                except AvatarioError as error:
                    keep(error)

        if kind == "async-httpx":
            async with httpx.AsyncClient() as http:
                async with AsyncAvatarioClient(KEY, http_client=http, **options) as client:
                    await on(client)
        else:
            async with AsyncAvatarioClient(KEY, **options) as client:
                await on(client)

    asyncio.run(main())
    return outcomes


def everything(recorded: Recorded) -> list[str]:
    """Every piece of text the SDK would export, spans and metrics, as strings."""
    texts: list[str] = []
    for span in recorded.exporter.get_finished_spans():
        texts += [span.name, str(span.status.description), span.to_json()]
        texts += [f"{k}={v!r}" for k, v in (span.attributes or {}).items()]
        texts += [repr(dict(span.resource.attributes))]
        for event in span.events:
            texts += [event.name, repr(dict(event.attributes or {}))]
        for link in span.links:
            texts += [repr(dict(link.attributes or {}))]
    data = recorded.reader.get_metrics_data()
    assert data is not None
    texts.append(data.to_json())
    for resource in data.resource_metrics:
        texts.append(repr(dict(resource.resource.attributes)))
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                texts += [metric.name, metric.description, metric.unit]
                texts += [repr(dict(p.attributes)) for p in metric.data.data_points]
    return texts


@pytest.mark.parametrize("kind", REAL_KINDS)
def test_no_secret_in_any_telemetry_of_any_fault(kind: str, recorded: Recorded) -> None:
    outcomes: list[str] = []
    with run_fake_server(api_key=KEY) as server:
        for faults, count in FAULTS:
            server.add_faults(faults)
            outcomes += _calls(kind, server.url, count, warm_up=faults == "")
        # Enough failing calls on one client to spend the retry budget.
        server.add_faults("503*40")
        outcomes += _calls(kind, server.url, 20)
    with loopback(*ECHOES) as echo:
        outcomes += _calls(kind, echo.url, len(ECHOES) + 2)
    # The scan saw every kind of ending.
    assert {"StartSessionResult", "InternalServerError", "APIConnectionError"} <= set(outcomes)
    assert {"APITimeoutError", "APIResponseValidationError", "RateLimitError"} <= set(outcomes)
    names = {s.name for s in recorded.exporter.get_finished_spans()}
    assert names == {"avatario.start_session", "avatario.warm_up", "POST", "HEAD"}
    events = {e.name for s in recorded.exporter.get_finished_spans() for e in s.events}
    assert events == {"avatario.backoff", "avatario.retry_budget.refused", "avatario.ride_out"}
    texts = everything(recorded)
    assert sum(KEY in t or TOKEN in t or MARK in t for t in texts) == 0
    # The server's echoes did reach telemetry, redacted.
    assert any("[redacted]" in t for t in texts)
