"""The avatar's LiveKit token, and the LiveKit URL Avatario's avatar is sent to."""

from __future__ import annotations

import datetime

from livekit import api
from livekit.agents.voice.room_io import ATTRIBUTE_PUBLISH_ON_BEHALF

from .._inputs import check_agent_identity, check_seconds, check_text_id
from ..errors import AvatarioConfigError

AVATAR_IDENTITY = "avatario-avatar-agent"
AVATAR_NAME = "avatario-avatar-agent"
#: How long the avatar's token is valid: the old plugin's (livekit-api's default), so an
#: avatar worker that rejoins the room after a network change hours in is still let in.
DEFAULT_TOKEN_TTL = datetime.timedelta(hours=6)

#: The schemes LiveKit's clients connect with, for the HTTP ones LiveKit Cloud hands out.
_WEBSOCKET_SCHEMES = {"https": "wss", "http": "ws"}


def require_text(field: str, value: object, *, secret: bool = False) -> str:
    """`value` if it is a non-empty string, else an `AvatarioConfigError` naming `field`."""
    if not isinstance(value, str) or not value.strip():
        shown = "" if secret else f" (got {type(value).__name__})"
        raise AvatarioConfigError(field, f"must be a non-empty string{shown}")
    return value


def websocket_url(url: str) -> str:
    """The LiveKit URL as an avatar connects to it: ``https://`` becomes ``wss://`` and
    ``http://`` becomes ``ws://`` (LiveKit Cloud gives deployed agents ``https://``); any other
    URL is returned as it is, for the client's checks to judge."""
    scheme, sep, rest = url.partition("://")
    converted = _WEBSOCKET_SCHEMES.get(scheme.lower()) if sep else None
    return f"{converted}://{rest}" if converted else url


def token_ttl(ttl: datetime.timedelta | float) -> datetime.timedelta:
    """`ttl` (a `timedelta` or seconds) as a positive `timedelta`."""
    if not isinstance(ttl, datetime.timedelta):
        return datetime.timedelta(seconds=check_seconds("ttl", ttl, allow_zero=False))
    if ttl <= datetime.timedelta(0):
        raise AvatarioConfigError("ttl", "must be positive")
    return ttl


def mint_avatar_token(
    *,
    livekit_api_key: str,
    livekit_api_secret: str,
    room_name: str,
    agent_identity: str,
    avatar_identity: str = AVATAR_IDENTITY,
    avatar_name: str = AVATAR_NAME,
    ttl: datetime.timedelta | float = DEFAULT_TOKEN_TTL,
) -> str:
    """A LiveKit access token for the avatar to join `room_name` on behalf of the agent.

    The token is for a participant of kind ``agent`` with identity `avatar_identity` and name
    `avatar_name`, may join `room_name` only, carries the attribute ``lk.publish_on_behalf``
    = `agent_identity` (so the avatar's tracks count as the agent's), and expires after `ttl`
    (a `timedelta` or seconds; 6 hours by default, as the old plugin's). The secret never
    appears in an error.
    """
    key = require_text("livekit_api_key", livekit_api_key, secret=True)
    secret = require_text("livekit_api_secret", livekit_api_secret, secret=True)
    room = require_text("room_name", room_name)
    agent = check_agent_identity(agent_identity)
    identity = check_text_id("avatar_identity", avatar_identity)
    name = require_text("avatar_name", avatar_name)
    return (
        api.AccessToken(api_key=key, api_secret=secret)
        .with_kind("agent")
        .with_identity(identity)
        .with_name(name)
        .with_grants(api.VideoGrants(room_join=True, room=room))
        .with_attributes({ATTRIBUTE_PUBLISH_ON_BEHALF: agent})
        .with_ttl(token_ttl(ttl))
        .to_jwt()
    )
