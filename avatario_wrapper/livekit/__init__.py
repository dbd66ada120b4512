"""The Avatario avatar for LiveKit agents: a drop-in for ``livekit.plugins.avatario``.

    from avatario_wrapper.livekit import AvatarSession

    async def entrypoint(ctx: JobContext) -> None:
        await ctx.connect()
        session = AgentSession(...)
        avatar = AvatarSession()                 # AVATARIO_AVATAR_ID, AVATARIO_API_KEY
        await avatar.start(session, room=ctx.room)  # LIVEKIT_URL, LIVEKIT_API_KEY/SECRET
        await session.start(agent=..., room=ctx.room)

Needs the ``livekit`` extra (livekit-agents and livekit-api). `AvatarSession` has the old
plugin's constructor, environment variables, `VideoInfo` and `start(...)`, and subclasses
livekit.agents' avatar `AvatarSession`, so its join wait and avatar metrics work as before.
What differs (see docs/livekit.md):

- **One avatar per `AvatarSession`.** A second `start` sends nothing: it returns the first
  call's result (or raises its error). `start` returns the `StartSessionResult`; it sends over
  the worker's shared aiohttp session (`client=`, `retry=`, `api_url=` for other set-ups).
- **An unknown outcome is settled by the room.** When the request went out and no answer
  says what happened, `start` waits up to `join_timeout` (30 s, as livekit-agents'
  ``wait_for_join``) for the avatar to join: joined means started; otherwise it sends once
  more with the same idempotency key if the retry policy allows. It never sends again while
  the avatar may still be joining. `wait_for_join=True` also waits for the avatar's video on
  success (`AvatarJoinTimeoutError`).
- **Ended with the agent.** The avatar participant is removed through LiveKit's server API
  when the `AgentSession` closes and, if that did not happen, when the job shuts down (by the
  room's name, after the room disconnected), once; failures are logged, never raised.
  `max_duration=` caps its stay.
- ``https://`` / ``http://`` LiveKit URLs are sent as ``wss://`` / ``ws://``; the avatar's
  token lives 6 hours (the old plugin's); the module registers itself as a livekit-agents
  plugin when imported.
- Errors are our `AvatarioError` tree, and API errors are also livekit.agents'
  `APIError` / `APIStatusError` / `APIConnectionError` / `APITimeoutError`.
- With OpenTelemetry configured, `start` is one span ``avatario.avatar_session.start`` around
  the call(s) and the waits for the avatar (``avatario.avatar_join_wait``); spans go to
  livekit-agents' tracer provider when one was given to it (its ``set_tracer_provider``, or
  LiveKit Cloud's), so they sit in the agent's own trace (docs/observability.md).

`mint_avatar_token` makes the avatar's LiveKit token on its own, for callers that use
`AsyncAvatarioClient` directly.

Modules: `_session` (`AvatarSession`, the life of its one avatar), `_join` (the avatar in the
room: the room watch of the call flow, the waits, a second avatar), `_ending` (the removal),
`_token` (the token and the URL), `_spans`, `_plugin`.
"""

from __future__ import annotations

from . import _plugin, _spans
from ._join import AvatarJoinTimeoutError
from ._session import DEFAULT_JOIN_TIMEOUT, DEFAULT_REMOVAL_TIMEOUT, AvatarSession
from ._token import DEFAULT_TOKEN_TTL, mint_avatar_token

__all__ = [
    "DEFAULT_JOIN_TIMEOUT",
    "DEFAULT_REMOVAL_TIMEOUT",
    "DEFAULT_TOKEN_TTL",
    "AvatarJoinTimeoutError",
    "AvatarSession",
    "mint_avatar_token",
]

_spans.follow_livekit()
_plugin.register()
