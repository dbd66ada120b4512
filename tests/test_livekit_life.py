"""The avatar's whole life in a LiveKit job (issue 27), through the public API only.

Real: livekit-agents (its `AgentSession`, started without a room where a close must happen,
its avatar base class, `DataStreamAudioOutput`, `fake_job_context`, `Plugin`, its worker's
start-up and its job process's own shutdown sequence), livekit-api's tokens, the fake
Avatario on a real 127.0.0.1 socket (verifying every avatar token), the OpenTelemetry SDK
exporting in memory.

Stand-in: the LiveKit room and its server API (`StandInRoom`, its `job_context()` and
`end_job()`): no LiveKit server runs here. Time: the client's and the room's `FakeClock`, so
an avatar that takes 25 s to join costs no real second.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime
import logging
import pickle
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

pytest.importorskip("livekit.agents")

from livekit import api, rtc
from livekit.agents import AgentSession, Plugin
from livekit.agents.voice import Agent
from livekit.agents.voice.avatar import DataStreamAudioOutput

from avatario_wrapper import (
    APIConnectionError,
    AsyncAvatarioClient,
    AuthenticationError,
    AvatarioConfigError,
    AvatarioError,
    RetryPolicy,
    StartSessionResult,
)
from avatario_wrapper.livekit import AvatarJoinTimeoutError, AvatarSession
from avatario_wrapper.testing import (
    FakeClock,
    FakeServer,
    ParticipantRemoval,
    StandInRoom,
    run_fake_server,
)

from .spec_helpers import ROOT
from .test_livekit import AGENT, API_KEY, AVATAR, LK_KEY, LK_SECRET, LK_URL
from .test_livekit import ROOM_NAME as ROOM

pytestmark = pytest.mark.usefixtures("no_agent_env")

LIVEKIT = {"livekit_url": LK_URL, "livekit_api_key": LK_KEY, "livekit_api_secret": LK_SECRET}


def with_fake(
    body: Callable[[FakeServer], Awaitable[Any]], *, faults: str = "", honour: bool = True
) -> Any:
    """`body(fake)` in an event loop, with a fake Avatario on 127.0.0.1 that verifies every
    avatar token; `honour=False` plays a server that ignores Idempotency-Key."""

    async def main() -> Any:
        async with run_fake_server(
            api_key=API_KEY,
            faults=faults,
            honour_idempotency_key=honour,
            livekit_api_key=LK_KEY,
            livekit_api_secret=LK_SECRET,
        ) as fake:
            return await body(fake)

    return asyncio.run(main())


def client_for(fake: FakeServer, clock: FakeClock | None = None, **options: Any) -> Any:
    return AsyncAvatarioClient(API_KEY, base_url=fake.url, clock=clock, **options)


async def until(condition: Callable[[], object], *, timeout: float = 5.0) -> None:
    """Let the loop run until `condition()` holds (a background task's work, e.g. a removal
    asked for from an event handler); a loaded-machine bound, never a timing assertion."""
    ends = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < ends, "the condition never held"
        await asyncio.sleep(0.001)


def ours_at_warning(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """Our WARNINGs and worse (livekit-agents logs its own, e.g. an audio output whose room
    disconnected before its avatar was ready)."""
    return [
        r
        for r in caplog.records
        if r.levelno >= logging.WARNING and r.name.startswith("avatario_wrapper")
    ]


@dataclass
class Stage:
    """One agent's room with an avatar to start: what `stage` sets up."""

    fake: FakeServer
    room: StandInRoom
    clock: FakeClock | None
    avatar: AvatarSession
    session: AgentSession[None]

    async def start(self, **livekit: Any) -> StartSessionResult:
        return await self.avatar.start(self.session, room=self.room, **{**LIVEKIT, **livekit})


@contextlib.asynccontextmanager
async def stage(
    fake: FakeServer,
    *,
    virtual: bool = False,
    link: bool = True,
    join: bool = True,
    join_after: float = 0.0,
    job: bool = False,
    started: bool = False,
    client_options: dict[str, Any] | None = None,
    **avatar_options: Any,
) -> AsyncIterator[Stage]:
    """The room (its time a `FakeClock` when `virtual`), the fake's avatars joining it
    (`link`, `join`, `join_after`), a job for it (`job`), an `AgentSession` (`started`: a real
    one started without a room or models, so that its aclose() runs livekit-agents' real close
    and emits ``close``), and an `AvatarSession` sending to the fake through its own client."""
    clock = FakeClock() if virtual else None
    room = StandInRoom(ROOM, agent_identity=AGENT, clock=clock)
    with contextlib.ExitStack() as stack:
        if link:
            stack.enter_context(room.avatars_from(fake, join=join, join_after=join_after))
        if job:
            stack.enter_context(room.job_context())
        session: AgentSession[None] = AgentSession()
        if started:
            await session.start(Agent(instructions="test"), record=False)
        async with client_for(fake, clock, **(client_options or {})) as client:
            avatar = AvatarSession(avatar_id="face_1", client=client, **avatar_options)
            yield Stage(fake, room, clock, avatar, session)


# -- one avatar per AvatarSession ---------------------------------------------------------------


def test_a_second_start_sends_nothing_and_returns_the_first_result(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="avatario_wrapper")

    async def body(fake: FakeServer) -> Any:
        async with stage(fake) as it:
            first = await it.start()
            second = await it.start()
            third = await it.avatar.start(it.session, room=it.room)  # not even checked again
            await it.avatar.aclose()
        return first, second, third

    first, second, third = with_fake(body, honour=False)
    assert first is second is third
    assert "called again: one avatar per AvatarSession, so nothing is sent" in caplog.text


def test_concurrent_starts_are_one_session_on_a_server_that_ignores_the_key() -> None:
    async def body(fake: FakeServer) -> Any:
        async with stage(fake) as it:
            results = await asyncio.gather(*(it.start() for _ in range(5)))
            await it.avatar.aclose()
        return results, fake

    results, fake = with_fake(body, honour=False)
    assert all(result is results[0] for result in results)
    assert [s["session_id"] for s in fake.sessions] == [results[0].session_id]
    assert len(fake.requests) == 1


def test_a_second_start_for_another_room_or_agent_session_is_a_config_error() -> None:
    async def body(fake: FakeServer) -> Any:
        async with stage(fake, link=False) as it:
            await it.start()
            errors = []
            for other_session, other_room in (
                (it.session, StandInRoom("room-43", agent_identity=AGENT)),
                (AgentSession(), it.room),
            ):
                with pytest.raises(AvatarioConfigError) as caught:
                    await it.avatar.start(other_session, room=other_room, **LIVEKIT)
                errors.append(caught.value)
            await it.avatar.aclose()
        return errors, fake

    errors, fake = with_fake(body, honour=False)
    assert [error.field for error in errors] == ["room", "agent_session"]
    assert "one avatar per AvatarSession" in str(errors[0])
    assert "aclose()" in str(errors[0])
    assert len(fake.requests) == 1


def test_a_second_start_after_a_failure_raises_it_again_and_sends_nothing() -> None:
    async def body(fake: FakeServer) -> Any:
        room = StandInRoom(ROOM, agent_identity=AGENT)
        session: AgentSession[None] = AgentSession()
        avatar = AvatarSession(avatar_id="face_1", api_key="sk_wrong", api_url=fake.url)
        caught = []
        for _ in range(2):
            with pytest.raises(AuthenticationError) as error:
                await avatar.start(session, room=room, **LIVEKIT)
            caught.append(error.value)
        await avatar.aclose()
        return caught, fake

    (first, second), fake = with_fake(body)
    assert first is second
    assert len(fake.requests) == 1


def test_a_configuration_error_claims_nothing_so_a_fixed_start_sends() -> None:
    async def body(fake: FakeServer) -> Any:
        async with stage(fake, link=False) as it:
            with pytest.raises(AvatarioConfigError) as caught:
                await it.avatar.start(it.session, room=it.room, livekit_url=LIVEKIT["livekit_url"])
            requests_before = len(fake.requests)
            result = await it.start()
            await it.avatar.aclose()
        return caught.value, requests_before, result, fake

    error, requests_before, result, fake = with_fake(body)
    assert error.field == "livekit"
    assert requests_before == 0
    assert result.session_id == fake.sessions[0]["session_id"]


def test_aclose_then_start_is_a_new_avatar() -> None:
    async def body(fake: FakeServer) -> Any:
        results = []
        async with stage(fake, job=True) as it:
            for _ in range(2):
                results.append(await it.start())
                await it.avatar.wait_for_join(timeout=5)
                await it.avatar.aclose()
        return results, it.room, fake

    (first, second), room, fake = with_fake(body)
    assert first.session_id != second.session_id
    assert len(fake.sessions) == 2
    assert [r.found for r in room.removals] == [True, True]
    assert room.participants_on_server == frozenset()


def test_when_the_first_start_is_cancelled_a_waiting_one_is_told_so() -> None:
    async def body(fake: FakeServer) -> Any:
        async with stage(fake, link=False, client_options={"timeout": 30.0}) as it:
            first = asyncio.create_task(it.start())
            await until(lambda: len(fake.requests) == 1)  # sent; the fake stalls
            second = asyncio.create_task(it.start())
            await asyncio.sleep(0.01)
            first.cancel()
            with pytest.raises(asyncio.CancelledError):
                await first
            with pytest.raises(AvatarioError) as caught:
                await second
            await it.avatar.aclose()
        return caught.value, fake

    error, fake = with_fake(body, faults="stall")
    assert type(error) is AvatarioError
    assert "was cancelled before it knew whether the avatar started" in str(error)
    assert len(fake.requests) == 1


# -- a slow avatar after a lost answer ----------------------------------------------------------


@pytest.mark.parametrize("fault", ["lost", "lost-close", "lost-stall"])
@pytest.mark.parametrize("join_after", [8.0, 25.0])
def test_an_avatar_joining_8_to_25_s_after_a_lost_answer_is_one_session(
    fault: str, join_after: float
) -> None:
    """On a server that ignores Idempotency-Key a resend is a second avatar: the room is
    watched as long as an avatar may take to join (30 s, livekit-agents' wait_for_join), on
    the client's clock, so the slow avatar settles the call and nothing is resent."""

    async def body(fake: FakeServer) -> Any:
        # lost-stall: the attempt's own (real) timeout ends it; short here.
        options = {"timeout": 0.5}
        async with stage(fake, virtual=True, join_after=join_after, client_options=options) as it:
            result = await it.start()
            await it.avatar.wait_for_join(timeout=5)
            await it.avatar.aclose()
        return result, it.clock, fake

    result, clock, fake = with_fake(body, faults=fault, honour=False)
    assert len(fake.sessions) == 1
    assert len(fake.requests) == 1
    assert result.data == {"settled_by": "room_join", "outcome": "unknown"}
    assert clock.now == join_after  # the watch ended when the avatar joined


def test_the_room_watch_is_bounded_by_the_calls_deadline(caplog: pytest.LogCaptureFixture) -> None:
    async def body(fake: FakeServer) -> Any:
        policy = {"retry": RetryPolicy(max_elapsed=12.0)}
        async with stage(fake, virtual=True, join_after=20.0, client_options=policy) as it:
            with pytest.raises(APIConnectionError) as caught:
                await it.start()
            await it.avatar.aclose()
        return caught.value, it.clock, fake

    error, clock, fake = with_fake(body, faults="lost", honour=False)
    assert error.may_have_started
    assert clock.sleeps == [12.0]  # the watch: what was left of max_elapsed, not 30 s
    assert "did not join within 12 s; not sent again" in caplog.text
    assert len(fake.requests) == 1


def test_the_policy_avatar_session_makes_leaves_join_timeout_for_the_room() -> None:
    async def main() -> list[float]:
        deadlines = []
        for options in ({}, {"join_timeout": 45.0}, {"retry": RetryPolicy(max_elapsed=20)}):
            avatar = AvatarSession(avatar_id="face_1", api_key=API_KEY, **options)
            client, _ = avatar._client_for_call()
            deadlines.append(client.retry.max_elapsed)
            await client.aclose()
        return deadlines

    # conn_options' calls (30 s) plus the join wait; a given policy is used as it is.
    assert asyncio.run(main()) == [60.0, 75.0, 20.0]


# -- waiting for the join on success ---------------------------------------------------------


def test_by_default_start_returns_without_waiting_for_the_avatar() -> None:
    async def body(fake: FakeServer) -> Any:
        async with stage(fake, virtual=True, join_after=5.0) as it:
            await it.start()
            present = AVATAR in it.room.remote_participants
            await it.avatar.aclose()
        return present, it.session.output.audio

    present, audio = with_fake(body)
    assert not present  # the old plugin's non-blocking start
    assert isinstance(audio, DataStreamAudioOutput)


def test_wait_for_join_returns_once_the_avatar_publishes_video() -> None:
    async def body(fake: FakeServer) -> Any:
        async with stage(fake, virtual=True, join_after=3.0, wait_for_join=True) as it:
            result = await it.start()
            publications = it.room.remote_participants[AVATAR].track_publications.values()
            video = [p.kind for p in publications]
            await it.avatar.aclose()
        return result, it.clock, video, it.session.output.audio

    result, clock, video, audio = with_fake(body)
    assert result.session_id
    assert clock.now == 3.0
    assert rtc.TrackKind.KIND_VIDEO in video
    assert isinstance(audio, DataStreamAudioOutput)


def test_wait_for_join_fails_with_a_typed_error_that_says_what_to_check() -> None:
    async def body(fake: FakeServer) -> Any:
        async with stage(fake, virtual=True, join=False, job=True, wait_for_join=True) as it:
            with pytest.raises(AvatarJoinTimeoutError) as caught:
                await it.start()
            audio = it.session.output.audio
            await it.avatar.aclose()
        return caught.value, it.clock, audio, it.room, fake

    error, clock, audio, room, fake = with_fake(body)
    assert isinstance(error, AvatarioError)
    assert isinstance(error, asyncio.TimeoutError)  # as livekit-agents' wait_for_join raises
    assert isinstance(error.result, StartSessionResult)
    assert error.result.session_id == fake.sessions[0]["session_id"]
    assert (error.identity, error.room, error.seconds) == (AVATAR, ROOM, 30.0)
    for check in ("within 30 s", "LIVEKIT_URL", "LIVEKIT_API_KEY", "avatar id"):
        assert check in str(error)
    assert clock.now == 30.0
    assert audio is None  # the agent keeps its own voice
    assert [(r.identity, r.found) for r in room.removals] == [(AVATAR, False)]
    for again in (pickle.loads(pickle.dumps(error)), copy.deepcopy(error)):
        assert str(again) == str(error)
        assert again.result == error.result


# -- ended with the agent ---------------------------------------------------------------------


def test_the_agent_session_closing_removes_the_avatar_while_the_room_is_connected() -> None:
    async def body(fake: FakeServer) -> Any:
        async with stage(fake, job=True, started=True) as it:
            await it.start()
            await it.avatar.wait_for_join(timeout=5)
            await it.session.aclose()  # the agent ends: livekit-agents emits "close"
            await until(lambda: it.room.removals)
            gone_at_close = AVATAR not in it.room.remote_participants
            await it.room.end_job()  # then the job's shutdown: no second removal
        return it.room, gone_at_close

    room, gone_at_close = with_fake(body)
    assert room.removals == [
        ParticipantRemoval(room=ROOM, identity=AVATAR, found=True, agent_connected=True)
    ]
    assert gone_at_close
    assert room.participants_on_server == frozenset()


def test_the_job_shutdown_removes_the_avatar_by_room_name_after_the_room_disconnected(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="avatario_wrapper.livekit")

    async def body(fake: FakeServer) -> Any:
        async with stage(fake, job=True) as it:
            await it.start()
            await it.avatar.wait_for_join(timeout=5)
            await it.room.end_job()  # livekit-agents 1.8.9: disconnect, then callbacks
        return it.room

    room = with_fake(body)
    assert room.removals == [
        ParticipantRemoval(room=ROOM, identity=AVATAR, found=True, agent_connected=False)
    ]
    assert not room.isconnected()
    assert room.participants_on_server == frozenset()  # nothing left running
    assert "removed the Avatario avatar 'avatario-avatar-agent' from room 'room-42'" in caplog.text


def test_livekit_agents_own_job_shutdown_removes_the_avatar_once() -> None:
    """livekit-agents 1.8.9's own shutdown sequence (``_JobProc._shutdown_job``: close the
    AgentSession, on_session_end, disconnect the room, then the shutdown callbacks) run on the
    stand-in room: a private reach of this test only, pinned to the locked version."""
    from livekit.agents import get_job_context
    from livekit.agents.ipc import job_proc_lazy_main as job_main
    from livekit.agents.job import JobExecutorType

    class Channel:  # the IPC channel to the worker: what the job says is dropped here
        async def send(self, message: object) -> None:
            return None

    async def body(fake: FakeServer) -> Any:
        async with stage(fake, job=True, started=True) as it:
            await it.start()
            await it.avatar.wait_for_join(timeout=5)
            proc = job_main._JobProc(
                lambda _: None,
                lambda _: None,
                None,
                session_end_timeout=10.0,
                executor_type=JobExecutorType.THREAD,
            )
            proc._job_ctx = get_job_context()
            proc._room = it.room
            proc._client = Channel()  # type: ignore[assignment]
            entrypoint = asyncio.create_task(asyncio.sleep(0))
            await entrypoint
            await proc._shutdown_job(
                entrypoint, job_main._ShutdownInfo(user_initiated=True, reason="test")
            )
        return it.room

    room = with_fake(body)
    assert [(r.identity, r.found) for r in room.removals] == [(AVATAR, True)]
    assert not room.isconnected()
    assert room.participants_on_server == frozenset()


def test_an_avatar_already_gone_is_success(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="avatario_wrapper.livekit")

    async def body(fake: FakeServer) -> Any:
        async with stage(fake, job=True) as it:
            await it.start()
            await it.avatar.wait_for_join(timeout=5)
            it.room.remove_participant(AVATAR)  # it left by itself
            await it.room.end_job()
        return it.room

    room = with_fake(body)
    assert [(r.identity, r.found) for r in room.removals] == [(AVATAR, False)]
    assert "was no longer in room 'room-42' (aclose()): nothing to remove" in caplog.text
    assert not ours_at_warning(caplog)


@pytest.mark.parametrize(
    ("fault", "said"),
    [
        (api.TwirpError("unavailable", "try again\nlater", status=503), "unavailable: try"),
        (ConnectionResetError("reset by peer"), "ConnectionResetError: reset by peer"),
        ("hang", "LiveKit did not answer within 0.05 s"),
    ],
)
def test_a_failed_removal_is_logged_and_never_raised_into_the_shutdown(
    fault: Any, said: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def body(fake: FakeServer) -> Any:
        async with stage(fake, job=True, removal_timeout=0.05) as it:
            await it.start()
            await it.avatar.wait_for_join(timeout=5)
            it.room.removal_fault = fault
            began = time.monotonic()
            await it.room.end_job()  # returns: nothing raised into it
            took = time.monotonic() - began
        return it.room, took

    room, took = with_fake(body)
    assert len(room.removals) == 1
    assert took < 10  # bounded (a loaded-machine bound; the removal's own is 0.05 s)
    [warning] = ours_at_warning(caplog)
    message = warning.getMessage()
    assert "could not remove the Avatario avatar 'avatario-avatar-agent' from room" in message
    assert said in message
    assert "\n" not in message  # LiveKit's text as one line
    assert room.participants_on_server == {AVATAR}  # what the docs say is not guaranteed


def test_nothing_is_removed_when_no_session_can_have_started() -> None:
    async def body(fake: FakeServer) -> Any:
        room = StandInRoom(ROOM, agent_identity=AGENT)
        with room.job_context():
            avatar = AvatarSession(avatar_id="face_1", api_key="sk_wrong", api_url=fake.url)
            with pytest.raises(AuthenticationError):
                await avatar.start(AgentSession(), room=room, **LIVEKIT)
            await room.end_job()
        return room

    assert with_fake(body).removals == []


def test_max_duration_removes_the_avatar_that_long_after_it_joined(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="avatario_wrapper.livekit")

    async def body(fake: FakeServer) -> Any:
        options = {"max_duration": 600, "wait_for_join": True}
        async with stage(fake, virtual=True, join_after=2.0, job=True, **options) as it:
            await it.start()
            await until(lambda: it.room.removals)
            at = it.clock.now if it.clock is not None else None
            await it.room.end_job()
        return it.room, at

    room, at = with_fake(body)
    assert at == 602.0  # joined at 2 s, removed 600 s later
    assert [(r.identity, r.found, r.agent_connected) for r in room.removals] == [
        (AVATAR, True, True)
    ]
    assert "reached max_duration (600 s): removing it" in caplog.text


def test_outside_a_job_nothing_can_remove_the_avatar_and_the_log_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="avatario_wrapper.livekit")

    async def body(fake: FakeServer) -> Any:
        async with stage(fake) as it:
            await it.start()
            await it.avatar.aclose()
        return it.room

    room = with_fake(body)
    assert room.removals == []
    assert AVATAR in room.participants_on_server
    assert "started outside a LiveKit job" in caplog.text


# -- the URL, the token and the rest -------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        ("https://my-project.livekit.cloud", "wss://my-project.livekit.cloud"),
        ("HTTPS://my-project.livekit.cloud/x", "wss://my-project.livekit.cloud/x"),
        ("http://127.0.0.1:7880", "ws://127.0.0.1:7880"),
        ("wss://my-project.livekit.cloud", "wss://my-project.livekit.cloud"),
    ],
)
def test_an_http_livekit_url_is_sent_as_websocket_with_a_six_hour_token(
    given: str, sent: str
) -> None:
    async def body(fake: FakeServer) -> Any:
        async with stage(fake, link=False) as it:
            minted = time.time()
            await it.start(livekit_url=given)
            await it.avatar.aclose()
        return fake.requests[0].json()["livekit"], minted

    livekit, minted = with_fake(body)
    assert livekit["url"] == sent
    claims = api.TokenVerifier(LK_KEY, LK_SECRET).verify(livekit["token"])
    assert claims.video is not None
    assert claims.video.room == ROOM
    expires = _expiry(livekit["token"])
    assert expires >= minted + 6 * 3600 - 5


def _expiry(token: str) -> float:
    import jwt  # livekit-api's own dependency

    payload = jwt.decode(token, LK_SECRET, algorithms=["HS256"], options={"verify_aud": False})
    return float(payload["exp"])


def test_the_token_lives_for_max_duration_when_longer_and_a_shorter_one_is_warned(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def body(fake: FakeServer) -> list[float]:
        expiries = []
        for options in (
            {"max_duration": 8 * 3600},
            {"token_ttl": datetime.timedelta(minutes=10)},
        ):
            async with stage(fake, link=False, **options) as it:
                await it.start()
                await it.avatar.aclose()
            expiries.append(_expiry(fake.requests[-1].json()["livekit"]["token"]) - time.time())
        return expiries

    long, short = with_fake(body)
    assert long >= 8 * 3600 + 30 - 60
    assert short <= 600
    assert "token_ttl=0:10:00 is shorter than 6:00:00" in caplog.text


def test_a_plain_livekit_url_beyond_loopback_needs_allow_insecure_http() -> None:
    async def body(fake: FakeServer) -> Any:
        room = StandInRoom(ROOM, agent_identity=AGENT)
        docker = {**LIVEKIT, "livekit_url": "http://livekit:7880"}  # a docker network's name
        session: AgentSession[None] = AgentSession()
        refused = AvatarSession(avatar_id="face_1", api_key=API_KEY, api_url=fake.url)
        with pytest.raises(AvatarioConfigError) as caught:
            await refused.start(session, room=room, **docker)
        registered = refused._room  # nothing registered either
        allowed = AvatarSession(
            avatar_id="face_1", api_key=API_KEY, api_url=fake.url, allow_insecure_http=True
        )
        await allowed.start(session, room=room, **docker)
        await allowed.aclose()
        return caught.value, registered, fake

    error, registered, fake = with_fake(body)
    assert error.field == "livekit_url"
    assert "allow_insecure_http=True" in str(error)
    assert registered is None
    [request] = fake.requests
    assert request.json()["livekit"]["url"] == "ws://livekit:7880"


def test_a_given_client_excludes_the_settings_of_the_client_avatar_session_makes() -> None:
    async def main() -> list[str]:
        fields = []
        async with AsyncAvatarioClient(API_KEY, base_url="https://avatario.test") as client:
            for options in ({"api_url": "https://x.test"}, {"allow_insecure_http": True}):
                with pytest.raises(AvatarioConfigError) as caught:
                    AvatarSession(avatar_id="face_1", client=client, **options)
                fields.append(caught.value.field)
        return fields

    assert asyncio.run(main()) == ["api_url", "allow_insecure_http"]


def test_wait_playback_start_and_clear_buffer_timeout_reach_the_audio_output() -> None:
    async def body(fake: FakeServer) -> Any:
        outputs = []
        for options in ({}, {"wait_playback_start": True, "clear_buffer_timeout": 0.5}):
            async with stage(fake, link=False, **options) as it:
                await it.start()
                outputs.append(it.session.output.audio)
                await it.avatar.aclose()
        return outputs

    default, given = with_fake(body)
    # livekit-agents keeps them as these attributes (1.8.9); its defaults are False and 2.0.
    assert (default._wait_playback_start, default._clear_buffer_timeout) == (False, 2.0)
    assert (given._wait_playback_start, given._clear_buffer_timeout) == (True, 0.5)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"max_duration": 0}, "max_duration"),
        ({"wait_for_join": "yes"}, "wait_for_join"),
        ({"removal_timeout": 0}, "removal_timeout"),
        ({"clear_buffer_timeout": -1}, "clear_buffer_timeout"),
        ({"token_ttl": 0}, "ttl"),
    ],
)
def test_bad_life_settings_are_config_errors(options: dict[str, Any], field: str) -> None:
    with pytest.raises(AvatarioConfigError) as caught:
        AvatarSession(avatar_id="face_1", api_key=API_KEY, **options)
    assert caught.value.field == field


# -- a fleet of jobs in an outage -----------------------------------------------------------------


#: Retries at once and no ride-out, so that the budget alone decides, quickly.
OUTAGE_POLICY = RetryPolicy(max_attempts=3, initial_delay=0.001, max_delay=0.002, ride_out=0)


@pytest.mark.parametrize(
    ("store", "env", "most", "least"),
    [
        (None, None, 1.3, 1.0),  # the default: the host's budget, shared by every job
        (None, "process", 3.0, 2.0),  # AVATARIO_RETRY_BUDGET_URL names a budget per client
        ("process", None, 3.0, 2.0),  # so does the argument
    ],
)
def test_avatar_sessions_of_a_fleet_share_the_hosts_budget_by_default(
    store: str | None,
    env: str | None,
    most: float,
    least: float,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each AvatarSession makes a client of its own, as each job of a worker does; in a
    # sustained outage (every start answered 503) they cost Avatario at most 1.3 requests per
    # call between them. (One process here; tests/test_fleet.py shows the host's store shared
    # by 40 real job processes.)
    if env is not None:
        monkeypatch.setenv("AVATARIO_RETRY_BUDGET_URL", env)
    calls = 40

    async def body(fake: FakeServer) -> int:
        room = StandInRoom(ROOM, agent_identity=AGENT)
        for _ in range(calls):
            avatar = AvatarSession(
                avatar_id="face_1",
                api_key=API_KEY,
                api_url=fake.url,
                retry=OUTAGE_POLICY,
                retry_budget_store=store,
            )
            with pytest.raises(AvatarioError):
                await avatar.start(AgentSession(), room=room, **LIVEKIT)
            await avatar.aclose()
        return len(fake.requests)

    requests = with_fake(body, faults="503*1000")
    assert least * calls <= requests <= most * calls


# -- registered as a livekit-agents plugin -----------------------------------------------------


def test_importing_the_livekit_module_registers_the_plugin_once() -> None:
    import avatario_wrapper
    import avatario_wrapper.livekit

    ours = [p for p in Plugin.registered_plugins if p.title == "avatario_wrapper.livekit"]
    assert len(ours) == 1
    [plugin] = ours
    assert plugin.version == avatario_wrapper.__version__
    assert plugin.package == "avatario_wrapper.livekit"  # what a forkserver worker preloads
    assert plugin.logger is logging.getLogger("avatario_wrapper")  # --log-level sets it


def test_a_plain_import_registers_nothing_and_an_import_off_the_main_thread_works() -> None:
    code = (
        "import sys, threading, avatario_wrapper\n"
        "assert 'livekit' not in sys.modules\n"
        "done = []\n"
        "thread = threading.Thread(target=lambda: done.append(__import__("
        "'avatario_wrapper.livekit')))\n"
        "thread.start(); thread.join()\n"
        "assert done, 'the import failed off the main thread'\n"
        "from livekit.agents import Plugin\n"
        "assert [p.title for p in Plugin.registered_plugins] == [], Plugin.registered_plugins\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)


WORKER = """
import asyncio, logging, sys
import avatario_wrapper.livekit
from livekit.agents import AgentServer

lines = []
class Keep(logging.Handler):
    def emit(self, record):
        lines.append((record.getMessage(), getattr(record, "plugin", None),
                      getattr(record, "version", None)))
logging.getLogger("livekit.agents").addHandler(Keep())
logging.getLogger("livekit.agents").setLevel(logging.INFO)

async def main():
    server = AgentServer(num_idle_processes=0, host="127.0.0.1", port=0,
                         ws_url="ws://127.0.0.1:9", api_key="k", api_secret="s")

    @server.rtc_session()
    async def entrypoint(ctx):
        raise AssertionError("no job runs here")

    run = asyncio.create_task(server.run(unregistered=True))
    for _ in range(2000):
        if any(line[0] == "plugin registered" for line in lines):
            break
        await asyncio.sleep(0.01)
    await server.aclose()
    await asyncio.wait_for(run, 30)

asyncio.run(main())
print([line for line in lines if line[0] == "plugin registered"])
"""


def test_the_worker_logs_the_plugin_line_at_start() -> None:
    done = subprocess.run(
        [sys.executable, "-c", WORKER],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        timeout=120,
    )
    import avatario_wrapper

    expected = ("plugin registered", "avatario_wrapper.livekit", avatario_wrapper.__version__)
    assert repr([expected]) == done.stdout.strip().splitlines()[-1]
