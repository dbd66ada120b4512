"""A LiveKit voice agent with an Avatario avatar, using avatario_wrapper.livekit.

avatario-wrapper is installed from a checkout of its repository (it is not on PyPI):

    pip install '.[livekit]'        # in the checkout: + livekit-agents and livekit-api
    export AVATARIO_API_KEY=... AVATARIO_AVATAR_ID=...
    export LIVEKIT_URL=wss://... LIVEKIT_API_KEY=... LIVEKIT_API_SECRET=...
    python examples/livekit_agent.py dev

The models are LiveKit Inference strings, served through your LiveKit Cloud project (no
plugin to install); swap in plugins as you like.

The avatar joins the room as ``avatario-avatar-agent`` and speaks with the agent's voice; the
agent's audio goes to the avatar instead of the room. It is removed from the room when the
agent's session closes (or the job shuts down). If Avatario cannot be reached, the agent
carries on without a face. `start_avatar` is tested without a LiveKit server in
tests/test_testing_livekit.py (see docs/livekit.md, "Testing your agent without a LiveKit
server").
"""

from __future__ import annotations

import logging
from typing import Any

from livekit import rtc
from livekit.agents import Agent, AgentServer, AgentSession, JobContext, cli

from avatario_wrapper import APIError
from avatario_wrapper.livekit import AvatarSession

logger = logging.getLogger("avatario-example")


class Assistant(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You are a friendly assistant with a face. Keep it short.")


async def start_avatar(session: AgentSession[Any], room: rtc.Room) -> AvatarSession | None:
    """Send the avatar into `room` with `session`'s voice; None (voice only) if that failed."""
    avatar = AvatarSession(
        video_info=AvatarSession.VideoInfo(video_height=720, video_width=1280),
        max_duration=3600,  # a cap on the agent's side: the avatar leaves after an hour
    )
    try:
        # Sends over the worker's shared aiohttp session; the token is minted for this room.
        result = await avatar.start(session, room=room)
    except APIError as error:  # also livekit.agents.APIError: either except clause works
        logger.warning("no avatar, voice only: %s", error)
        await avatar.aclose()
        return None
    logger.info("avatar started: session %s, %d attempt(s)", result.session_id, result.attempts)
    return avatar


server = AgentServer()


@server.rtc_session()
async def entrypoint(ctx: JobContext) -> None:
    await ctx.connect()

    # Models are strings served by LiveKit Inference; swap in plugins as you like.
    session: AgentSession[None] = AgentSession(
        stt="deepgram/nova-3",
        llm="openai/gpt-4.1-mini",
        tts="cartesia/sonic-2",
    )

    await start_avatar(session, ctx.room)  # removed when the session closes or the job ends

    await session.start(agent=Assistant(), room=ctx.room)
    await session.generate_reply(instructions="Greet the user.")


if __name__ == "__main__":
    cli.run_app(server)
