"""A job for a `StandInRoom`: LiveKit's side of the room (`ServerSide`), livekit-agents' own
fake job context with a stand-in for its LiveKit server API (``RoomService.RemoveParticipant``
by room name, every request recorded), and the job's shutdown in livekit-agents 1.8.9's order
(`end_job`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import secrets
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Literal, NoReturn

import attrs
from livekit import api, rtc
from livekit.agents import get_job_context
from livekit.agents.testing import fake_job_context

if TYPE_CHECKING:
    from livekit.agents import JobContext

logger: logging.Logger = logging.getLogger("avatario_wrapper.testing")

#: livekit-agents 1.8.9's bound on closing the job's AgentSession at shutdown
#: (``ipc/job_proc_lazy_main.py``, ``_SESSION_ACLOSE_TIMEOUT``).
SESSION_ACLOSE_TIMEOUT = 60.0

#: What a `StandInRoom.removal_fault` may be: an exception the request raises, or "hang".
RemovalFault = BaseException | Literal["hang"] | None


@attrs.frozen
class ParticipantRemoval:
    """One ``RoomService.RemoveParticipant`` request the job's server API received.

    `found`: whether the participant was in the room on LiveKit's side (else LiveKit answers
    ``not_found``); `fault`: what `StandInRoom.removal_fault` made of it (None: served);
    `agent_connected`: whether the agent was still in the room when it was asked.
    """

    room: str
    identity: str
    found: bool
    agent_connected: bool
    fault: str | None = None
    time: float = attrs.field(factory=time.time, eq=False)


class ServerSide:
    """LiveKit's side of one room: who is in it (besides the agent), whether or not the agent
    still hears, and the RemoveParticipant requests its server API received."""

    def __init__(
        self,
        name: str,
        agent_connected: Callable[[], bool],
        agent_sees_removal: Callable[[str], None],
    ) -> None:
        self.name = name
        self.participants: set[str] = set()
        self.removals: list[ParticipantRemoval] = []
        self.removal_fault: RemovalFault = None
        self._agent_connected = agent_connected
        self._agent_sees_removal = agent_sees_removal

    async def remove_participant(
        self, remove: api.RoomParticipantIdentity
    ) -> api.RemoveParticipantResponse:
        """As LiveKit's RoomService: the participant leaves the room (the agent, while
        connected, sees it go); one not in the room is a ``not_found`` `TwirpError`. Recorded
        first; `removal_fault` makes it raise or hang instead."""
        fault, connected = self.removal_fault, self._agent_connected()
        found = remove.room == self.name and remove.identity in self.participants
        self.removals.append(
            ParticipantRemoval(
                room=remove.room,
                identity=remove.identity,
                found=found,
                agent_connected=connected,
                fault=None if fault is None else fault if isinstance(fault, str) else repr(fault),
            )
        )
        if fault == "hang":
            await asyncio.Event().wait()  # never answers, until the caller gives up
        if isinstance(fault, BaseException):
            raise fault
        if not found:
            raise api.TwirpError("not_found", "participant not found", status=404)
        if connected:
            self._agent_sees_removal(remove.identity)
        self.participants.discard(remove.identity)
        return api.RemoveParticipantResponse()


class StandInRoomService:
    """A job's ``ctx.api.room`` here: ``remove_participant`` on the stand-in room."""

    def __init__(self, server: ServerSide) -> None:
        self._server = server

    async def remove_participant(
        self, remove: api.RoomParticipantIdentity
    ) -> api.RemoveParticipantResponse:
        """LiveKit's ``RoomService.RemoveParticipant``, on the stand-in room (`ServerSide`)."""
        return await self._server.remove_participant(remove)

    def __getattr__(self, name: str) -> NoReturn:
        raise AttributeError(
            f"room.{name} of the LiveKit server API is not implemented by the stand-in "
            "(only room.remove_participant is)"
        )


class StandInLiveKitAPI:
    """A job's ``ctx.api`` inside `StandInRoom.job_context`: only ``room.remove_participant``."""

    def __init__(self, server: ServerSide) -> None:
        self.room: StandInRoomService = StandInRoomService(server)

    async def aclose(self) -> None:
        return None

    def __getattr__(self, name: str) -> NoReturn:
        raise AttributeError(
            f"the LiveKit server API's {name!r} is not implemented by the stand-in (only "
            "room.remove_participant is): no LiveKit server runs in unit tests"
        )


@contextlib.contextmanager
def job_context(room: rtc.Room, server: ServerSide, job_id: str) -> Iterator[JobContext]:
    """livekit-agents' ``fake_job_context`` for `room`, with the agent's token and the
    stand-in server API (see `StandInRoom.job_context`)."""
    agent = room.local_participant
    with fake_job_context(room=room, job_id=job_id, agent_identity=agent.identity) as ctx:
        info = getattr(ctx, "_info", None)  # livekit's fake job has an empty token
        if info is not None and hasattr(info, "token"):
            info.token = _agent_token(room)
        vars(ctx)["api"] = StandInLiveKitAPI(server)  # JobContext.api is a cached property
        try:
            yield ctx
        finally:
            # livekit's job runner removes the job's scratch folder; its fake job does not.
            tempdir = getattr(ctx, "_tempdir", None)
            if tempdir is not None:
                tempdir.cleanup()


def _agent_token(room: rtc.Room) -> str:
    """A token naming the agent, as a job has; signed with a throwaway secret (livekit reads
    the job's token without checking its signature)."""
    agent = room.local_participant
    return (
        api.AccessToken(api_key="stand-in", api_secret=secrets.token_urlsafe(32))
        .with_kind("agent")
        .with_identity(agent.identity)
        .with_name(agent.name)
        .with_grants(api.VideoGrants(room_join=True, room=room.name, agent=True))
        .with_ttl(datetime.timedelta(hours=1))
        .to_jwt()
    )


async def end_job(room: rtc.Room, reason: str) -> None:
    """Shut the current job down as livekit-agents 1.8.9 does (``_JobProc._shutdown_job``):
    close its AgentSession, disconnect the room, then run the shutdown callbacks together."""
    ctx = get_job_context(required=False)
    if ctx is None or ctx.room is not room:
        raise RuntimeError(
            "call StandInRoom.end_job() inside `with room.job_context():` for this room"
        )
    session: Any = getattr(ctx, "_primary_agent_session", None)  # the one started in the job
    if session is not None:
        try:
            await asyncio.wait_for(session.aclose(), SESSION_ACLOSE_TIMEOUT)
        except asyncio.TimeoutError:
            logger.error("AgentSession.aclose() timed out at the stand-in job's shutdown")
    await room.disconnect(reason=rtc.DisconnectReason.CLIENT_INITIATED)
    callbacks = list(getattr(ctx, "_shutdown_callbacks", ()))
    results = await asyncio.gather(
        *(callback(reason) for callback in callbacks), return_exceptions=True
    )
    for result in results:  # livekit logs what a callback raised, and shuts down all the same
        if isinstance(result, Exception):
            logger.error("a job shutdown callback raised %r", result, exc_info=result)
        elif isinstance(result, BaseException):
            raise result
