"""Checks the LiveKit token in a start-session request, as the fake's token verification.

A LiveKit access token is an HS256 JWT signed with the project's API secret (the claims that
``livekit.api.AccessToken`` writes): ``iss`` is the API key, ``sub`` the participant identity,
``kind`` the participant kind, ``video`` the grants (``roomJoin``, ``room``), ``attributes``
the participant attributes, ``nbf`` / ``exp`` its validity. The avatar's token must let it join
a room as an ``agent`` that publishes on behalf of the request's ``agent_id``
(``attributes["lk.publish_on_behalf"]``).

Only the standard library is used. A problem is reported as one sentence naming the claim at
fault; it never quotes the token, a claim's value or the secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
from typing import Any

#: The attribute LiveKit reads to route an agent's audio to the avatar.
PUBLISH_ON_BEHALF = "lk.publish_on_behalf"
AVATAR_KIND = "agent"
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")


class TokenProblem(ValueError):
    """The token is not one Avatario could join the room with; the message says why."""


def _b64decode(part: str, what: str) -> bytes:
    if not _BASE64URL.fullmatch(part) or len(part) % 4 == 1:
        raise TokenProblem(f"the JWT {what} is not unpadded base64url")
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError):
        raise TokenProblem(f"the JWT {what} is not base64url") from None


def _json_object(part: str, what: str) -> dict[str, Any]:
    raw = _b64decode(part, what)
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        raise TokenProblem(f"the JWT {what} is not JSON") from None
    if not isinstance(value, dict):
        raise TokenProblem(f"the JWT {what} is not a JSON object")
    return value


def _seconds(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TokenProblem(f"the {name!r} claim is not a number of seconds")
    return float(value)


def verify_avatar_token(
    token: str, *, api_key: str, api_secret: str, agent_id: str, now: float
) -> dict[str, Any]:
    """The token's claims if it is a valid avatar token for `agent_id`; else `TokenProblem`."""
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenProblem("it is not a JWT (three dot-separated parts)")
    header_part, payload_part, signature_part = parts
    header = _json_object(header_part, "header")
    if header.get("alg") != "HS256":
        raise TokenProblem("the JWT is not signed with HS256, as LiveKit tokens are")
    signature = _b64decode(signature_part, "signature")
    expected = hmac.new(
        api_secret.encode(), f"{header_part}.{payload_part}".encode("ascii"), hashlib.sha256
    ).digest()
    if not hmac.compare_digest(signature, expected):
        raise TokenProblem("the signature does not match the LiveKit API secret")
    claims = _json_object(payload_part, "payload")
    issuer = claims.get("iss")
    if not isinstance(issuer, str) or not hmac.compare_digest(issuer.encode(), api_key.encode()):
        raise TokenProblem("the issuer ('iss') is not the LiveKit API key")
    expires = _seconds(claims, "exp")
    if expires is None:
        raise TokenProblem("it has no expiry ('exp')")
    if expires <= now:
        raise TokenProblem("it has expired ('exp' is in the past)")
    not_before = _seconds(claims, "nbf")
    if not_before is not None and not_before > now:
        raise TokenProblem("it is not valid yet ('nbf' is in the future)")
    identity = claims.get("sub")
    if not isinstance(identity, str) or not identity:
        raise TokenProblem("it names no participant identity ('sub')")
    grants = claims.get("video")
    if not isinstance(grants, dict) or grants.get("roomJoin") is not True:
        raise TokenProblem("it does not grant joining a room ('video.roomJoin')")
    room = grants.get("room")
    if not isinstance(room, str) or not room:
        raise TokenProblem("its room grant names no room ('video.room')")
    if claims.get("kind") != AVATAR_KIND:
        raise TokenProblem(f"the participant kind ('kind') is not {AVATAR_KIND!r}")
    attributes = claims.get("attributes")
    on_behalf = attributes.get(PUBLISH_ON_BEHALF) if isinstance(attributes, dict) else None
    if on_behalf is None:
        raise TokenProblem(f"it has no {PUBLISH_ON_BEHALF!r} attribute")
    if on_behalf != agent_id:
        raise TokenProblem(f"its {PUBLISH_ON_BEHALF!r} attribute is not the request's agent_id")
    return claims
