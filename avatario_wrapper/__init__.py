"""A spec-first client for the Avatario avatar API.

    from avatario_wrapper import AvatarioClient

    with AvatarioClient() as avatario:  # key from AVATARIO_API_KEY
        result = avatario.start_session(
            avatar_id="face_4f1c2a",
            agent_identity="agent-7",
            livekit_url="wss://rooms.example.com",
            livekit_token=token_for_the_avatar,
        )

Every failure is an `AvatarioError` subclass (see `avatario_wrapper.errors`); retries follow a
`RetryPolicy`; `AsyncAvatarioClient` is the same for asyncio.
"""

from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import (
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    AvatarioConfigError,
    AvatarioError,
    AvatarioException,
    BadRequestError,
    ClientClosedError,
    ConflictError,
    InternalServerError,
    MissingAgentIdentityError,
    NotFoundError,
    Outcome,
    PermissionDeniedError,
    RateLimitError,
    UnprocessableEntityError,
    WrongEventLoopError,
)

if TYPE_CHECKING:
    from ._clients import AsyncAvatarioClient, AvatarioClient
    from ._clock import Clock
    from ._operations import StartSessionResult
    from ._settings import RetryPolicy, VideoOptions

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIResponseValidationError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncAvatarioClient",
    "AuthenticationError",
    "AvatarioClient",
    "AvatarioConfigError",
    "AvatarioError",
    "AvatarioException",
    "BadRequestError",
    "ClientClosedError",
    "Clock",
    "ConflictError",
    "InternalServerError",
    "MissingAgentIdentityError",
    "NotFoundError",
    "Outcome",
    "PermissionDeniedError",
    "RateLimitError",
    "RetryPolicy",
    "StartSessionResult",
    "UnprocessableEntityError",
    "VideoOptions",
    "WrongEventLoopError",
    "__version__",
]

#: Imported on first use, so that importing the package (as pytest does for its plugin in every
#: project where it is installed) costs only the error classes; the clients need httpx.
_LAZY = {
    "AsyncAvatarioClient": "._clients",
    "AvatarioClient": "._clients",
    "Clock": "._clock",
    "RetryPolicy": "._settings",
    "StartSessionResult": "._operations",
    "VideoOptions": "._settings",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib  # noqa: PLC0415

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # once found, an ordinary attribute
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
