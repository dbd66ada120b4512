"""The avatar in the room: whether it joined, waits for it on the client's clock, and a second
avatar seen under the same identity.

`AvatarPresence` follows one avatar identity in one room from `AvatarSession.start` until
`aclose`. It serves the call flow's room watch (`AvatarJoin`, the flow's `RoomWatch`: joined
means started), the optional wait for the avatar on the success path (joined *and* publishing
video, what the base class's ``wait_for_join`` and the agent's audio output wait for), and it
says so in a WARNING and a span event when a second avatar joins under the identity (LiveKit
then evicts the first: two sessions were started for one `AvatarSession`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from livekit import rtc

from .. import _telemetry
from .._operations import StartSessionResult
from .._text import one_line
from ..errors import APIError, AvatarioError, Outcome
from ._spans import JOIN_WAIT_SPAN, SECOND_AVATAR_EVENT, EventSpans

if TYPE_CHECKING:
    from .._clock import Clock

logger: logging.Logger = logging.getLogger("avatario_wrapper.livekit")

#: `StartSessionResult.data["settled_by"]` when the room, not an HTTP answer, said it started.
SETTLED_BY_ROOM_JOIN = "room_join"


class AvatarJoinTimeoutError(AvatarioError, asyncio.TimeoutError):
    """`start` with ``wait_for_join=True``: Avatario accepted the call, but its avatar did not
    join the room with a video track within ``join_timeout``.

    `result` is the call's `StartSessionResult` (a session was started); `identity`, `room`
    and `seconds` say what was waited for. The agent's audio is not routed to the avatar. The
    avatar stays this `AvatarSession`'s: it is removed when the agent ends (or by `aclose()`).
    Also an `asyncio.TimeoutError`, as livekit-agents' own ``wait_for_join`` raises.
    """

    def __init__(self, result: StartSessionResult, *, identity: str, room: str, seconds: float):
        self.result = result
        self.identity = identity
        self.room = room
        self.seconds = seconds
        session = one_line(result.session_id or "with no session id")
        super().__init__(
            f"Avatario started session {session}, but its avatar {one_line(identity)!r} did "
            f"not join room {one_line(room)!r} with a video track within {seconds:g} s: check "
            "that the LiveKit URL given to start() (LIVEKIT_URL) is the server this agent is "
            "in, that the LiveKit API key and secret (LIVEKIT_API_KEY / LIVEKIT_API_SECRET) are "
            "that server's (they sign the avatar's token), and that the avatar id exists in "
            "your Avatario account; the avatar is removed when the agent ends, or by aclose()"
        )


def settled(error: APIError, attempts: int) -> StartSessionResult:
    """The result of a call whose answer was lost but whose avatar joined the room."""
    # A 2xx with a bad body keeps its real status; otherwise no HTTP answer said "started".
    status = int(getattr(error, "status_code", 0)) if error.outcome is Outcome.STARTED else 0
    return StartSessionResult(
        session_id=None,
        data={"settled_by": SETTLED_BY_ROOM_JOIN, "outcome": error.outcome.value},
        request_id=getattr(error, "request_id", None),
        attempts=attempts,
        status_code=status,
        idempotency_key=error.idempotency_key,
    )


class _Waiter:
    __slots__ = ("outcome", "sleeper", "video")

    def __init__(self, outcome: asyncio.Future[bool | None], video: bool) -> None:
        self.outcome = outcome
        self.video = video
        self.sleeper: asyncio.Task[None] | None = None


class AvatarPresence:
    """One avatar identity in one room, followed from `attach` to `detach`."""

    def __init__(
        self,
        room: rtc.Room,
        identity: str,
        spans: EventSpans,
        *,
        on_join: Callable[[], object] | None = None,
    ) -> None:
        self._room = room
        self._identity = identity
        self._spans = spans
        self._on_join = on_join
        self._waiters: list[_Waiter] = []
        self._present = False  # a participant with the identity is in the room now
        self._replaced = False  # the last one left because another took its identity
        self.joins = 0  # how many times the identity joined while followed
        self._handlers: dict[str, Callable[..., None]] = {
            "participant_connected": self._connected,
            "participant_disconnected": self._disconnected,
            "track_published": self._published,
            "connection_state_changed": self._state_changed,
        }

    def attach(self) -> None:
        self._present = self._identity in self._room.remote_participants
        for event, handler in self._handlers.items():
            self._room.on(event, handler)  # type: ignore[arg-type]

    def detach(self) -> None:
        for event, handler in self._handlers.items():
            self._room.off(event, handler)  # type: ignore[arg-type]
        for waiter in list(self._waiters):
            _resolve(waiter, None)

    # -- waiting ---------------------------------------------------------------------------

    def ready(self, *, video: bool) -> bool:
        participant = self._room.remote_participants.get(self._identity)
        if participant is None:
            return False
        return not video or any(
            p.kind == rtc.TrackKind.KIND_VIDEO for p in participant.track_publications.values()
        )

    async def wait(self, seconds: float, clock: Clock, *, video: bool) -> bool | None:
        """Whether the avatar is in the room (with `video`: publishing a video track) within
        `seconds` on `clock`; None when the room cannot tell (not connected, or it
        disconnects while waiting). Traced as a span ``avatario.avatar_join_wait``."""
        tracer = _telemetry.current_tracer()
        if tracer is None:
            return await self._wait(seconds, clock, video)
        began = clock.monotonic()
        with tracer.start_as_current_span(
            JOIN_WAIT_SPAN,
            attributes={
                "avatario.join_wait.timeout": seconds,
                "avatario.join_wait.for": "video" if video else "participant",
            },
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            joined = await self._wait(seconds, clock, video)
            span.set_attributes(
                {
                    "avatario.join_wait.result": "joined"
                    if joined
                    else "room_cannot_tell"
                    if joined is None
                    else "not_joined",
                    "avatario.join_wait.duration": clock.monotonic() - began,
                }
            )
            return joined

    async def _wait(self, seconds: float, clock: Clock, video: bool) -> bool | None:
        if not self._room.isconnected():
            return None
        if self.ready(video=video):
            return True
        loop = asyncio.get_running_loop()
        waiter = _Waiter(loop.create_future(), video)
        # The time runs on the client's clock, so a test's FakeClock plays a slow avatar.
        waiter.sleeper = sleeper = loop.create_task(clock.asleep(seconds))
        sleeper.add_done_callback(lambda task: _timed_out(waiter, task))
        self._waiters.append(waiter)
        try:
            return await waiter.outcome
        finally:
            self._waiters.remove(waiter)
            sleeper.cancel()

    def _settle_waiters(self) -> None:
        connected = self._room.isconnected()
        for waiter in list(self._waiters):
            if not connected:
                _resolve(waiter, None)
            elif self.ready(video=waiter.video):
                _resolve(waiter, True)

    # -- the room's events -------------------------------------------------------------------

    def _connected(self, participant: rtc.RemoteParticipant) -> None:
        if participant.identity != self._identity:
            return
        if self._present or self._replaced:
            self._second_avatar()
        self._present, self._replaced = True, False
        self.joins += 1
        if self._on_join is not None:
            self._on_join()
        self._settle_waiters()

    def _disconnected(self, participant: rtc.RemoteParticipant) -> None:
        if participant.identity != self._identity:
            return
        self._present = False
        self._replaced = participant.disconnect_reason == rtc.DisconnectReason.DUPLICATE_IDENTITY

    def _published(self, publication: rtc.RemoteTrackPublication, participant: Any) -> None:
        if getattr(participant, "identity", None) == self._identity:
            self._settle_waiters()

    def _state_changed(self, state: rtc.ConnectionState.ValueType) -> None:
        if state == rtc.ConnectionState.CONN_DISCONNECTED:
            self._settle_waiters()

    def _second_avatar(self) -> None:
        room = one_line(self._room.name)
        logger.warning(
            "a second Avatario avatar joined room %r as %r (LiveKit replaces the participant "
            "whose identity it takes): two sessions were started for one AvatarSession and "
            "both may be billed until Avatario ends the first. It happens when a start-session "
            "answer is lost, the first avatar takes longer than join_timeout to join, and the "
            "server does not honour Idempotency-Key: raise join_timeout to what your avatars "
            "need",
            room,
            self._identity,
            extra={"avatario_room": room, "avatario_avatar_identity": self._identity},
        )
        self._spans.add_event(
            SECOND_AVATAR_EVENT,
            {"avatario.avatar_identity": self._identity, "avatario.room": room},
        )


def _resolve(waiter: _Waiter, value: bool | None) -> None:
    if not waiter.outcome.done():
        waiter.outcome.set_result(value)
    if waiter.sleeper is not None:
        waiter.sleeper.cancel()


def _timed_out(waiter: _Waiter, sleeper: asyncio.Task[None]) -> None:
    if waiter.outcome.done() or sleeper.cancelled():
        return
    error = sleeper.exception()
    if error is not None:  # the clock failed (a test's timer raised): the wait fails with it
        waiter.outcome.set_exception(error)
    else:
        waiter.outcome.set_result(False)


class AvatarJoin:
    """How an `AvatarSession` settles a call whose outcome is unknown: by its room (the call
    flow's `RoomWatch`). Joined means started; the flow decides what else follows."""

    __slots__ = ("_presence", "seconds")

    def __init__(self, presence: AvatarPresence, seconds: float) -> None:
        self._presence = presence
        self.seconds = seconds

    async def joined(self, seconds: float, clock: Clock) -> bool | None:
        return await self._presence.wait(seconds, clock, video=False)

    def settled(self, error: APIError, attempts: int) -> StartSessionResult:
        return settled(error, attempts)
