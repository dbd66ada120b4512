"""The fake Avatario's avatars joining a `StandInRoom` (`StandInRoom.avatars_from`).

Each new session the fake starts for the room (its token's ``video.room``) becomes, on the
room's event loop, an avatar participant: at once, or `join_after` seconds later (on the
room's `FakeClock` when it has one, so a test plays a slow avatar without waiting), or never
(``join=False``). An avatar that arrives after the agent left the room still joins it on
LiveKit's side (`StandInRoom.participants_on_server`): what keeps running, and billing, when
nobody removes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol

from livekit import rtc

from .._closing import ClosedOnExit
from ._livekit_token import PUBLISH_ON_BEHALF

if TYPE_CHECKING:
    from ._clock import FakeClock, FakeTimer
    from ._start_session import SessionStarted

logger: logging.Logger = logging.getLogger("avatario_wrapper.testing")

#: The RPC method `DataStreamAudioOutput` calls on the avatar when the agent is interrupted.
RPC_CLEAR_BUFFER = "lk.clear_buffer"
#: What the avatar publishes unless told otherwise: video (what the join waits for) and audio.
AVATAR_TRACKS: tuple[rtc.TrackKind.ValueType, ...] = (
    rtc.TrackKind.KIND_VIDEO,
    rtc.TrackKind.KIND_AUDIO,
)


class SessionSource(Protocol):
    """A `FakeAvatario` or a `FakeServer`: what announces the sessions it starts."""

    def on_session_started(
        self, listener: Callable[[SessionStarted], object]
    ) -> Callable[[], None]: ...


class _Room(Protocol):
    """What an `AvatarLink` drives: a `StandInRoom`."""

    _stand_in_loop: asyncio.AbstractEventLoop
    clock: FakeClock | None

    @property
    def name(self) -> str: ...

    @property
    def local_participant(self) -> rtc.LocalParticipant: ...

    @property
    def remote_participants(self) -> Mapping[str, rtc.RemoteParticipant]: ...

    def isconnected(self) -> bool: ...

    def add_participant(
        self,
        identity: str,
        *,
        name: str | None = None,
        kind: rtc.ParticipantKind.ValueType = ...,
        attributes: Mapping[str, str] | None = None,
    ) -> rtc.RemoteParticipant: ...

    def publish_track(
        self, identity: str, kind: rtc.TrackKind.ValueType, *, width: int = 0, height: int = 0
    ) -> rtc.RemoteTrackPublication: ...

    def remove_participant(
        self, identity: str, *, reason: rtc.DisconnectReason.ValueType = ...
    ) -> rtc.RemoteParticipant: ...

    def set_rpc_handler(self, identity: str, method: str, handler: Callable[..., str]) -> None: ...

    def _joins_unseen(self, identity: str) -> None: ...


class AvatarLink(ClosedOnExit):
    """The fake Avatario's avatars joining a `StandInRoom` (see `StandInRoom.avatars_from`).

    `sessions`: the sessions started for this room, in order (`SessionStarted` records);
    `join`: whether their avatars join (may be changed while it runs); `join_after`: how many
    seconds after its session started an avatar joins (0: at once).
    """

    def __init__(
        self,
        room: _Room,
        fake: SessionSource,
        *,
        join: bool,
        join_after: float,
        tracks: tuple[rtc.TrackKind.ValueType, ...],
    ) -> None:
        if not isinstance(join_after, (int, float)) or not 0 <= join_after < float("inf"):
            raise ValueError("join_after must be a finite number of seconds, at least 0")
        self.room = room
        self.join: bool = join
        self.join_after: float = float(join_after)
        self.tracks = tracks
        self._loop = room._stand_in_loop
        self._sessions: list[SessionStarted] = []
        self._elsewhere: list[str | None] = []  # the rooms of sessions for other rooms
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._pending: list[asyncio.TimerHandle | FakeTimer] = []  # joins still to come
        self._closed = False
        self._remove = fake.on_session_started(self._from_server_thread)

    def __repr__(self) -> str:
        return (
            f"AvatarLink(room={self.room.name!r}, join={self.join!r}, "
            f"join_after={self.join_after:g}, sessions={len(self._sessions)})"
        )

    @property
    def sessions(self) -> list[SessionStarted]:
        """The sessions the fake started for this room, in order."""
        return list(self._sessions)

    async def wait_for_sessions(
        self, count: int = 1, *, timeout: float | None = 10.0
    ) -> list[SessionStarted]:
        """Return once the fake has started `count` sessions for this room (all of them).

        Raises `asyncio.TimeoutError` after `timeout` seconds (None: no limit), saying how
        many started and for which other rooms sessions started instead.
        """
        while len(self._sessions) < count:
            waiter: asyncio.Future[None] = self._loop.create_future()
            entry = (count, waiter)
            self._waiters.append(entry)
            try:
                await asyncio.wait_for(waiter, timeout)
            except asyncio.TimeoutError:
                elsewhere = (
                    f"; sessions for other rooms: {self._elsewhere}" if self._elsewhere else ""
                )
                raise asyncio.TimeoutError(
                    f"the fake started {len(self._sessions)} session(s) for room "
                    f"{self.room.name!r} within {timeout} s, not {count}{elsewhere}"
                ) from None
            finally:
                if entry in self._waiters:
                    self._waiters.remove(entry)
        return list(self._sessions)

    def close(self) -> None:
        """Stop listening to the fake; avatars still to join (`join_after`) never do (those
        already in the room stay)."""
        self._closed = True
        self._remove()
        for pending in self._pending:
            pending.cancel()
        self._pending.clear()

    # -- in the fake's server thread, then on the room's loop ------------------------------------

    def _from_server_thread(self, started: SessionStarted) -> None:
        with contextlib.suppress(RuntimeError):  # the test's loop has already closed
            self._loop.call_soon_threadsafe(self._deliver, started)

    def _deliver(self, started: SessionStarted) -> None:
        if self._closed:
            return
        if started.room != self.room.name:
            self._elsewhere.append(started.room)
            return
        self._sessions.append(started)
        for count, waiter in list(self._waiters):
            if len(self._sessions) >= count and not waiter.done():
                waiter.set_result(None)
        if not self.join:
            return
        if not self.join_after:
            self._avatar_joins(started)
        elif self.room.clock is not None:
            self._pending.append(
                self.room.clock.call_later(self.join_after, lambda: self._avatar_joins(started))
            )
        else:
            self._pending.append(
                self._loop.call_later(self.join_after, self._avatar_joins, started)
            )

    def _avatar_joins(self, started: SessionStarted) -> None:
        room, identity = self.room, started.avatar_identity
        if self._closed:
            return
        if identity is None:
            logger.warning(
                "session %s: its token names no identity, so no avatar joins", started.session_id
            )
            return
        if identity == room.local_participant.identity:
            logger.warning(
                "session %s: the avatar's identity is the agent's own, so it cannot join",
                started.session_id,
            )
            return
        if not room.isconnected():
            room._joins_unseen(identity)  # on the server; a disconnected agent never sees it
            return
        if identity in room.remote_participants:  # LiveKit replaces a duplicate identity
            room.remove_participant(identity, reason=rtc.DisconnectReason.DUPLICATE_IDENTITY)
        agent = started.payload.get("agent_id")
        room.add_participant(
            identity,
            name=started.avatar_name,
            kind=rtc.ParticipantKind.PARTICIPANT_KIND_AGENT,
            attributes={PUBLISH_ON_BEHALF: agent} if isinstance(agent, str) else None,
        )
        room.set_rpc_handler(identity, RPC_CLEAR_BUFFER, lambda data: "ok")
        width, height = started.payload.get("video_width"), started.payload.get("video_height")
        for kind in self.tracks:
            if (
                kind == rtc.TrackKind.KIND_VIDEO
                and isinstance(width, int)
                and isinstance(height, int)
            ):
                room.publish_track(identity, kind, width=width, height=height)
            else:
                room.publish_track(identity, kind)
