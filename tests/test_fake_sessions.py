"""Session-started listeners: the hook a stand-in LiveKit room uses to make the avatar join."""

from __future__ import annotations

import asyncio
import datetime
import json
import threading
from typing import Any

import httpx
import pytest
from livekit.api import AccessToken, VideoGrants

from avatario_wrapper import AsyncAvatarioClient
from avatario_wrapper.testing import FakeServer, SessionStarted, run_fake_server

pytestmark = pytest.mark.integration

KEY = "sk_fake_sessions_key_0001"
LK_KEY = "APIfakeSessions01"
LK_SECRET = "lk-secret-sessions-0123456789abcdef0123456789"
AGENT = "agent-7"


def mint(*, secret: str = LK_SECRET, room: str = "room-1") -> str:
    """A token minted by LiveKit's own library, as the avatar plugin mints it."""
    return (
        AccessToken(LK_KEY, secret)
        .with_kind("agent")
        .with_identity("avatario-avatar-agent")
        .with_name("Avatar Name")
        .with_grants(VideoGrants(room_join=True, room=room))
        .with_attributes({"lk.publish_on_behalf": AGENT})
        .with_ttl(datetime.timedelta(minutes=10))
        .to_jwt()
    )


def body(token: str) -> dict[str, Any]:
    return {
        "avatario_face_id": "face_1",
        "agent_id": AGENT,
        "livekit": {"url": "wss://rooms.example.com", "token": token},
    }


def start(server: FakeServer, token: str, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/start-session", json=body(token), headers={"x-api-key": KEY, **headers}
    )


def test_a_new_session_is_announced_in_the_server_thread() -> None:
    seen: list[tuple[SessionStarted, str]] = []
    token = mint()
    with run_fake_server(api_key=KEY) as server:
        server.on_session_started(lambda e: seen.append((e, threading.current_thread().name)))
        response = start(server, token, **{"idempotency-key": "k1"})
        start(server, token, **{"idempotency-key": "k1"})  # the same session: not announced
    [(event, thread)] = seen
    assert thread == "fake-avatario"
    assert event.session_id == response.json()["session_id"]
    assert (event.avatar_identity, event.avatar_name, event.room) == (
        "avatario-avatar-agent",
        "Avatar Name",
        "room-1",
    )
    assert event.payload["livekit"]["token"] == "[redacted]"
    assert event.payload["agent_id"] == AGENT
    assert token not in repr(event)
    with pytest.raises(AttributeError):
        event.room = "other"  # type: ignore[misc]


def test_every_session_is_announced_when_the_key_is_ignored() -> None:
    seen: list[SessionStarted] = []
    with run_fake_server(api_key=KEY, honour_idempotency_key=False) as server:
        server.on_session_started(seen.append)
        for _ in range(2):
            start(server, mint(), **{"idempotency-key": "k1"})
    assert len({e.session_id for e in seen}) == 2


def test_a_verifying_fake_announces_verified_claims_only() -> None:
    seen: list[SessionStarted] = []
    with run_fake_server(
        api_key=KEY, livekit_api_key=LK_KEY, livekit_api_secret=LK_SECRET
    ) as server:
        server.on_session_started(seen.append)
        forged = start(server, mint(secret="someone-else-0123456789abcdef0123456789"))
        good = start(server, mint(room="room-2"))
    assert (forged.status_code, good.status_code) == (422, 200)
    assert [e.room for e in seen] == ["room-2"]


def test_a_token_that_is_not_a_jwt_gives_no_claims() -> None:
    seen: list[SessionStarted] = []
    with run_fake_server(api_key=KEY) as server:
        server.on_session_started(seen.append)
        start(server, "not-a-jwt")
        start(server, "a.bm90IGpzb24.c")
    assert [(e.avatar_identity, e.avatar_name, e.room) for e in seen] == [(None, None, None)] * 2


def test_a_lost_response_still_announces_the_session() -> None:
    seen: list[SessionStarted] = []
    with run_fake_server(api_key=KEY, faults="lost") as server:
        server.on_session_started(seen.append)
        with pytest.raises(httpx.TransportError):
            start(server, mint())
    assert [e.session_id for e in seen] == [s["session_id"] for s in server.sessions]


def test_a_listener_that_raises_does_not_break_the_response(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []

    def broken(event: SessionStarted) -> None:
        raise RuntimeError("listener bug")

    with run_fake_server(api_key=KEY) as server:
        server.on_session_started(broken)
        server.on_session_started(lambda e: calls.append(e.session_id))
        response = start(server, mint())
    assert response.status_code == 200
    assert calls == [response.json()["session_id"]]  # the next listener still ran
    [error] = server.app.listener_errors
    assert str(error) == "listener bug"
    assert "a session-started listener raised RuntimeError" in caplog.text


def test_a_listener_can_be_removed() -> None:
    seen: list[SessionStarted] = []
    with run_fake_server(api_key=KEY) as server:
        remove = server.on_session_started(seen.append)
        start(server, mint())
        remove()
        remove()  # twice is harmless
        start(server, mint())
    assert len(seen) == 1
    assert len(server.sessions) == 2


def test_an_async_listener_hops_to_its_own_loop() -> None:
    """What the stand-in LiveKit room does: the fake's thread hands the record to the test's
    loop with call_soon_threadsafe, where the avatar joins."""

    async def main() -> SessionStarted:
        loop = asyncio.get_running_loop()
        joined: asyncio.Queue[SessionStarted] = asyncio.Queue()
        async with run_fake_server(api_key=KEY) as server:
            server.on_session_started(lambda e: loop.call_soon_threadsafe(joined.put_nowait, e))
            async with AsyncAvatarioClient(KEY, base_url=server.url) as client:
                result = await client.start_session(
                    avatar_id="face_1",
                    agent_identity=AGENT,
                    livekit_url="wss://rooms.example.com",
                    livekit_token=mint(room="room-9"),
                )
            event = await asyncio.wait_for(joined.get(), 5)
            assert event.session_id == result.session_id
            return event

    assert asyncio.run(main()).room == "room-9"


def test_sessions_and_records_keep_the_token_out() -> None:
    token = mint()
    with run_fake_server(api_key=KEY) as server:
        server.on_session_started(lambda e: None)
        start(server, token)
    shown = json.dumps(server.sessions) + repr(server.requests) + repr(server.app)
    assert token not in shown
    assert KEY not in shown
