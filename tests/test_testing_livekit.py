"""The stand-in LiveKit room of the testing kit (`avatario_wrapper.testing.livekit`).

Real: livekit-agents (its base avatar session, `wait_for_join`, `DataStreamAudioOutput`,
`AgentSession`, `fake_job_context`, `utils.wait_for_participant` /
`wait_for_track_publication`), livekit's `rtc.Room` event emitter, `RemoteParticipant`,
`RemoteTrackPublication`, `RpcInvocationData`, `ByteStreamWriter` info; the fake Avatario on
a real 127.0.0.1 socket, verifying every token with the LiveKit key and secret.

Stand-in: the room's server side (no LiveKit server can run here), which is what this file
tests: that it refuses what it does not implement, never calls livekit's native client,
emits what a real room emits in the same order, and that livekit-agents' avatar path runs on
it from start to removal. That a real room emits those events is LiveKit's part.
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import json
import logging
import re
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

pytest.importorskip("livekit.agents")

from livekit import api, rtc
from livekit.agents import AgentSession, get_job_context, utils
from livekit.agents.voice.avatar import DataStreamAudioOutput
from livekit.rtc._ffi_client import FfiClient

from avatario_wrapper import (
    APIConnectionError,
    AsyncAvatarioClient,
    AvatarioClient,
    RetryPolicy,
    StartSessionResult,
)
from avatario_wrapper.livekit import AvatarSession, mint_avatar_token
from avatario_wrapper.testing import (
    AvatarLink,
    FakeAvatario,
    FakeClock,
    FakeServer,
    StandInRoom,
    run_fake_server,
)
from avatario_wrapper.testing.livekit import StandInLocalParticipant

from .spec_helpers import ROOT

pytestmark = pytest.mark.usefixtures("no_agent_env")

API_KEY = "sk_test_SECRET_KEY_5f2b9c"
LK_KEY = "APIlkKEY123"
LK_SECRET = "lk_SECRET_0123456789abcdef0123456789abcdef"
LIVEKIT = {"livekit_url": "wss://rooms.example.com", "livekit_api_key": LK_KEY}
ROOM = "room-42"
AGENT = "agent-7"
AVATAR = "avatario-avatar-agent"


@pytest.fixture(autouse=True)
def no_native_client(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Fail the test if anything reaches livekit's native client (FFI) at all."""
    calls: list[Any] = []

    def refuse(self: Any, request: Any) -> Any:
        calls.append(request)
        raise AssertionError("livekit's native client was called")

    monkeypatch.setattr(FfiClient, "request", refuse)
    yield calls
    assert calls == [], "the stand-in reached livekit's native client"


def run(body: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(body())  # type: ignore[arg-type]


def with_fake(body: Callable[[FakeServer], Awaitable[Any]], **options: Any) -> Any:
    """Run `body(fake)` with a fake Avatario that verifies tokens with the LiveKit secret."""

    async def main() -> Any:
        async with run_fake_server(
            api_key=API_KEY, livekit_api_key=LK_KEY, livekit_api_secret=LK_SECRET, **options
        ) as fake:
            return await body(fake)

    return asyncio.run(main())


def new_avatar(client: AsyncAvatarioClient, **kwargs: Any) -> AvatarSession:
    options: dict[str, Any] = {"avatar_id": "face_1", "client": client, "join_timeout": 5.0}
    return AvatarSession(**{**options, **kwargs})


async def start(
    avatar: AvatarSession, session: AgentSession[Any], room: rtc.Room
) -> StartSessionResult:
    return await avatar.start(session, room=room, livekit_api_secret=LK_SECRET, **LIVEKIT)


class Events:
    """Every event a room emits, in order, as (name, first identity or value)."""

    NAMES: tuple[Any, ...] = (
        "participant_connected",
        "participant_active",
        "participant_disconnected",
        "track_published",
        "track_unpublished",
        "connection_state_changed",
        "disconnected",
        "participant_attributes_changed",
    )

    def __init__(self, room: rtc.Room) -> None:
        self.seen: list[tuple[str, Any]] = []
        for name in self.NAMES:
            room.on(name, self._recorder(name))

    def _recorder(self, name: str) -> Callable[..., None]:
        def record(*args: Any) -> None:
            participant = next((a for a in args if isinstance(a, rtc.Participant)), None)
            self.seen.append((name, participant.identity if participant else args[0]))

        return record


# -- what it is and what it refuses ----------------------------------------------------------

# Public methods of rtc.Room / rtc.LocalParticipant that are plain Python in livekit (they touch
# no server and no native client), so the stand-in inherits them as they are.
PURE = {
    rtc.Room: {
        "on",
        "off",
        "once",
        "emit",
        "register_byte_stream_handler",
        "unregister_byte_stream_handler",
        "register_text_stream_handler",
        "unregister_text_stream_handler",
    },
    rtc.LocalParticipant: set(),
}
STAND_INS = {rtc.Room: StandInRoom, rtc.LocalParticipant: StandInLocalParticipant}


@pytest.mark.parametrize("base", [rtc.Room, rtc.LocalParticipant], ids=lambda c: c.__name__)
def test_every_public_method_is_played_or_plain_python(base: type) -> None:
    stand_in = STAND_INS[base]
    assert issubclass(stand_in, base)
    methods = {
        name
        for name in dir(base)
        if not name.startswith("_") and callable(inspect.getattr_static(base, name))
    }
    inherited = {name for name in methods if name not in vars(stand_in)}
    # A method livekit adds later fails here until someone decides what the stand-in does.
    assert inherited == PURE[base]


NOT_IMPLEMENTED = [
    ("room", "connect", ("wss://x", "token")),
    ("room", "get_rtc_stats", ()),
    ("room", "simulate_scenario", (0,)),
    ("agent", "publish_data", (b"x",)),
    ("agent", "publish_dtmf", ()),
    ("agent", "publish_transcription", (None,)),
    ("agent", "publish_track", (None,)),
    ("agent", "unpublish_track", ("TR_1",)),
    ("agent", "publish_data_track", ()),
    ("agent", "stream_text", ()),
    ("agent", "send_text", ("hi",)),
    ("agent", "send_bytes", (b"x",)),
    ("agent", "send_file", ("/dev/null",)),
    ("agent", "add_rpc_interceptor", (None,)),
    ("agent", "remove_rpc_interceptor", (None,)),
    ("agent", "set_track_subscription_permissions", ()),
]


@pytest.mark.parametrize(("owner", "method", "args"), NOT_IMPLEMENTED)
def test_what_is_not_implemented_says_so_by_name(
    owner: str, method: str, args: tuple[Any, ...]
) -> None:
    async def body() -> None:
        room = StandInRoom()
        target: Any = room if owner == "room" else room.local_participant
        with pytest.raises(NotImplementedError, match=rf"^{method} is not implemented: .*server"):
            await _call(getattr(target, method), *args)

    run(body)


async def _call(method: Callable[..., Any], *args: Any) -> None:
    outcome = method(*args)
    if inspect.isawaitable(outcome):
        await outcome


def test_encryption_is_not_implemented() -> None:
    async def body() -> None:
        room = StandInRoom()
        with pytest.raises(AttributeError, match="not implemented"):
            room.e2ee_manager  # noqa: B018

    run(body)


def test_it_is_made_inside_the_event_loop() -> None:
    with pytest.raises(RuntimeError, match="inside the event loop"):
        StandInRoom()


def test_a_connected_room_with_the_agent_in_it() -> None:
    async def body() -> None:
        room = StandInRoom(ROOM, agent_identity=AGENT, agent_name="Agent Seven", metadata="m")
        assert isinstance(room, rtc.Room)
        assert room.isconnected()
        assert room.connection_state == rtc.ConnectionState.CONN_CONNECTED
        assert room.name == ROOM
        assert room.metadata == "m"
        assert (await room.sid).startswith("RM_")
        agent = room.local_participant
        assert isinstance(agent, rtc.LocalParticipant)
        assert (agent.identity, agent.name) == (AGENT, "Agent Seven")
        assert agent.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
        assert room.remote_participants == {}
        assert room.num_participants == 1
        assert ROOM in repr(room)

    run(body)


def test_test_controls_refuse_another_thread() -> None:
    async def body() -> None:
        room = StandInRoom()
        with pytest.raises(RuntimeError, match="event loop"):
            await asyncio.to_thread(room.add_participant, "someone")

    run(body)


# -- participants, tracks and their events ---------------------------------------------------


def test_joining_and_leaving_emit_what_a_real_room_emits_in_order() -> None:
    async def body() -> None:
        room = StandInRoom()
        events = Events(room)
        user = room.add_participant(
            "user-1", attributes={"a": "1"}, tracks=[rtc.TrackKind.KIND_AUDIO]
        )
        assert isinstance(user, rtc.RemoteParticipant)
        assert user.state == rtc.ParticipantState.PARTICIPANT_STATE_ACTIVE
        assert user.kind == rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD
        assert user.attributes == {"a": "1"}
        [publication] = user.track_publications.values()
        assert isinstance(publication, rtc.RemoteTrackPublication)
        assert publication.kind == rtc.TrackKind.KIND_AUDIO
        assert publication.source == rtc.TrackSource.SOURCE_MICROPHONE
        assert not publication.subscribed
        assert publication.track is None
        assert room.remote_participants == {"user-1": user}
        assert room.num_publishers == 1
        left = room.remove_participant("user-1", reason=rtc.DisconnectReason.ROOM_DELETED)
        assert left is user
        assert user.disconnect_reason == rtc.DisconnectReason.ROOM_DELETED
        assert user.state == rtc.ParticipantState.PARTICIPANT_STATE_DISCONNECTED
        assert room.remote_participants == {}
        assert events.seen == [
            ("participant_connected", "user-1"),
            ("participant_active", "user-1"),
            ("track_published", "user-1"),
            ("track_unpublished", "user-1"),
            ("participant_disconnected", "user-1"),
        ]
        with pytest.raises(KeyError, match="no participant 'user-1'"):
            room.remove_participant("user-1")
        room.add_participant("user-2")
        with pytest.raises(ValueError, match="already in the room"):
            room.add_participant("user-2")

    run(body)


def test_livekit_agents_waits_see_participants_and_tracks() -> None:
    async def body() -> None:
        room = StandInRoom()
        joined = asyncio.create_task(utils.wait_for_participant(room, identity="avatar"))
        video = asyncio.create_task(
            utils.wait_for_track_publication(room, identity="avatar", kind=rtc.TrackKind.KIND_VIDEO)
        )
        await asyncio.sleep(0)
        room.add_participant("avatar", kind=rtc.ParticipantKind.PARTICIPANT_KIND_AGENT)
        assert (await joined).identity == "avatar"
        assert not video.done()
        publication = room.publish_track("avatar", rtc.TrackKind.KIND_VIDEO, width=640, height=360)
        assert await video is publication
        assert (publication.width, publication.height) == (640, 360)
        assert publication.source == rtc.TrackSource.SOURCE_CAMERA
        # Already there: the waits return at once.
        assert (await utils.wait_for_participant(room, identity="avatar")).identity == "avatar"

    run(body)


def test_disconnecting_ends_the_waits_and_is_announced() -> None:
    async def body() -> None:
        room = StandInRoom()
        events = Events(room)
        waiting = asyncio.create_task(utils.wait_for_participant(room, identity="nobody"))
        await asyncio.sleep(0)
        await room.disconnect()
        with pytest.raises(RuntimeError, match="room disconnected"):
            await waiting
        assert not room.isconnected()
        assert room.local_participant.disconnect_reason == rtc.DisconnectReason.CLIENT_INITIATED
        assert events.seen == [
            ("connection_state_changed", rtc.ConnectionState.CONN_DISCONNECTED),
            ("disconnected", rtc.DisconnectReason.CLIENT_INITIATED),
        ]
        await room.disconnect()  # as livekit's: nothing more when already disconnected
        assert len(events.seen) == 2
        with pytest.raises(RuntimeError, match="disconnected"):
            room.add_participant("late")

    run(body)


def test_the_agent_sets_its_attributes_as_livekit_does() -> None:
    async def body() -> None:
        room = StandInRoom()
        events = Events(room)
        agent = room.local_participant
        await agent.set_attributes({"lk.agent.state": "listening", "x": "1"})
        await agent.set_attributes({"x": "", "lk.agent.state": "listening"})  # "" removes
        assert agent.attributes == {"lk.agent.state": "listening"}
        assert [e for e in events.seen if e[0] == "participant_attributes_changed"] == [
            ("participant_attributes_changed", agent.identity),
            ("participant_attributes_changed", agent.identity),
        ]
        await agent.set_name("Seven")
        await agent.set_metadata("{}")
        assert (agent.name, agent.metadata) == ("Seven", "{}")

    run(body)


# -- RPC and byte streams ----------------------------------------------------------------------


def test_the_agents_rpc_calls_are_answered_as_livekit_answers() -> None:
    async def body() -> None:
        room = StandInRoom()
        agent = room.local_participant
        room.add_participant("avatar")

        async def answer(data: rtc.RpcInvocationData) -> str:
            return f"{data.caller_identity}:{data.method}:{data.payload}"

        def broken(data: rtc.RpcInvocationData) -> str:
            raise ValueError("boom")

        room.set_rpc_handler("avatar", "echo", answer)
        room.set_rpc_handler("avatar", "broken", broken)
        assert await agent.perform_rpc(
            destination_identity="avatar", method="echo", payload="p"
        ) == (f"{agent.identity}:echo:p")
        codes = []
        for destination, method in (("nobody", "echo"), ("avatar", "other"), ("avatar", "broken")):
            with pytest.raises(rtc.RpcError) as caught:
                await agent.perform_rpc(destination_identity=destination, method=method, payload="")
            codes.append(caught.value.code)
        assert codes == [
            rtc.RpcError.ErrorCode.RECIPIENT_NOT_FOUND,
            rtc.RpcError.ErrorCode.UNSUPPORTED_METHOD,
            rtc.RpcError.ErrorCode.APPLICATION_ERROR,
        ]
        assert [(c.destination_identity, c.method) for c in agent.rpc_calls] == [
            ("avatar", "echo"),
            ("nobody", "echo"),
            ("avatar", "other"),
            ("avatar", "broken"),
        ]

    run(body)


def test_a_remote_participant_calls_the_agents_rpc_methods() -> None:
    async def body() -> None:
        room = StandInRoom()
        room.add_participant("avatar")
        seen: list[rtc.RpcInvocationData] = []

        @room.local_participant.register_rpc_method("greet")
        async def greet(data: rtc.RpcInvocationData) -> str:
            seen.append(data)
            return "hello"

        def refuse(data: rtc.RpcInvocationData) -> str:
            raise rtc.RpcError(1001, "no")

        room.local_participant.register_rpc_method("refuse", refuse)
        assert await room.rpc_from("avatar", "greet", "p") == "hello"
        assert (seen[0].caller_identity, seen[0].payload, seen[0].method) == (
            "avatar",
            "p",
            "greet",
        )
        with pytest.raises(rtc.RpcError) as caught:
            await room.rpc_from("avatar", "refuse")
        assert (caught.value.code, caught.value.message) == (1001, "no")
        room.local_participant.unregister_rpc_method("greet")
        with pytest.raises(rtc.RpcError) as caught:
            await room.rpc_from("avatar", "greet")
        assert caught.value.code == rtc.RpcError.ErrorCode.UNSUPPORTED_METHOD
        with pytest.raises(KeyError):
            await room.rpc_from("nobody", "greet")

    run(body)


def test_byte_streams_keep_what_the_agent_sends() -> None:
    async def body() -> None:
        room = StandInRoom()
        writer = await room.local_participant.stream_bytes(
            "AUDIO_1",
            topic="lk.audio_stream",
            destination_identities=["avatar"],
            attributes={"sample_rate": "24000"},
        )
        assert isinstance(writer, rtc.ByteStreamWriter)
        await writer.write(b"ab")
        await writer.write(b"cd")
        await writer.aclose(reason="done")
        assert room.local_participant.byte_streams == [writer]
        assert writer.data == b"abcd"
        assert writer.closed
        assert writer.destination_identities == ("avatar",)
        assert writer.info.topic == "lk.audio_stream"
        assert writer.info.attributes == {"sample_rate": "24000"}
        assert writer.info.stream_id
        with pytest.raises(RuntimeError, match="closed"):
            await writer.write(b"e")
        with pytest.raises(RuntimeError, match="already closed"):
            await writer.aclose()

    run(body)


# -- the fake's avatar, through livekit-agents --------------------------------------------------


def test_the_whole_start_outside_a_job() -> None:
    async def body(fake: FakeServer) -> None:
        room = StandInRoom(ROOM, agent_identity=AGENT)
        events = Events(room)
        async with AsyncAvatarioClient(API_KEY, base_url=fake.url) as client:
            with room.avatars_from(fake) as avatars:
                avatar = new_avatar(client, video_info=AvatarSession.VideoInfo(480, 640))
                session: AgentSession[None] = AgentSession()
                metrics: list[Any] = []
                avatar.on("metrics_collected", metrics.append)
                result = await start(avatar, session, room)
                await avatar.wait_for_join(timeout=10)
                [started] = await avatars.wait_for_sessions()

                assert result.session_id == started.session_id
                assert started.room == ROOM
                assert metrics
                assert metrics[0].avatar_joined_time is not None
                joined = room.remote_participants[AVATAR]
                assert joined.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
                assert joined.attributes == {"lk.publish_on_behalf": AGENT}
                kinds = {p.kind: p for p in joined.track_publications.values()}
                assert sorted(kinds) == sorted([rtc.TrackKind.KIND_VIDEO, rtc.TrackKind.KIND_AUDIO])
                video = kinds[rtc.TrackKind.KIND_VIDEO]
                assert (video.width, video.height) == (640, 480)  # the requested size

                audio = session.output.audio
                assert isinstance(audio, DataStreamAudioOutput)
                await audio.capture_frame(rtc.AudioFrame.create(24000, 1, 240))
                audio.flush()
                await asyncio.sleep(0)  # the flush closes the stream in a task
                [stream] = room.local_participant.byte_streams
                assert stream.destination_identities == (AVATAR,)
                assert stream.topic == "lk.audio_stream"
                assert stream.info.attributes == {"sample_rate": "24000", "num_channels": "1"}
                assert len(stream.data) == 480  # 240 samples of 16 bits
                assert stream.closed  # the segment ended
                finished = json.dumps({"playback_position": 0.01, "interrupted": False})
                assert await room.rpc_from(AVATAR, "lk.playback_finished", finished) == "ok"
                await asyncio.wait_for(audio.wait_for_playout(), 5)

                # livekit-agents 1.8.9 asks the LiveKit server to remove the avatar only
                # inside a job: outside one, aclose() leaves it in the room.
                await avatar.aclose()
                assert AVATAR in room.remote_participants
        assert ("participant_connected", AVATAR) in events.seen
        assert ("participant_disconnected", AVATAR) not in events.seen

    with_fake(body)


def test_inside_a_job_aclose_removes_the_avatar() -> None:
    async def body(fake: FakeServer) -> None:
        room = StandInRoom(ROOM, agent_identity=AGENT)
        events = Events(room)
        async with AsyncAvatarioClient(API_KEY, base_url=fake.url) as client:
            with room.avatars_from(fake), room.job_context() as ctx:
                assert get_job_context() is ctx
                assert ctx.room is room
                assert ctx.local_participant_identity == AGENT  # from the job's token
                avatar = new_avatar(client)
                await start(avatar, AgentSession(), room)
                await avatar.wait_for_join(timeout=10)
                await avatar.aclose()
            removed = [e for e in events.seen if e[0] == "participant_disconnected"]
            assert removed == [("participant_disconnected", AVATAR)]
            assert AVATAR not in room.remote_participants
            with pytest.raises(AttributeError, match=r"only room\.remove_participant"):
                ctx.api.sip  # noqa: B018

    with_fake(body)


def test_the_server_api_says_not_found_as_livekit_does() -> None:
    async def body() -> None:
        room = StandInRoom(ROOM)
        room.add_participant("user")
        with room.job_context() as ctx:
            with pytest.raises(api.TwirpError) as caught:
                await ctx.api.room.remove_participant(
                    api.RoomParticipantIdentity(room=ROOM, identity="nobody")
                )
            assert caught.value.code == "not_found"
            await ctx.api.room.remove_participant(
                api.RoomParticipantIdentity(room=ROOM, identity="user")
            )
        assert room.remote_participants == {}

    run(body)


def test_the_server_api_records_every_removal_and_works_after_the_agent_left() -> None:
    async def body() -> None:
        room = StandInRoom(ROOM)
        room.add_participant("user")
        room.add_participant("guest")
        events = Events(room)
        with room.job_context() as ctx:
            await ctx.api.room.remove_participant(
                api.RoomParticipantIdentity(room=ROOM, identity="user")
            )
            await room.disconnect()
            await ctx.api.room.remove_participant(  # by name: LiveKit needs no connection
                api.RoomParticipantIdentity(room=ROOM, identity="guest")
            )
            for room_name, identity in ((ROOM, "guest"), ("another-room", "user")):
                with pytest.raises(api.TwirpError):
                    await ctx.api.room.remove_participant(
                        api.RoomParticipantIdentity(room=room_name, identity=identity)
                    )
        assert [(r.room, r.identity, r.found, r.agent_connected) for r in room.removals] == [
            (ROOM, "user", True, True),
            (ROOM, "guest", True, False),
            (ROOM, "guest", False, False),
            ("another-room", "user", False, False),
        ]
        assert room.participants_on_server == frozenset()
        # The agent saw the first go; after it left it hears nothing, as in a real room.
        assert [e for e in events.seen if e[0] == "participant_disconnected"] == [
            ("participant_disconnected", "user")
        ]

    run(body)


def test_a_removal_fault_makes_the_server_api_fail_or_hang() -> None:
    async def body() -> None:
        room = StandInRoom(ROOM)
        room.add_participant("user")
        request = api.RoomParticipantIdentity(room=ROOM, identity="user")
        with room.job_context() as ctx:
            room.removal_fault = api.TwirpError("unavailable", "down", status=503)
            with pytest.raises(api.TwirpError, match="unavailable"):
                await ctx.api.room.remove_participant(request)
            room.removal_fault = "hang"
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(ctx.api.room.remove_participant(request), 0.05)
            room.removal_fault = None
            await ctx.api.room.remove_participant(request)
            with pytest.raises(TypeError):
                room.removal_fault = "boom"  # type: ignore[assignment]
        assert [(r.found, r.fault) for r in room.removals] == [
            (True, "ServerError('unavailable', 'down')"),  # livekit's TwirpError
            (True, "hang"),
            (True, None),
        ]
        assert room.participants_on_server == frozenset()

    run(body)


def test_end_job_closes_the_session_disconnects_then_runs_the_callbacks() -> None:
    async def body() -> list[str]:
        from livekit.agents.voice import Agent

        room = StandInRoom(ROOM)
        seen: list[str] = []
        with room.job_context() as ctx:
            session: AgentSession[None] = AgentSession()
            session.on("close", lambda _: seen.append(f"close, connected={room.isconnected()}"))
            await session.start(Agent(instructions="test"), record=False)

            async def callback(reason: str) -> None:
                seen.append(f"callback {reason!r}, connected={room.isconnected()}")

            async def failing() -> None:
                raise RuntimeError("a callback's bug")

            ctx.add_shutdown_callback(callback)
            ctx.add_shutdown_callback(failing)
            await room.end_job("participant left")
        with pytest.raises(RuntimeError, match=r"inside `with room\.job_context"):
            await room.end_job()
        return seen

    assert run(body) == [
        "close, connected=True",
        "callback 'participant left', connected=False",
    ]


def test_livekit_agents_shutdown_order_is_the_one_end_job_plays() -> None:
    """`end_job` plays livekit-agents 1.8.9's ``_JobProc._shutdown_job``; this pins its order
    in the installed livekit-agents, so an upgrade that changes it fails here first."""
    from livekit.agents.ipc import job_proc_lazy_main

    source = inspect.getsource(job_proc_lazy_main._JobProc._shutdown_job)
    steps = ["session.aclose()", "self._room.disconnect()", "self._job_ctx._shutdown_callbacks"]
    places = [source.index(step) for step in steps]
    assert places == sorted(places)


def test_a_slow_avatar_joins_after_join_after_seconds() -> None:
    async def body(fake: FakeServer) -> Any:
        room = StandInRoom(ROOM, agent_identity=AGENT)
        async with AsyncAvatarioClient(API_KEY, base_url=fake.url) as client:
            with room.avatars_from(fake, join_after=0.05) as link:
                avatar = new_avatar(client)
                await start(avatar, AgentSession(), room)
                at_start = AVATAR in room.remote_participants
                await avatar.wait_for_join(timeout=10)  # on the loop's own (real) time
                await avatar.aclose()
        return at_start, repr(link)

    at_start, shown = with_fake(body)
    assert not at_start
    assert "join_after=0.05" in shown


@pytest.mark.parametrize("closed", [False, True])
def test_a_slow_avatar_on_the_rooms_fake_clock_joins_when_time_passes_unless_closed(
    closed: bool,
) -> None:
    async def body(fake: FakeServer) -> list[bool]:
        clock = FakeClock()
        room = StandInRoom(ROOM, agent_identity=AGENT, clock=clock)
        async with AsyncAvatarioClient(API_KEY, base_url=fake.url) as client:
            with room.avatars_from(fake, join_after=12.0) as link:
                avatar = new_avatar(client)
                await start(avatar, AgentSession(), room)
                seen = [AVATAR in room.remote_participants]
                if closed:
                    link.close()  # the joins still to come never do
                for step in (11.9, 0.1):
                    clock.advance(step)
                    seen.append(AVATAR in room.remote_participants)
                await avatar.aclose()
        return seen

    assert with_fake(body) == [False, False, not closed]


def test_an_avatar_arriving_after_the_agent_left_is_still_in_the_room_on_livekits_side() -> None:
    async def body(fake: FakeServer) -> Any:
        clock = FakeClock()
        room = StandInRoom(ROOM, agent_identity=AGENT, clock=clock)
        events = Events(room)
        token = mint_avatar_token(
            livekit_api_key=LK_KEY,
            livekit_api_secret=LK_SECRET,
            room_name=ROOM,
            agent_identity=AGENT,
        )
        async with AsyncAvatarioClient(API_KEY, base_url=fake.url) as client:
            with room.avatars_from(fake, join_after=10.0):
                await client.start_session(
                    avatar_id="face_1",
                    agent_identity=AGENT,
                    livekit_url=LIVEKIT["livekit_url"],
                    livekit_token=token,
                )
                await room.disconnect()
                clock.advance(10.0)
        return room, events

    room, events = with_fake(body)
    assert room.participants_on_server == {AVATAR}  # running, and nobody removed it
    assert AVATAR not in room.remote_participants
    assert not [e for e in events.seen if e[0] == "participant_connected"]


@pytest.mark.parametrize("join_after", [-1, float("inf"), float("nan"), "5"])
def test_join_after_is_a_finite_number_of_seconds(join_after: Any) -> None:
    async def body() -> None:
        room = StandInRoom(ROOM)
        with pytest.raises(ValueError, match="join_after"):
            room.avatars_from(FakeAvatario(), join_after=join_after)

    run(body)


def test_only_sessions_for_this_room_bring_an_avatar() -> None:
    async def body(fake: FakeServer) -> Any:
        elsewhere = StandInRoom("another-room", agent_identity=AGENT)
        room = StandInRoom(ROOM, agent_identity=AGENT)
        async with AsyncAvatarioClient(API_KEY, base_url=fake.url) as client:
            with room.avatars_from(fake) as avatars:
                avatar = new_avatar(client)
                await start(avatar, AgentSession(), elsewhere)  # the token names another room
                with pytest.raises(asyncio.TimeoutError, match="another-room") as caught:
                    await avatars.wait_for_sessions(timeout=0.2)
                await avatar.aclose()
        assert room.remote_participants == {}
        assert avatars.sessions == []
        return caught.value

    error = with_fake(body)
    assert "0 session(s) for room 'room-42'" in str(error)


def test_a_session_started_with_the_same_identity_replaces_the_avatar() -> None:
    async def body(fake: FakeServer) -> None:
        room = StandInRoom(ROOM, agent_identity=AGENT)
        events = Events(room)
        async with AsyncAvatarioClient(API_KEY, base_url=fake.url) as client:
            with room.avatars_from(fake) as avatars:
                for _ in range(2):
                    avatar = new_avatar(client)
                    await start(avatar, AgentSession(), room)
                    await avatar.aclose()
                await avatars.wait_for_sessions(2)
        first, second = avatars.sessions
        assert first.session_id != second.session_id
        assert [e for e in events.seen if e[0].startswith("participant_")] == [
            ("participant_connected", AVATAR),
            ("participant_active", AVATAR),
            ("participant_disconnected", AVATAR),
            ("participant_connected", AVATAR),
            ("participant_active", AVATAR),
        ]
        assert list(room.remote_participants) == [AVATAR]

    with_fake(body, honour_idempotency_key=False)


def test_a_closed_link_brings_no_more_avatars() -> None:
    async def body(fake: FakeServer) -> None:
        room = StandInRoom(ROOM, agent_identity=AGENT)
        async with AsyncAvatarioClient(API_KEY, base_url=fake.url) as client:
            link = room.avatars_from(fake)
            link.close()
            avatar = new_avatar(client)
            await start(avatar, AgentSession(), room)
            await avatar.aclose()
        assert link.sessions == []
        assert room.remote_participants == {}
        assert len(fake.sessions) == 1

    with_fake(body)


def test_a_session_announced_after_the_loop_closed_is_dropped_quietly() -> None:
    with run_fake_server(api_key=API_KEY) as fake:

        async def make() -> AvatarLink:
            return StandInRoom(ROOM).avatars_from(fake)

        link = asyncio.run(make())  # the room's event loop is closed from here on
        token = mint_avatar_token(
            livekit_api_key=LK_KEY,
            livekit_api_secret=LK_SECRET,
            room_name=ROOM,
            agent_identity=AGENT,
        )
        with AvatarioClient(API_KEY, base_url=fake.url) as client:
            result = client.start_session(
                avatar_id="face_1",
                agent_identity=AGENT,
                livekit_url=LIVEKIT["livekit_url"],
                livekit_token=token,
            )
        assert result.session_id
        assert fake.app.listener_errors == []
        assert link.sessions == []


# -- unknown outcomes, settled by the room (lost response) ------------------------------------


def test_a_lost_response_and_a_joining_avatar_mean_started() -> None:
    async def body(fake: FakeServer) -> Any:
        room = StandInRoom(ROOM, agent_identity=AGENT)
        async with AsyncAvatarioClient(API_KEY, base_url=fake.url) as client:
            with room.avatars_from(fake):
                avatar = new_avatar(client)
                result = await start(avatar, AgentSession(), room)
                await avatar.aclose()
        return result, fake.requests

    result, requests = with_fake(body, faults="lost")
    assert result.data == {"settled_by": "room_join", "outcome": "unknown"}
    assert len(requests) == 1  # settled by the room: not sent again


def test_an_avatar_that_never_joins_makes_the_resend_with_the_same_key() -> None:
    async def body(fake: FakeServer) -> Any:
        room = StandInRoom(ROOM, agent_identity=AGENT)
        async with AsyncAvatarioClient(API_KEY, base_url=fake.url) as client:
            with room.avatars_from(fake, join=False) as avatars:
                avatar = new_avatar(client, join_timeout=0.05)
                result = await start(avatar, AgentSession(), room)
                await avatar.aclose()
        return result, fake, avatars

    result, fake, avatars = with_fake(body, faults="lost")
    first, second = fake.requests
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"]
    assert result.session_id == fake.sessions[0]["session_id"]
    assert [s.session_id for s in avatars.sessions] == [result.session_id]
    assert result.attempts == 2


def test_no_attempts_left_and_no_avatar_is_the_original_error() -> None:
    async def body(fake: FakeServer) -> Any:
        room = StandInRoom(ROOM, agent_identity=AGENT)
        async with AsyncAvatarioClient(API_KEY, base_url=fake.url) as client:
            with room.avatars_from(fake, join=False):
                avatar = new_avatar(client, join_timeout=0.05, retry=RetryPolicy.no_retries())
                with pytest.raises(APIConnectionError) as caught:
                    await start(avatar, AgentSession(), room)
                await avatar.aclose()
        return caught.value

    error = with_fake(body, faults="lost")
    assert error.may_have_started


# -- the documented example and the example agent ---------------------------------------------


def _doc_blocks(heading: str) -> list[str]:
    text = (ROOT / "docs" / "livekit.md").read_text()
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return [str(block) for block in re.findall(r"^```python\n(.*?)^```", section, re.DOTALL | re.M)]


def test_the_documented_tests_run_unchanged() -> None:
    """The testing section's blocks, in order, as one test file: every test in it passes."""
    namespace: dict[str, Any] = {"__name__": "doc_test_example"}
    for block in _doc_blocks("Testing your agent without a LiveKit server"):
        exec(compile(block, "docs/livekit.md", "exec"), namespace)
    tests = [value for name, value in namespace.items() if name.startswith("test_")]
    assert len(tests) == 5  # joins and leaves, the session closes, twice, slow, never joins
    for test in tests:
        test()


def _example() -> Any:
    path = ROOT / "examples" / "livekit_agent.py"
    spec = importlib.util.spec_from_file_location("livekit_agent_example", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_example_agents_avatar_starts_joins_and_leaves(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="avatario-example")
    example = _example()

    async def body(fake: FakeServer) -> None:
        for name, value in {
            "AVATARIO_BASE_URL": fake.url,
            "AVATARIO_API_KEY": API_KEY,
            "AVATARIO_AVATAR_ID": "face_1",
            "LIVEKIT_URL": "wss://rooms.example.com",
            "LIVEKIT_API_KEY": LK_KEY,
            "LIVEKIT_API_SECRET": LK_SECRET,
        }.items():
            monkeypatch.setenv(name, value)
        room = StandInRoom(ROOM, agent_identity=AGENT)
        session: AgentSession[None] = AgentSession()
        with room.avatars_from(fake), room.job_context():
            avatar = await example.start_avatar(session, room)
            assert isinstance(avatar, AvatarSession)
            await avatar.wait_for_join(timeout=10)
            assert isinstance(session.output.audio, DataStreamAudioOutput)
            assert AVATAR in room.remote_participants
            await avatar.aclose()
            assert AVATAR not in room.remote_participants
        [started] = fake.sessions
        assert f"avatar started: session {started['session_id']}, 1 attempt(s)" in caplog.text

    with_fake(body)


def test_the_example_agent_carries_on_without_a_face(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    example = _example()

    async def body(fake: FakeServer) -> None:
        monkeypatch.setenv("AVATARIO_BASE_URL", fake.url)
        monkeypatch.setenv("AVATARIO_API_KEY", "sk_wrong_key")
        monkeypatch.setenv("AVATARIO_AVATAR_ID", "face_1")
        monkeypatch.setenv("LIVEKIT_URL", "wss://rooms.example.com")
        monkeypatch.setenv("LIVEKIT_API_KEY", LK_KEY)
        monkeypatch.setenv("LIVEKIT_API_SECRET", LK_SECRET)
        room = StandInRoom(ROOM, agent_identity=AGENT)
        session: AgentSession[None] = AgentSession()
        with room.avatars_from(fake), room.job_context():
            assert await example.start_avatar(session, room) is None
        assert session.output.audio is None  # the agent keeps its own voice
        assert room.remote_participants == {}

    with_fake(body)
    assert "no avatar, voice only" in caplog.text
    assert "sk_wrong_key" not in caplog.text


# -- without the extras -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "from avatario_wrapper.testing import StandInRoom",
        "import avatario_wrapper.testing.livekit",
    ],
)
def test_without_livekit_one_line_says_how_to_install_it(statement: str) -> None:
    code = "import sys\nsys.modules['livekit.agents'] = None\n" + statement
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ModuleNotFoundError: avatario_wrapper.testing.")
    assert "pip install '.[livekit,server]'" in last
