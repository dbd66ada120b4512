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

from ._clients import AsyncAvatarioClient, AvatarioClient
from ._clock import Clock
from ._operations import StartSessionResult
from ._settings import RetryPolicy, VideoOptions
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
