"""The one avatar of a started `AvatarSession`, from `start` until `aclose()`: the first
start's outcome (which a second `start` returns), its presence in the room, its removal (once)
and its `max_duration` timer."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from livekit.agents import AgentSession, get_job_context

from .._operations import StartSessionResult
from ..errors import AvatarioError
from ._ending import AvatarRemoval, remove_after
from ._join import AvatarPresence

if TYPE_CHECKING:
    from livekit import rtc

    from .._clock import Clock
    from ._spans import EventSpans


class StartedAvatar:
    """One avatar: claimed by the first `start` before anything is sent."""

    def __init__(
        self,
        agent_session: AgentSession[Any],
        room: rtc.Room,
        room_name: str,
        identity: str,
        *,
        clock: Clock,
        spans: EventSpans,
        max_duration: float | None,
        removal_timeout: float,
    ) -> None:
        self.agent_session = agent_session
        self.room = room
        self.room_name = room_name
        self.clock = clock
        self.spans = spans
        #: The first `start`'s outcome, which a second `start` returns (or raises).
        self.outcome: asyncio.Future[StartSessionResult] = (
            asyncio.get_running_loop().create_future()
        )
        #: Whether a session may exist (a request went out and no answer said otherwise).
        self.may_exist = False
        self.removal = AvatarRemoval(
            get_job_context(required=False), room_name, identity, timeout=removal_timeout
        )
        self.presence = AvatarPresence(room, identity, spans, on_join=self._joined)
        self._max_duration = max_duration
        self._timer: asyncio.Task[None] | None = None
        self._on_close = self._agent_session_closed

    def attach(self) -> None:
        self.presence.attach()
        self.agent_session.on("close", self._on_close)

    def detach(self) -> None:
        self.presence.detach()
        self.agent_session.off("close", self._on_close)
        if self._timer is not None:
            self._timer.cancel()

    def settle(self, result: StartSessionResult | None, error: BaseException | None) -> None:
        """Keep the first `start`'s outcome for the next ones (read here, so an outcome no
        one asks for again is never reported as unretrieved)."""
        if error is None:
            assert result is not None
            self.outcome.set_result(result)
            return
        if isinstance(error, asyncio.CancelledError):
            error = AvatarioError(
                "the first start() of this AvatarSession was cancelled before it knew whether "
                "the avatar started: call aclose(), then start() again"
            )
        self.outcome.set_exception(error)
        self.outcome.exception()

    async def end(self, why: str) -> None:
        """Remove the avatar if a session may exist (once), after a `start` still running."""
        if not self.outcome.done():
            await asyncio.wait({self.outcome})
        if self.may_exist:
            await self.removal.finish(why)

    def _agent_session_closed(self, _event: object) -> None:
        if self.may_exist:
            self.removal.start("the AgentSession closed")

    def _joined(self) -> None:
        if self._max_duration is not None and self._timer is None:
            self._timer = asyncio.get_running_loop().create_task(
                remove_after(self._max_duration, self.clock, self.removal),
                name="avatario-avatar-max-duration",
            )
