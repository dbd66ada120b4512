"""avatario_wrapper.livekit with the real livekit-agents and livekit-api.

Real: livekit-agents' `AgentSession` (constructed, never run against a server), its avatar
base class, `DataStreamAudioOutput` and `http_context`; livekit-api's `AccessToken` and
`TokenVerifier` (every token here is decoded and checked); an unconnected `rtc.Room`; the fake
Avatario over a real 127.0.0.1 socket.

Stand-in: no LiveKit server can run here, so where a *connected* room is needed (the agent's
identity from its local participant, the avatar joining, the room disconnecting), the testing
kit's public `StandInRoom` plays one (`avatario_wrapper.testing.livekit`, tested on its own in
tests/test_testing_livekit.py): an `rtc.Room` subclass connected without a server, emitting
the events `rtc.Room` emits (``participant_connected``, ``participant_active``,
``track_published``, ``connection_state_changed``); `room.avatars_from(fake)` makes the fake's
avatar join it when the fake starts a session for this room. What the stand-in shows is that
our code reacts to those events; that a real room emits them is livekit's job.
"""

from __future__ import annotations

import asyncio
import datetime
import importlib.util
import inspect
import logging
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

pytest.importorskip("livekit.agents")
pytest.importorskip("livekit.api")

import livekit.agents as lk_agents
from livekit import api, rtc
from livekit.agents import AgentSession, utils
from livekit.agents.voice.avatar import AvatarSession as BaseAvatarSession
from livekit.agents.voice.avatar import DataStreamAudioOutput

import avatario_wrapper.livekit as avatario_livekit
from avatario_wrapper import (
    APIConnectionError,
    APIResponseValidationError,
    AsyncAvatarioClient,
    AuthenticationError,
    AvatarioConfigError,
    AvatarioError,
    RetryPolicy,
    StartSessionResult,
    UnprocessableEntityError,
)
from avatario_wrapper.compat import AvatarioAPI
from avatario_wrapper.livekit import AvatarSession, mint_avatar_token
from avatario_wrapper.testing import FakeServer, StandInRoom, run_fake_server

from .spec_helpers import ROOT

pytestmark = pytest.mark.usefixtures("no_agent_env")

API_KEY = "sk_test_SECRET_KEY_5f2b9c"
LK_KEY = "APIlkKEY123"
LK_SECRET = "lk_SECRET_0123456789abcdef0123456789abcdef"  # HS256 wants >= 32 bytes
LK_URL = "wss://rooms.example.com"
ROOM_NAME = "room-42"
AGENT = "agent-7"
AVATAR = "avatario-avatar-agent"
FAST = 0.05  # join_timeout in tests: no real multi-second waits


# -- the stand-in connected room (the testing kit's) -------------------------------------------


def new_room() -> StandInRoom:
    """A connected stand-in room with the agent in it; made inside the test's event loop."""
    return StandInRoom(ROOM_NAME, agent_identity=AGENT)


def avatar_joins(room: StandInRoom) -> None:
    """Play an avatar that is already in the room (it joined before the answer was read)."""
    room.add_participant(
        AVATAR, kind=rtc.ParticipantKind.PARTICIPANT_KIND_AGENT, tracks=[rtc.TrackKind.KIND_VIDEO]
    )


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def lk_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVEKIT_URL", LK_URL)
    monkeypatch.setenv("LIVEKIT_API_KEY", LK_KEY)
    monkeypatch.setenv("LIVEKIT_API_SECRET", LK_SECRET)


def verify(token: str) -> api.access_token.Claims:
    return api.TokenVerifier(LK_KEY, LK_SECRET).verify(token)


def with_fake(
    body: Callable[[FakeServer], Awaitable[Any]],
    monkeypatch: pytest.MonkeyPatch,
    *,
    faults: str = "",
) -> Any:
    """Run `body(server)` in an event loop with a fake Avatario on 127.0.0.1 and the env set.

    The fake verifies every avatar token it receives (signature, expiry, room grant, kind,
    identity, lk.publish_on_behalf = agent_id) with the LiveKit key and secret used here.
    """

    async def main() -> Any:
        async with run_fake_server(
            api_key=API_KEY,
            faults=faults,
            livekit_api_key=LK_KEY,
            livekit_api_secret=LK_SECRET,
        ) as server:
            monkeypatch.setenv("AVATARIO_BASE_URL", server.url)
            return await body(server)

    return asyncio.run(main())


def new_avatar(**kwargs: Any) -> AvatarSession:
    options: dict[str, Any] = {"avatar_id": "face_1", "api_key": API_KEY, "join_timeout": FAST}
    return AvatarSession(**{**options, **kwargs})


# -- import hygiene ----------------------------------------------------------------------------


@pytest.mark.parametrize("module", ["avatario_wrapper", "avatario_wrapper.compat"])
def test_the_core_and_compat_import_without_livekit(module: str) -> None:
    code = f"import sys, {module}; assert 'livekit' not in sys.modules, sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# -- drop-in constructor -----------------------------------------------------------------------

# livekit-plugins-avatario 1.8.9, read from its source.
PLUGIN_INIT = [
    "avatar_id",
    "video_info",
    "api_key",
    "avatar_participant_identity",
    "avatar_participant_name",
    "conn_options",
]
PLUGIN_START = ["agent_session", "room", "livekit_url", "livekit_api_key", "livekit_api_secret"]


def test_the_plugins_signatures_are_kept_and_the_base_class_is_livekits() -> None:
    init = list(inspect.signature(AvatarSession.__init__).parameters)[1:]
    assert init[: len(PLUGIN_INIT)] == PLUGIN_INIT
    assert init[len(PLUGIN_INIT) :] == [
        "client",
        "retry",
        "join_timeout",
        "api_url",
        "allow_insecure_http",
        "token_ttl",
        "wait_for_join",
        "max_duration",
        "wait_playback_start",
        "clear_buffer_timeout",
        "removal_timeout",
        "retry_budget_store",
    ]
    new = inspect.signature(AvatarSession.__init__).parameters
    assert all(new[name].kind is inspect.Parameter.KEYWORD_ONLY for name in init)
    assert new["join_timeout"].default == avatario_livekit.DEFAULT_JOIN_TIMEOUT == 30.0
    assert new["removal_timeout"].default == avatario_livekit.DEFAULT_REMOVAL_TIMEOUT
    start = inspect.signature(AvatarSession.start).parameters
    assert list(start)[1:] == PLUGIN_START
    assert all(start[name].kind is inspect.Parameter.KEYWORD_ONLY for name in PLUGIN_START[2:])
    assert issubclass(AvatarSession, BaseAvatarSession)
    assert list(AvatarSession.VideoInfo.__dataclass_fields__) == [
        "video_height",
        "video_width",
        "custom_background_url",
    ]


def test_avatar_id_and_key_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AVATARIO_AVATAR_ID", "face_env")
    monkeypatch.setenv("AVATARIO_API_KEY", API_KEY)
    avatar = AvatarSession()
    assert avatar._avatar_id == "face_env"
    assert avatar.avatar_identity == AVATAR
    assert avatar.provider == "avatario"
    assert avatar._video.height == 720
    assert avatar._video.width == 1280
    assert API_KEY not in repr(avatar)


@pytest.mark.parametrize(
    ("env", "field"),
    [({"AVATARIO_API_KEY": API_KEY}, "avatar_id"), ({"AVATARIO_AVATAR_ID": "f"}, "api_key")],
)
def test_a_missing_avatar_id_or_key_is_a_config_error(
    env: dict[str, str], field: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(AvatarioConfigError) as caught:
        AvatarSession()
    assert caught.value.field == field


def test_video_info_and_identity_are_the_plugins() -> None:
    avatar = AvatarSession(
        avatar_id="face_1",
        api_key=API_KEY,
        video_info=AvatarSession.VideoInfo(480, 640, "https://cdn.example.com/bg.png"),
        avatar_participant_identity="my-avatar",
        avatar_participant_name="My Avatar",
    )
    assert (avatar._video.height, avatar._video.width) == (480, 640)
    assert avatar._video.background_url == "https://cdn.example.com/bg.png"
    assert avatar.avatar_identity == "my-avatar"


def test_conn_options_become_the_retry_policy() -> None:
    options = lk_agents.APIConnectOptions(max_retry=5, retry_interval=0.25, timeout=4.0)
    avatar = new_avatar(conn_options=options)
    client, owned = avatar._client_for_call()
    assert owned
    assert client.retry.max_attempts == 5
    assert client.retry.initial_delay == 0.25
    assert client.timeout == 4.0
    asyncio.run(client.aclose())


def test_a_given_client_is_used_not_closed_and_excludes_api_key() -> None:
    async def main() -> None:
        async with AsyncAvatarioClient(API_KEY, base_url="https://avatario.test") as client:
            avatar = AvatarSession(avatar_id="face_1", client=client)
            used, owned = avatar._client_for_call()
            assert used is client
            assert not owned
            retried = AvatarSession(avatar_id="face_1", client=client, retry=RetryPolicy(2))
            copy, owned = retried._client_for_call()
            assert copy.retry.max_attempts == 2
            assert not owned
            with pytest.raises(AvatarioConfigError) as caught:
                AvatarSession(avatar_id="face_1", client=client, api_key=API_KEY)
            assert caught.value.field == "api_key"

    asyncio.run(main())


def test_inside_an_http_context_the_shared_session_is_used_and_left_open() -> None:
    async def main() -> None:
        async with utils.http_context.open() as shared:
            client, _ = new_avatar()._client_for_call()
            assert client._transport._session is shared  # type: ignore[attr-defined]
            await client.aclose()
            assert not shared.closed
        client, _ = new_avatar()._client_for_call()  # outside: its own pool
        assert client._transport._session is None  # type: ignore[attr-defined]
        await client.aclose()

    asyncio.run(main())


# -- the token ---------------------------------------------------------------------------------


def test_the_token_is_the_plugins() -> None:
    before = time.time()
    token = mint_avatar_token(
        livekit_api_key=LK_KEY,
        livekit_api_secret=LK_SECRET,
        room_name=ROOM_NAME,
        agent_identity=AGENT,
    )
    claims = verify(token)
    assert claims.identity == AVATAR
    assert claims.name == AVATAR
    assert claims.kind == "agent"
    assert claims.video is not None
    assert claims.video.room_join
    assert claims.video.room == ROOM_NAME
    assert claims.attributes == {"lk.publish_on_behalf": AGENT}
    assert lk_agents.voice.room_io.ATTRIBUTE_PUBLISH_ON_BEHALF == "lk.publish_on_behalf"
    expires = _expiry(token)
    six_hours = 6 * 3600  # the old plugin's (livekit-api's default)
    assert before + six_hours - 5 <= expires <= time.time() + six_hours + 5


def _expiry(token: str) -> float:
    import jwt  # livekit-api's own dependency

    payload = jwt.decode(token, LK_SECRET, algorithms=["HS256"], options={"verify_aud": False})
    return float(payload["exp"])


@pytest.mark.parametrize("ttl", [datetime.timedelta(seconds=90), 90, 90.0])
def test_the_token_ttl_is_configurable(ttl: datetime.timedelta | float) -> None:
    token = mint_avatar_token(
        livekit_api_key=LK_KEY,
        livekit_api_secret=LK_SECRET,
        room_name=ROOM_NAME,
        agent_identity=AGENT,
        avatar_identity="a2",
        avatar_name="Avatar Two",
        ttl=ttl,
    )
    assert _expiry(token) <= time.time() + 95
    claims = verify(token)
    assert (claims.identity, claims.name) == ("a2", "Avatar Two")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("livekit_api_secret", ""),
        ("livekit_api_key", " "),
        ("room_name", ""),
        ("agent_identity", ""),
        ("ttl", 0),
        ("ttl", datetime.timedelta(0)),
    ],
)
def test_bad_token_inputs_are_config_errors_without_the_secret(field: str, value: Any) -> None:
    args: dict[str, Any] = {
        "livekit_api_key": LK_KEY,
        "livekit_api_secret": LK_SECRET,
        "room_name": ROOM_NAME,
        "agent_identity": AGENT,
        field: value,
    }
    with pytest.raises(AvatarioConfigError) as caught:
        mint_avatar_token(**args)
    assert caught.value.field == field
    assert LK_SECRET not in str(caught.value)


# -- start() -----------------------------------------------------------------------------------


def test_start_sends_the_plugins_payload_and_routes_the_audio(
    monkeypatch: pytest.MonkeyPatch, lk_env: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    async def body(server: FakeServer) -> tuple[StartSessionResult, Any]:
        session: AgentSession[None] = AgentSession()
        avatar = new_avatar(video_info=AvatarSession.VideoInfo(480, 640))
        try:
            result = await avatar.start(session, new_room())
            return result, session.output.audio
        finally:
            await avatar.aclose()

    result, audio = with_fake(body, monkeypatch)
    assert isinstance(result, StartSessionResult)
    assert result.session_id
    assert result.attempts == 1
    assert isinstance(audio, DataStreamAudioOutput)
    assert audio._destination_identity == AVATAR
    assert audio.sample_rate == 24000
    assert audio._wait_remote_track == rtc.TrackKind.KIND_VIDEO
    for secret in (API_KEY, LK_SECRET):
        assert secret not in caplog.text


def test_the_fake_receives_the_payload_with_a_valid_token(
    monkeypatch: pytest.MonkeyPatch, lk_env: None
) -> None:
    async def body(server: FakeServer) -> Any:
        avatar = new_avatar(video_info=AvatarSession.VideoInfo(480, 640))
        try:
            await avatar.start(AgentSession(), new_room())
        finally:
            await avatar.aclose()
        return server.requests

    [request] = with_fake(body, monkeypatch)
    payload = request.json()
    token = payload["livekit"].pop("token")
    assert payload == {
        "avatario_face_id": "face_1",
        "agent_id": AGENT,
        "livekit": {"url": LK_URL},
        "video_height": 480,
        "video_width": 640,
    }
    assert request.headers.get("idempotency-key")
    claims = verify(token)
    assert claims.attributes == {"lk.publish_on_behalf": AGENT}
    assert claims.video is not None
    assert claims.video.room == ROOM_NAME
    assert claims.identity == AVATAR


def test_a_token_signed_with_another_secret_is_refused_by_the_fake(
    monkeypatch: pytest.MonkeyPatch, lk_env: None
) -> None:
    monkeypatch.setenv("LIVEKIT_API_SECRET", "another_SECRET_0123456789abcdef0123456789")

    async def body(server: FakeServer) -> Any:
        avatar = new_avatar()
        try:
            await avatar.start(AgentSession(), new_room())
        except lk_agents.APIStatusError as error:
            return error, server.requests
        finally:
            await avatar.aclose()
        raise AssertionError("no error")

    error, requests = with_fake(body, monkeypatch)
    assert isinstance(error, UnprocessableEntityError)
    assert error.status_code == 422
    assert len(requests) == 1  # a 422 is final: not resent
    assert "another_SECRET" not in str(error)


def test_arguments_override_the_livekit_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    async def body(server: FakeServer) -> Any:
        avatar = new_avatar()
        try:
            await avatar.start(
                AgentSession(),
                new_room(),
                livekit_url="wss://other.example.com",
                livekit_api_key=LK_KEY,
                livekit_api_secret=LK_SECRET,
            )
        finally:
            await avatar.aclose()
        return server.requests[0].json()

    payload = with_fake(body, monkeypatch)
    assert payload["livekit"]["url"] == "wss://other.example.com"
    verify(payload["livekit"]["token"])


@pytest.mark.parametrize(
    ("unset", "field"),
    [
        (["LIVEKIT_URL"], "livekit_url"),
        (["LIVEKIT_API_SECRET"], "livekit_api_secret"),
        (["LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"], "livekit"),
    ],
)
def test_missing_livekit_settings_fail_before_anything_is_sent(
    unset: list[str], field: str, monkeypatch: pytest.MonkeyPatch, lk_env: None
) -> None:
    for name in unset:
        monkeypatch.delenv(name)

    async def body(server: FakeServer) -> Any:
        session: AgentSession[None] = AgentSession()
        with pytest.raises(AvatarioConfigError) as caught:
            await new_avatar().start(session, new_room())
        return caught.value, server.requests, session.output.audio

    error, requests, audio = with_fake(body, monkeypatch)
    assert error.field == field
    assert requests == []
    assert audio is None
    assert LK_SECRET not in str(error)


def test_outside_a_job_an_unconnected_room_gives_no_identity(
    monkeypatch: pytest.MonkeyPatch, lk_env: None
) -> None:
    async def body(server: FakeServer) -> Any:
        room = rtc.Room()  # real, never connected
        with pytest.raises(AvatarioConfigError, match=r"connect\(\)") as caught:
            await new_avatar().start(AgentSession(), room)
        return caught.value, server.requests

    error, requests = with_fake(body, monkeypatch)
    assert error.field == "agent_identity"
    assert requests == []


# -- unknown outcomes, settled by the room ------------------------------------------------------


def test_a_lost_response_is_settled_by_the_avatar_joining(
    monkeypatch: pytest.MonkeyPatch, lk_env: None
) -> None:
    async def body(server: FakeServer) -> Any:
        room = new_room()
        session: AgentSession[None] = AgentSession()
        avatar = new_avatar(join_timeout=5.0)  # returns as soon as the avatar joins
        # Avatario's avatar joins the room once the fake has started the session.
        with room.avatars_from(server):
            try:
                result = await avatar.start(session, room)
            finally:
                await avatar.aclose()
        return result, server, session.output.audio

    result, server, audio = with_fake(body, monkeypatch, faults="lost")
    assert result.session_id is None
    assert result.status_code == 0
    assert result.data == {"settled_by": "room_join", "outcome": "unknown"}
    assert result.attempts == 1
    [request] = server.requests
    assert result.idempotency_key == request.headers["idempotency-key"]
    assert len(server.sessions) == 1
    assert isinstance(audio, DataStreamAudioOutput)


def test_an_avatar_already_in_the_room_settles_at_once(
    monkeypatch: pytest.MonkeyPatch, lk_env: None
) -> None:
    async def body(server: FakeServer) -> Any:
        room = new_room()
        avatar_joins(room)  # e.g. it joined while the lost response was on its way
        avatar = new_avatar(join_timeout=60.0)
        try:
            return await avatar.start(AgentSession(), room), server
        finally:
            await avatar.aclose()

    started = time.monotonic()
    result, server = with_fake(body, monkeypatch, faults="lost")
    assert time.monotonic() - started < 20  # not the 60 s join wait (a loaded-machine bound)
    assert result.data["settled_by"] == "room_join"
    assert len(server.requests) == 1


def test_no_join_in_time_resends_once_with_the_same_key(
    monkeypatch: pytest.MonkeyPatch, lk_env: None, caplog: pytest.LogCaptureFixture
) -> None:
    async def body(server: FakeServer) -> Any:
        session: AgentSession[None] = AgentSession()
        avatar = new_avatar()
        try:
            result = await avatar.start(session, new_room())
        finally:
            await avatar.aclose()
        return result, server, session.output.audio

    result, server, audio = with_fake(body, monkeypatch, faults="lost")
    first, second = server.requests
    key = first.headers["idempotency-key"]
    assert second.headers["idempotency-key"] == key
    assert first.body == second.body  # the same token too, so the key matches
    assert len(server.sessions) == 1  # the fake honours the key: one avatar
    assert result.session_id == server.sessions[0]["session_id"]
    assert result.idempotency_key == key
    assert result.attempts == 2
    assert isinstance(audio, DataStreamAudioOutput)
    assert "same idempotency key" in caplog.text


def test_no_resend_when_the_policy_has_no_attempts_left(
    monkeypatch: pytest.MonkeyPatch, lk_env: None
) -> None:
    async def body(server: FakeServer) -> Any:
        avatar = new_avatar(retry=RetryPolicy.no_retries())
        with pytest.raises(lk_agents.APIConnectionError) as caught:
            await avatar.start(AgentSession(), new_room())
        await avatar.aclose()
        return caught.value, server

    error, server = with_fake(body, monkeypatch, faults="lost")
    assert isinstance(error, APIConnectionError)
    assert error.may_have_started
    assert len(server.requests) == 1
    assert isinstance(error.__cause__, (aiohttp.ClientError, OSError))


def test_a_room_that_disconnects_cannot_settle_so_nothing_is_resent(
    monkeypatch: pytest.MonkeyPatch, lk_env: None
) -> None:
    async def body(server: FakeServer) -> Any:
        room = new_room()
        avatar = new_avatar(join_timeout=60.0)
        link = room.avatars_from(server, join=False)  # the avatar never arrives

        async def leave() -> None:
            await link.wait_for_sessions()
            await asyncio.sleep(0.01)
            await room.disconnect()

        leaving = asyncio.create_task(leave())
        with link, pytest.raises(APIConnectionError):
            await avatar.start(AgentSession(), room)
        await leaving
        await avatar.aclose()
        return server

    server = with_fake(body, monkeypatch, faults="lost")
    assert len(server.requests) == 1


def test_a_2xx_with_a_bad_body_is_never_resent(
    monkeypatch: pytest.MonkeyPatch, lk_env: None
) -> None:
    async def body(server: FakeServer) -> Any:
        avatar = new_avatar()
        with pytest.raises(APIResponseValidationError) as caught:
            await avatar.start(AgentSession(), new_room())
        await avatar.aclose()
        return caught.value, server

    error, server = with_fake(body, monkeypatch, faults="malformed")
    assert isinstance(error, lk_agents.APIError)
    assert len(server.requests) == 1


def test_a_2xx_with_a_bad_body_and_a_joined_avatar_is_a_result(
    monkeypatch: pytest.MonkeyPatch, lk_env: None
) -> None:
    async def body(server: FakeServer) -> Any:
        room = new_room()
        avatar_joins(room)
        avatar = new_avatar()
        try:
            return await avatar.start(AgentSession(), room)
        finally:
            await avatar.aclose()

    result = with_fake(body, monkeypatch, faults="malformed")
    assert result.status_code == 200
    assert result.data == {"settled_by": "room_join", "outcome": "started"}


# -- errors caught both ways -------------------------------------------------------------------


def test_a_status_error_from_start_is_ours_and_livekits(
    monkeypatch: pytest.MonkeyPatch, lk_env: None
) -> None:
    async def body(server: FakeServer) -> Any:
        avatar = AvatarSession(avatar_id="face_1", api_key="sk_wrong_key", join_timeout=FAST)
        try:
            await avatar.start(AgentSession(), new_room())
        except lk_agents.APIStatusError as error:
            return error
        finally:
            await avatar.aclose()
        raise AssertionError("no error")

    error = with_fake(body, monkeypatch)
    assert isinstance(error, AuthenticationError)
    assert isinstance(error, AvatarioError)
    assert error.status_code == 401
    assert error.retryable is False
    assert error.request_id
    assert isinstance(error.body, str)
    assert "sk_wrong_key" not in str(error)
    assert "sk_wrong_key" not in repr(error)


def test_a_connection_error_keeps_its_cause_and_traceback(
    monkeypatch: pytest.MonkeyPatch, lk_env: None
) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the block ends: connection refused
    monkeypatch.setenv("AVATARIO_BASE_URL", f"http://127.0.0.1:{port}")

    async def main() -> Any:
        avatar = new_avatar(retry=RetryPolicy(max_attempts=2, initial_delay=0.0))
        try:
            await avatar.start(AgentSession(), new_room())
        except AvatarioError as error:
            return error
        finally:
            await avatar.aclose()
        raise AssertionError("no error")

    error = asyncio.run(main())
    assert isinstance(error, lk_agents.APIConnectionError)
    assert isinstance(error, APIConnectionError)
    assert not error.may_have_started
    assert error.attempts == 2
    assert error.body is None
    assert isinstance(error.__cause__, (aiohttp.ClientError, OSError))
    frames = [frame.f_code.co_name for frame, _ in _walk(error.__traceback__)]
    assert "start" in frames
    assert "drive_async" in frames  # the original traceback, not one cut at the boundary


def _walk(tb: Any) -> Any:
    import traceback

    return traceback.walk_tb(tb)


def test_compat_errors_are_livekits_too_and_a_given_session_stays_open(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token = mint_avatar_token(
        livekit_api_key=LK_KEY,
        livekit_api_secret=LK_SECRET,
        room_name=ROOM_NAME,
        agent_identity=AGENT,
    )
    room = {"url": LK_URL, "token": token}

    async def body(server: FakeServer) -> Any:
        async with aiohttp.ClientSession() as shared:
            async with AvatarioAPI(API_KEY, "face_1", session=shared) as client:
                result = await client.start_session(livekit_agent_identity=AGENT, properties=room)
                with pytest.raises(lk_agents.APIStatusError) as caught:
                    await client.start_session(livekit_agent_identity=AGENT, properties=room)
            still_open = not shared.closed
            # Reusable afterwards: the session is the caller's.
            async with AvatarioAPI(API_KEY, "face_1", session=shared) as again:
                await again.start_session(livekit_agent_identity=AGENT, properties=room)
        return result, caught.value, still_open, server

    result, error, still_open, server = with_fake(body, monkeypatch, faults="ok,401")
    assert result.session_id
    assert isinstance(error, AuthenticationError)
    assert error.status_code == 401
    assert error.retryable is False
    assert still_open
    assert len(server.requests) == 3


def test_config_errors_stay_config_errors() -> None:
    error = AvatarioConfigError("x", "y")
    from avatario_wrapper._livekit_errors import as_livekit_error

    assert as_livekit_error(error) is error


# -- the example ---------------------------------------------------------------------------------


def test_the_example_agent_imports() -> None:
    path = ROOT / "examples" / "livekit_agent.py"
    spec = importlib.util.spec_from_file_location("livekit_agent_example", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert inspect.iscoroutinefunction(module.entrypoint)
    assert module.AvatarSession is avatario_livekit.AvatarSession
