"""A drop-in for `livekit.plugins.avatario.api.AvatarioAPI`, built on `AsyncAvatarioClient`.

    from avatario_wrapper.compat import AvatarioAPI

    async with AvatarioAPI(api_key, avatar_id, {"video_height": 720}) as api:
        await api.start_session(
            livekit_agent_identity=agent_identity,
            properties={"url": livekit_url, "token": avatar_token},
        )

Same constructor and call as the old class (``session=`` included: a given aiohttp session
is used and never closed), with what it got wrong fixed: the URL comes from
``AVATARIO_BASE_URL`` (production by default), a missing avatar id or agent identity fails at
once with no request sent, unknown `video_info` or `properties` keys are an error instead of
silently overwriting the payload, retries are jittered and deadline-bound with one idempotency
key, errors keep their cause, and the result is returned instead of discarded.

An `APIError` raised here is also an instance of the matching livekit.agents error
(`APIStatusError`, `APIConnectionError`, `APITimeoutError`, `APIError`) when livekit-agents is
installed, so ``except`` clauses written for the old class keep catching it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Protocol

from ._clients import AsyncAvatarioClient
from ._closing import AClosedOnExit
from ._inputs import check_agent_identity, check_text_id
from ._livekit_errors import as_livekit_error
from ._operations import StartSessionResult
from ._settings import RetryPolicy, VideoOptions
from .errors import APIError, AvatarioConfigError, AvatarioException

__all__ = ["AvatarioAPI", "AvatarioException", "ConnectOptions"]

AVATAR_ID_ENV = "AVATARIO_AVATAR_ID"

# video_info key → VideoOptions field. Anything else is refused.
_VIDEO_KEYS = {
    "video_height": "height",
    "video_width": "width",
    "custom_background_url": "background_url",
}
_PROPERTY_KEYS = frozenset({"url", "token"})


class ConnectOptions(Protocol):
    """What `conn_options` must have: livekit.agents' `APIConnectOptions` fits."""

    @property
    def max_retry(self) -> int: ...
    @property
    def retry_interval(self) -> float: ...
    @property
    def timeout(self) -> float: ...


class _DefaultConnectOptions:
    """The old plugin's defaults: 3 attempts, 2.0 s between them, 10 s per attempt."""

    max_retry = 3
    retry_interval = 2.0
    timeout = 10.0


def retry_from_conn_options(options: ConnectOptions) -> RetryPolicy:
    """`conn_options` as a `RetryPolicy`: max_retry → max_attempts, retry_interval → delays."""
    return RetryPolicy(
        max_attempts=max(1, int(options.max_retry)),
        initial_delay=options.retry_interval,
        max_delay=max(8.0, float(options.retry_interval)),
    )


def _given(value: object) -> bool:
    # livekit's NOT_GIVEN is falsy and has a class named NotGiven; None means the same here.
    return value is not None and type(value).__name__ != "NotGiven"


def _video_options(video_info: object) -> VideoOptions:
    if not _given(video_info):
        return VideoOptions()
    if not isinstance(video_info, Mapping):
        raise TypeError(f"video_info must be a dict, not {type(video_info).__name__}")
    unknown = sorted(str(key) for key in video_info if key not in _VIDEO_KEYS)
    if unknown:
        raise AvatarioConfigError(
            "video_info",
            f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_VIDEO_KEYS))}",
        )
    return VideoOptions(**{_VIDEO_KEYS[key]: value for key, value in video_info.items()})


def _room(properties: object) -> tuple[Any, Any]:
    if not isinstance(properties, Mapping):
        raise AvatarioConfigError(
            "properties", "must be a dict with the LiveKit room's 'url' and the avatar's 'token'"
        )
    unknown = sorted(str(key) for key in properties if key not in _PROPERTY_KEYS)
    missing = sorted(_PROPERTY_KEYS - set(properties))
    if unknown or missing:
        raise AvatarioConfigError(
            "properties",
            "must have exactly the keys 'url' and 'token'"
            + (f"; missing {', '.join(missing)}" if missing else "")
            + (f"; unknown {', '.join(unknown)}" if unknown else ""),
        )
    return properties["url"], properties["token"]


class AvatarioAPI(AClosedOnExit):
    """The old plugin's client, same constructor and `start_session`, on the new core."""

    def __init__(
        self,
        api_key: str | None = None,
        avatar_id: object = None,
        video_info: object = None,
        *,
        conn_options: ConnectOptions | None = None,
        session: Any = None,
    ) -> None:
        options: ConnectOptions = conn_options or _DefaultConnectOptions()
        avatar = avatar_id if _given(avatar_id) else os.environ.get(AVATAR_ID_ENV)
        if avatar is None:
            raise AvatarioConfigError(
                "avatar_id", f"no avatar id: pass avatar_id or set {AVATAR_ID_ENV}"
            )
        self._avatar_id = check_text_id("avatar_id", avatar)
        self._video = _video_options(video_info)
        # A given aiohttp session is used as is and never closed here; the old class did the
        # same. Without one the client opens (and `aclose` closes) its own pool.
        self._client = AsyncAvatarioClient(
            api_key,
            timeout=options.timeout,
            retry=retry_from_conn_options(options),
            http_client=session,
        )

    def __repr__(self) -> str:
        return f"AvatarioAPI(avatar_id={self._avatar_id!r}, client={self._client!r})"

    async def aclose(self) -> None:
        """Close the connection pool if this object opened it (a given `session=` stays open)."""
        await self._client.aclose()

    async def start_session(
        self,
        *,
        livekit_agent_identity: object = None,
        properties: object = None,
    ) -> StartSessionResult:
        """Send the avatar into the room in `properties` (``{"url": ..., "token": ...}``)."""
        identity = check_agent_identity(
            livekit_agent_identity if _given(livekit_agent_identity) else None,
            field="livekit_agent_identity",
        )
        url, token = _room(properties)
        try:
            return await self._client.start_session(
                avatar_id=self._avatar_id,
                agent_identity=identity,
                livekit_url=url,
                livekit_token=token,
                video=self._video,
            )
        except APIError as error:
            failure = error
        # Raised outside the handler so the copy keeps the original's cause and context.
        raise as_livekit_error(failure)
