"""The operations of openapi.yaml, as data: one block per operation.

Each block is the operation's public result type, the function that checks its inputs and
calls the generated request builder, and an `Operation` naming the generated 2xx model and
how the result's own fields are read from it. Everything else (headers, the key, retries,
errors, reading and checking the reply, redaction, telemetry, every transport) comes from the
request path (`_request`). Wrapping a new operation: docs/design.md, "Wrapping a new operation".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from ._generated.api.sessions import start_session as start_session_api
from ._generated.models.live_kit_room import LiveKitRoom
from ._generated.models.start_session_request import StartSessionRequest
from ._generated.models.start_session_response import StartSessionResponse
from ._generated.types import UNSET, Unset
from ._inputs import check_agent_identity, check_livekit_token, check_livekit_url, check_text_id
from ._request import Operation
from ._settings import VideoOptions

__all__ = ["START_SESSION", "StartSessionResult"]


def _given_or_none(value: Any) -> Any:
    """A generated model's optional field: None when the server left it out."""
    return None if isinstance(value, Unset) else value


# -- POST /start-session ----------------------------------------------------------------------


@attrs.frozen
class StartSessionResult:
    """An accepted start-session call.

    Attributes:
        session_id: The ``session_id`` Avatario returned, or None when it sent none.
        data: The whole JSON object Avatario returned, unknown keys included (the API key or
            the LiveKit token, if the server echoed one, redacted).
        request_id: The ``x-request-id`` header, or None.
        attempts: How many attempts the call made, the first included.
        status_code: The HTTP status of the answer (0 when `AvatarSession` settled an unknown
            outcome by seeing the avatar join the room).
        idempotency_key: The ``Idempotency-Key`` every attempt carried.
    """

    session_id: str | None
    data: Mapping[str, Any]
    request_id: str | None
    attempts: int
    status_code: int
    idempotency_key: str | None = None


DEFAULT_VIDEO = VideoOptions()


def _start_session(
    *,
    avatar_id: object,
    agent_identity: object,
    livekit_url: object,
    livekit_token: object,
    video: VideoOptions | None = None,
    idempotency_key: str,
    allow_insecure_http: bool = False,
) -> dict[str, Any]:
    agent = check_agent_identity(agent_identity)
    avatar = check_text_id("avatar_id", avatar_id)
    url = check_livekit_url(livekit_url, allow_insecure_http=allow_insecure_http)
    token = check_livekit_token(livekit_token)
    if video is None:
        video = DEFAULT_VIDEO
    elif not isinstance(video, VideoOptions):
        raise TypeError(f"video must be a VideoOptions, not {type(video).__name__}")
    body = StartSessionRequest(
        avatario_face_id=avatar,
        agent_id=agent,
        livekit=LiveKitRoom(url=url, token=token),
        video_height=video.height,
        video_width=video.width,
        custom_background_url=video.background_url if video.background_url is not None else UNSET,
    )
    return start_session_api._get_kwargs(body=body, idempotency_key=idempotency_key)


START_SESSION: Operation[StartSessionResult] = Operation(
    name="start_session",
    build=_start_session,
    secret_inputs=("livekit_token",),
    model=StartSessionResponse,
    result=StartSessionResult,
    result_fields=lambda parsed: {"session_id": _given_or_none(parsed.session_id)},
    starts_session=True,
)
