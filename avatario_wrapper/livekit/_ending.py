"""Ending the avatar with the agent: LiveKit's server API removes its participant, once.

Avatario's API has no call that stops a session, so the avatar is ended the way LiveKit ends
any participant: ``RoomService.RemoveParticipant`` for the room and the avatar's identity,
with the job's LiveKit API credentials (``JobContext.api``, from ``LIVEKIT_URL`` /
``LIVEKIT_API_KEY`` / ``LIVEKIT_API_SECRET``, which the worker exports). It works by room
*name*, so it works after the agent's own connection to the room is gone, as it is when
livekit-agents 1.8.9 runs a job's shutdown callbacks. "Not found" means the avatar is already
gone: success. Any failure is logged, never raised; the request is bounded in time.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from livekit import api

from .._text import one_line

if TYPE_CHECKING:
    from livekit.agents import JobContext

    from .._clock import Clock

logger: logging.Logger = logging.getLogger("avatario_wrapper.livekit")


class AvatarRemoval:
    """The removal of one avatar participant: asked for at most once, however many times and
    from wherever it is wanted (the AgentSession closing, `aclose()`, `max_duration`)."""

    def __init__(
        self, job: JobContext | None, room_name: str, identity: str, *, timeout: float
    ) -> None:
        self._job = job
        self._room_name = room_name
        self._identity = identity
        self._timeout = timeout
        self._task: asyncio.Task[None] | None = None

    @property
    def asked(self) -> bool:
        """Whether the removal was started (it then never starts again)."""
        return self._task is not None

    def start(self, why: str) -> asyncio.Task[None]:
        """Ask for the removal now, in the background (once: later calls return the same
        task). Needs a running event loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._remove(why), name="avatario-avatar-removal"
            )
        return self._task

    async def finish(self, why: str) -> None:
        """Ask for the removal unless it was asked already, and wait for it to end (at most
        its timeout). A cancellation of the caller leaves the removal running."""
        await asyncio.shield(self.start(why))

    async def _remove(self, why: str) -> None:
        identity, room = self._identity, one_line(self._room_name)
        if self._job is None:
            logger.info(
                "the Avatario avatar %r is not removed from room %r (%s): AvatarSession was "
                "started outside a LiveKit job, so there are no job credentials to ask "
                "LiveKit with; it leaves when Avatario ends its session",
                identity,
                room,
                why,
            )
            return
        request = api.RoomParticipantIdentity(room=self._room_name, identity=identity)
        try:
            service = self._job.api.room
            await asyncio.wait_for(service.remove_participant(request), self._timeout)
        except api.TwirpError as error:
            if error.code == "not_found":
                logger.info(
                    "the Avatario avatar %r was no longer in room %r (%s): nothing to remove",
                    identity,
                    room,
                    why,
                )
                return
            self._failed(why, f"LiveKit answered {one_line(error.code)}: {one_line(error.message)}")
        except asyncio.TimeoutError:
            self._failed(why, f"LiveKit did not answer within {self._timeout:g} s")
        except Exception as error:  # the shutdown of the user's job must go on
            self._failed(why, f"{type(error).__name__}: {one_line(str(error))}")
        else:
            logger.info("removed the Avatario avatar %r from room %r (%s)", identity, room, why)

    def _failed(self, why: str, problem: str) -> None:
        logger.warning(
            "could not remove the Avatario avatar %r from room %r (%s): %s; it stays in the "
            "room until Avatario ends its session",
            self._identity,
            one_line(self._room_name),
            why,
            problem,
            extra={
                "avatario_avatar_identity": self._identity,
                "avatario_room": one_line(self._room_name),
            },
        )


async def remove_after(seconds: float, clock: Clock, removal: AvatarRemoval) -> None:
    """`max_duration`: remove the avatar `seconds` after it joined, on the client's clock."""
    await clock.asleep(seconds)
    logger.info("the Avatario avatar reached max_duration (%g s): removing it", seconds)
    await removal.finish(f"max_duration of {seconds:g} s reached")
