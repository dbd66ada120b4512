"""The spans of `AvatarSession.start`, and spans following livekit-agents' own tracer provider.

Real livekit-agents (its `AgentSession`, avatar base class and telemetry module), the real
OpenTelemetry SDK exporting in memory, the fake Avatario on 127.0.0.1. Stand-in: the connected
LiveKit room (the testing kit's `StandInRoom`: no LiveKit server can run here), whose avatar
joins when the fake starts a session (`avatars_from`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("livekit.agents")

from livekit.agents import AgentSession
from livekit.agents import telemetry as lk_telemetry
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from avatario_wrapper import AsyncAvatarioClient, AuthenticationError, RetryPolicy, _telemetry
from avatario_wrapper.livekit import AvatarSession
from avatario_wrapper.testing import FakeClock, FakeServer, StandInRoom, run_fake_server

from .test_telemetry import Recorded, attrs

API_KEY = "sk_test_SECRET_KEY_5f2b9c"
LK_KEY = "APIlkKEY123"
LK_SECRET = "lk_SECRET_0123456789abcdef0123456789abcdef"


@pytest.fixture
def otel() -> Iterator[Recorded]:
    """Spans and metrics exported in memory (see test_telemetry.py)."""
    recorded = Recorded()
    _telemetry.set_providers(recorded.tracer_provider, recorded.meter_provider)
    try:
        yield recorded
    finally:
        _telemetry.set_providers(None, None)
        recorded.tracer_provider.shutdown()
        recorded.meter_provider.shutdown()


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AVATARIO_AVATAR_ID", "AVATARIO_API_KEY", "AVATARIO_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LIVEKIT_URL", "wss://rooms.example.com")
    monkeypatch.setenv("LIVEKIT_API_KEY", LK_KEY)
    monkeypatch.setenv("LIVEKIT_API_SECRET", LK_SECRET)


def start(
    monkeypatch: pytest.MonkeyPatch,
    *,
    faults: str = "",
    join: bool = False,
    api_key: str = API_KEY,
) -> tuple[Any, FakeServer]:
    """`AvatarSession.start` against the fake; with `join`, the avatar joins the room once the
    fake starts a session. Returns the result (or the error) and the server."""

    async def main() -> tuple[Any, FakeServer]:
        async with run_fake_server(
            api_key=API_KEY, faults=faults, livekit_api_key=LK_KEY, livekit_api_secret=LK_SECRET
        ) as server:
            monkeypatch.setenv("AVATARIO_BASE_URL", server.url)
            room = StandInRoom("room-42", agent_identity="agent-7")
            avatar = AvatarSession(avatar_id="face_1", api_key=api_key, join_timeout=0.3)
            outcome: Any
            with room.avatars_from(server, join=join):
                try:
                    outcome = await avatar.start(AgentSession(), room=room)
                except Exception as error:
                    outcome = error
                finally:
                    await avatar.aclose()
            return outcome, server

    return asyncio.run(main())


def tree(recorded: Recorded) -> list[tuple[int, str]]:
    """(depth, name) of every span, depth-first in time order."""
    spans = recorded.spans()
    ids = {s.context.span_id for s in spans}
    out: list[tuple[int, str]] = []

    def walk(span: ReadableSpan, depth: int) -> None:
        out.append((depth, span.name))
        for child in recorded.children(span):
            walk(child, depth + 1)

    for span in spans:
        if span.parent is None or span.parent.span_id not in ids:
            walk(span, 0)
    return out


def secrets_in(recorded: Recorded, *secrets: str) -> list[str]:
    found = []
    for span in recorded.spans():
        texts = [span.name, str(span.status.description), repr(dict(span.attributes or {}))]
        texts += [repr((e.name, dict(e.attributes or {}))) for e in span.events]
        found += [t for t in texts for s in secrets if s in t]
    return found


def test_a_start_is_a_span_around_its_call(otel: Recorded, monkeypatch: pytest.MonkeyPatch) -> None:
    result, server = start(monkeypatch)
    assert tree(otel) == [
        (0, "avatario.avatar_session.start"),
        (1, "avatario.start_session"),
        (2, "POST"),
    ]
    span = otel.call("avatario.avatar_session.start")
    assert span.kind is SpanKind.INTERNAL
    assert span.status.status_code is StatusCode.UNSET
    assert attrs(span) == {
        "avatario.avatar_id": "face_1",
        "avatario.attempts": 1,
        "lk.retry_count": 0,
        "avatario.outcome": "started",
        "avatario.settled_by": "http",
        "avatario.idempotency_key": result.idempotency_key,
        "lk.provider_request_ids": (result.request_id, result.session_id),
        "avatario.session_id": result.session_id,
    }
    [request] = server.requests
    token = request.json()["livekit"]["token"]
    assert secrets_in(otel, API_KEY, LK_SECRET, token) == []


def test_a_lost_answer_settled_by_the_room_shows_the_wait(
    otel: Recorded, monkeypatch: pytest.MonkeyPatch
) -> None:
    result, server = start(monkeypatch, faults="lost", join=True)
    assert result.data["settled_by"] == "room_join"
    # The wait for the room is a step of the call, beside its attempt.
    assert tree(otel) == [
        (0, "avatario.avatar_session.start"),
        (1, "avatario.start_session"),
        (2, "POST"),
        (2, "avatario.avatar_join_wait"),
    ]
    wait = otel.call("avatario.avatar_join_wait")
    assert attrs(wait)["avatario.join_wait.result"] == "joined"
    assert attrs(wait)["avatario.join_wait.timeout"] == 0.3
    assert 0 <= attrs(wait)["avatario.join_wait.duration"] < 0.3
    start_span = otel.call("avatario.avatar_session.start")
    assert attrs(start_span)["avatario.settled_by"] == "room_join"
    assert start_span.status.status_code is StatusCode.UNSET
    # The attempt failed; the call, settled by the room, did not.
    call = otel.call("avatario.start_session")
    [attempt, _] = otel.children(call)
    assert attempt.status.status_code is StatusCode.ERROR
    assert call.status.status_code is StatusCode.UNSET
    token = server.requests[0].json()["livekit"]["token"]
    assert secrets_in(otel, API_KEY, LK_SECRET, token) == []


def test_no_join_then_one_resend_is_one_call_of_two_attempts_under_the_start(
    otel: Recorded, monkeypatch: pytest.MonkeyPatch
) -> None:
    result, _ = start(monkeypatch, faults="lost")
    assert result.attempts == 2
    assert tree(otel) == [
        (0, "avatario.avatar_session.start"),
        (1, "avatario.start_session"),
        (2, "POST"),
        (2, "avatario.avatar_join_wait"),
        (2, "POST"),
    ]
    assert attrs(otel.call("avatario.avatar_join_wait"))["avatario.join_wait.result"] == (
        "not_joined"
    )
    start_span = otel.call("avatario.avatar_session.start")
    assert attrs(start_span)["lk.retry_count"] == 1
    assert attrs(start_span)["avatario.settled_by"] == "http"


def test_a_failed_start_is_an_error_span(otel: Recorded, monkeypatch: pytest.MonkeyPatch) -> None:
    error, _ = start(monkeypatch, api_key="wrong-key-0123456789")
    assert isinstance(error, AuthenticationError)
    span = otel.call("avatario.avatar_session.start")
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == str(error)
    assert attrs(span)["error.type"] == "401"
    assert attrs(span)["avatario.outcome"] == "refused"
    assert attrs(span)["lk.provider_request_ids"] == (error.request_id,)


@pytest.fixture
def livekit_provider() -> Iterator[Recorded]:
    """A tracer provider given to livekit-agents only (its `set_tracer_provider`), as a worker
    or LiveKit Cloud does; the process-wide provider stays unset."""
    recorded = Recorded()
    before = lk_telemetry.tracer._tracer_provider
    lk_telemetry.set_tracer_provider(recorded.tracer_provider)
    try:
        yield recorded
    finally:
        lk_telemetry.tracer.set_provider(before)
        recorded.tracer_provider.shutdown()


def test_spans_go_where_livekits_go_and_nest_under_the_agents_span(
    livekit_provider: Recorded, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    with lk_telemetry.tracer.start_as_current_span("agent_session") as agent:
        start(monkeypatch)
    recorded = livekit_provider
    assert tree(recorded) == [
        (0, "agent_session"),
        (1, "avatario.avatar_session.start"),
        (2, "avatario.start_session"),
        (3, "POST"),
    ]
    assert {s.context.trace_id for s in recorded.spans()} == {agent.get_span_context().trace_id}


def test_without_any_provider_a_start_records_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _telemetry.current_tracer() is None
    result, _ = start(monkeypatch)
    assert result.session_id


def test_a_second_avatar_under_the_identity_is_a_warning_and_an_event_on_the_agents_span(
    otel: Recorded, caplog: pytest.LogCaptureFixture
) -> None:
    """The limit of the room's watch, shown: an avatar slower than join_timeout means the
    call is resent with the same key; on a server that ignores it both avatars join, and the
    SDK says so (a WARNING, and an event on the agent's span, as the start's has ended)."""

    async def main() -> tuple[Any, FakeServer]:
        async with run_fake_server(
            api_key=API_KEY,
            faults="lost",
            honour_idempotency_key=False,
            livekit_api_key=LK_KEY,
            livekit_api_secret=LK_SECRET,
        ) as server:
            clock = FakeClock()
            room = StandInRoom("room-42", agent_identity="agent-7", clock=clock)
            tracer = otel.tracer_provider.get_tracer("agent")
            with tracer.start_as_current_span("agent_session"):
                with room.avatars_from(server, join_after=35.0):
                    client = AsyncAvatarioClient(API_KEY, base_url=server.url, clock=clock)
                    async with client:
                        avatar = AvatarSession(
                            avatar_id="face_1", client=client, retry=RetryPolicy(max_elapsed=60)
                        )
                        result = await avatar.start(AgentSession(), room=room)
                        clock.advance(40.0)  # both joins come due: at 35 s and at 30 + 35 s
                        await avatar.aclose()
            return result, server

    result, server = asyncio.run(main())
    assert result.attempts == 2  # the watch (30 s) ended before the first avatar came
    assert len(server.sessions) == 2
    assert "a second Avatario avatar joined room 'room-42'" in caplog.text
    [agent_span] = otel.named("agent_session")
    [event] = [e for e in agent_span.events if e.name == "avatario.second_avatar_joined"]
    assert dict(event.attributes or {}) == {
        "avatario.avatar_identity": "avatario-avatar-agent",
        "avatario.room": "room-42",
    }
