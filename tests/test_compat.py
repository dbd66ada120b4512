"""The drop-in AvatarioAPI behaves like the old plugin's class, minus its failures."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import httpx
import pytest

from avatario_wrapper import (
    AvatarioConfigError,
    AvatarioException,
    MissingAgentIdentityError,
    StartSessionResult,
)
from avatario_wrapper._environment import Environment
from avatario_wrapper._transports.httpx import AsyncHttpxTransport
from avatario_wrapper.compat import AvatarioAPI
from avatario_wrapper.testing import run_fake_server

from .conftest import API_KEY, TOKEN, Script, ok

ROOM = {"url": "wss://rooms.example.com", "token": TOKEN}


class APIConnectOptions:  # the shape of livekit.agents.APIConnectOptions
    def __init__(self, max_retry: int = 3, retry_interval: float = 2.0, timeout: float = 10.0):
        self.max_retry = max_retry
        self.retry_interval = retry_interval
        self.timeout = timeout


def _with_script(api: AvatarioAPI, script: Script) -> AvatarioAPI:
    http = httpx.AsyncClient(transport=httpx.MockTransport(script))
    api._client._transport = AsyncHttpxTransport(http, environment=Environment(None, None, None))
    return api


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AVATARIO_BASE_URL", "https://avatario.test/api/sdk")
    monkeypatch.delenv("AVATARIO_AVATAR_ID", raising=False)


def test_the_old_call_sends_the_old_payload_and_returns_the_result() -> None:
    script = Script(ok())

    async def main() -> StartSessionResult:
        api = AvatarioAPI(API_KEY, "face_1", {"video_height": 480, "video_width": 640})
        async with _with_script(api, script) as client:
            return await client.start_session(livekit_agent_identity="agent-7", properties=ROOM)

    result = run(main())
    assert result.session_id == "sess_1"
    [request] = script.requests
    assert str(request.url) == "https://avatario.test/api/sdk/start-session"
    assert json.loads(request.content) == {
        "avatario_face_id": "face_1",
        "agent_id": "agent-7",
        "livekit": ROOM,
        "video_height": 480,
        "video_width": 640,
    }


def test_conn_options_map_onto_the_retry_policy() -> None:
    api = AvatarioAPI(API_KEY, "face_1", conn_options=APIConnectOptions(5, 1.0, 4.0))
    assert api._client.retry.max_attempts == 5
    assert api._client.retry.initial_delay == 1.0
    assert api._client.timeout == 4.0
    run(api.aclose())


def test_a_missing_identity_raises_the_old_exception_type_with_no_request() -> None:
    script = Script(ok())

    async def main() -> None:
        async with _with_script(AvatarioAPI(API_KEY, "face_1"), script) as client:
            await client.start_session(properties=ROOM)

    with pytest.raises(AvatarioException) as caught:
        run(main())
    assert isinstance(caught.value, MissingAgentIdentityError)
    assert caught.value.field == "livekit_agent_identity"
    assert script.requests == []


def test_a_missing_avatar_id_fails_at_once() -> None:
    with pytest.raises(AvatarioConfigError, match="AVATARIO_AVATAR_ID") as caught:
        AvatarioAPI(API_KEY)
    assert caught.value.field == "avatar_id"


def test_the_avatar_id_can_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AVATARIO_AVATAR_ID", "face_env")
    api = AvatarioAPI(API_KEY)
    assert api._avatar_id == "face_env"
    run(api.aclose())


@pytest.mark.parametrize(
    "video_info",
    [{"avatario_face_id": "hijack"}, {"agent_id": "hijack"}, {"video_heigth": 720}],
)
def test_unknown_video_info_keys_are_refused_not_merged(video_info: dict[str, Any]) -> None:
    with pytest.raises(AvatarioConfigError, match="unknown key") as caught:
        AvatarioAPI(API_KEY, "face_1", video_info)
    assert caught.value.field == "video_info"


@pytest.mark.parametrize(
    "properties",
    [None, {}, {"url": "wss://h"}, {"url": "wss://h", "token": "t", "extra": 1}],
)
def test_properties_must_be_exactly_url_and_token(properties: Any) -> None:
    script = Script(ok())

    async def main() -> None:
        async with _with_script(AvatarioAPI(API_KEY, "face_1"), script) as client:
            await client.start_session(livekit_agent_identity="a", properties=properties)

    with pytest.raises(AvatarioConfigError) as caught:
        run(main())
    assert caught.value.field == "properties"
    assert script.requests == []


def test_repr_hides_the_key() -> None:
    api = AvatarioAPI(API_KEY, "face_1")
    assert API_KEY not in repr(api)
    run(api.aclose())


def test_a_given_aiohttp_session_is_used_and_never_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def main() -> tuple[StartSessionResult, bool, bool, int]:
        async with run_fake_server(api_key=API_KEY) as server:
            monkeypatch.setenv("AVATARIO_BASE_URL", server.url)
            async with aiohttp.ClientSession() as shared:
                async with AvatarioAPI(API_KEY, "face_1", session=shared) as given:
                    result = await given.start_session(
                        livekit_agent_identity="agent-7", properties=ROOM
                    )
                given_open = not shared.closed
            own = AvatarioAPI(API_KEY, "face_1")
            await own.aclose()
            return result, given_open, own._client.closed, len(server.requests)

    result, given_open, own_closed, requests = run(main())
    assert result.session_id
    assert given_open  # the caller's session, as with the old class
    assert own_closed  # a pool it opened itself is closed by aclose()
    assert requests == 1
