"""The operations of openapi.yaml, each its generated builder plus how its reply is read.

Wrapping a new operation means adding its few lines here (inputs checked, the generated
``_get_kwargs`` called, the 2xx body read into a result type) and a public method on the
clients that calls ``self._request(OPERATION, ...)``; see docs/design.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
from avatario_client.api.sessions import start_session as start_session_api
from avatario_client.models.live_kit_room import LiveKitRoom
from avatario_client.models.start_session_request import StartSessionRequest
from avatario_client.models.start_session_response import StartSessionResponse
from avatario_client.types import UNSET

from ._request import Built, InvalidReply, Operation, ReplyInfo
from ._settings import (
    VideoOptions,
    check_agent_identity,
    check_livekit_token,
    check_livekit_url,
    check_text_id,
)

DEFAULT_VIDEO = VideoOptions()

# -- POST /start-session ----------------------------------------------------------------------


@attrs.frozen
class StartSessionResult:
    """An accepted start-session call.

    `data` is the whole JSON object Avatario returned, unknown keys included; `session_id` is
    its ``session_id`` when present; `request_id` comes from ``x-request-id``;
    `idempotency_key` is the key every attempt carried.
    """

    session_id: str | None
    data: Mapping[str, Any]
    request_id: str | None
    attempts: int
    status_code: int
    idempotency_key: str | None = None


def _start_session_request(
    *,
    avatar_id: object,
    agent_identity: object,
    livekit_url: object,
    livekit_token: object,
    video: VideoOptions | None,
    idempotency_key: str,
) -> Built:
    agent = check_agent_identity(agent_identity)
    avatar = check_text_id("avatar_id", avatar_id)
    url = check_livekit_url(livekit_url)
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
    kwargs = start_session_api._get_kwargs(body=body, idempotency_key=idempotency_key)
    return Built(kwargs, secrets=(token,))


def _start_session_result(data: dict[str, Any], info: ReplyInfo) -> StartSessionResult:
    parsed = StartSessionResponse.from_dict(data)
    session_id = None if parsed.session_id is UNSET else parsed.session_id
    if session_id is not None and not isinstance(session_id, str):
        raise InvalidReply("its session_id is not a string")
    return StartSessionResult(
        session_id=session_id,
        data=data,
        request_id=info.request_id,
        attempts=info.attempts,
        status_code=info.status_code,
        idempotency_key=info.idempotency_key,
    )


START_SESSION = Operation(
    name="start-session",
    build=_start_session_request,
    parse=_start_session_result,
    keyed=True,
)
