"""Every error the Avatario client raises, in one tree.

    AvatarioError                      (AvatarioException is an alias, for the old plugin's code)
    ├── AvatarioConfigError            also a ValueError; raised before any I/O; names the field
    │   └── MissingAgentIdentityError  agent identity missing, empty or blank
    ├── ClientClosedError              also a RuntimeError; the client was closed, nothing sent
    ├── WrongEventLoopError            also a RuntimeError; an async client used on another
    │                                  event loop than its own; nothing sent
    └── APIError                       .message .attempts .retryable .outcome .may_have_started
        │                              .idempotency_key
        ├── APIConnectionError         no response (refused, reset, DNS, protocol); __cause__ kept
        │   └── APITimeoutError
        ├── APIStatusError             .status_code .body .request_id .headers .retry_after
        │   ├── BadRequestError 400 · AuthenticationError 401 · PermissionDeniedError 403
        │   ├── NotFoundError 404 · ConflictError 409 · UnprocessableEntityError 422
        │   ├── RateLimitError 429
        │   └── InternalServerError 5xx
        └── APIResponseValidationError a 2xx whose body is not the documented JSON object

Every `APIError` says what Avatario may have done (`outcome`, an `Outcome`): the request was
not sent, it was refused, its outcome is unknown, or it was carried out. `may_have_started` is
True when the call starts sessions and the outcome is unknown or started; `idempotency_key` is
the key the call sent, so the same logical call can be retried by hand.

Every error is a value: it survives `pickle` and `copy.deepcopy` with all its attributes, so it
can cross a process pool or a task queue (its ``__cause__`` stays behind, as with any
exception). Any other exception (a bug, a wrong type) is not wrapped: it propagates unchanged
and is never retried; a cancelled task ends in `asyncio.CancelledError`, never in one of these.
No message here ever contains the API key or a LiveKit token, and text that came from the
server reaches a message only as one printable line.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._outcome import Outcome

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIResponseValidationError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "AvatarioConfigError",
    "AvatarioError",
    "AvatarioException",
    "BadRequestError",
    "ClientClosedError",
    "ConflictError",
    "InternalServerError",
    "MissingAgentIdentityError",
    "NotFoundError",
    "Outcome",
    "PermissionDeniedError",
    "RateLimitError",
    "UnprocessableEntityError",
    "WrongEventLoopError",
    "status_error_class",
]

#: How many characters of a response body an error keeps.
MAX_ERROR_BODY_CHARS = 4096


class AvatarioError(Exception):
    """The base of every error raised on purpose by this package."""

    def __reduce__(self) -> tuple[Any, ...]:
        # The default rebuilds an exception as cls(*args), which keyword-only constructors
        # (and ones whose message is composed) cannot take: rebuild it from args and attributes.
        return (_rebuild, (type(self), self.args, dict(self.__dict__)))


def _rebuild(cls: type[AvatarioError], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    """An error of `cls` with these `args` and attributes, without calling its ``__init__``."""
    error = cls.__new__(cls, *args)
    error.args = args
    error.__dict__.update(state)
    return error


#: The old plugin's name for the base error; `except AvatarioException` keeps working.
AvatarioException = AvatarioError


class AvatarioConfigError(AvatarioError, ValueError):
    """An argument or setting is not acceptable. Raised before any request is sent.

    `field` names the argument at fault (for example ``"livekit_url"``).
    """

    def __init__(self, field: str, problem: str) -> None:
        self.field: str = field
        super().__init__(f"{field}: {problem}")


class MissingAgentIdentityError(AvatarioConfigError):
    """The LiveKit identity of the agent was not given, or is empty or blank.

    Avatario needs it to know whose audio the avatar follows; no request is sent without it.
    """

    def __init__(self, field: str = "agent_identity") -> None:
        super().__init__(
            field,
            "the LiveKit participant identity of the agent is required (it tells Avatario whose "
            "audio the avatar follows); it was missing, empty or blank",
        )


class ClientClosedError(AvatarioError, RuntimeError):
    """The client (or the connection pool it was given) is closed; no request was sent."""


class WrongEventLoopError(AvatarioError, RuntimeError):
    """An async client was used on an event loop other than its own; no request was sent.

    An `AsyncAvatarioClient` belongs to the event loop it first sends on (or to the loop of
    the `aiohttp.ClientSession` it was given): its pooled connections live there. Make the
    client inside the loop that uses it, one per loop (in pytest, in a fixture with the same
    scope as the event loop; in a service, in its lifespan).
    """


class APIError(AvatarioError):
    """A call to Avatario failed. `attempts` counts every attempt made, the first included.

    `outcome` says what Avatario may have done with the last attempt; `may_have_started` is
    True when the avatar may already be on its way (a call that starts sessions, with an
    unknown outcome or a 2xx with a bad body; never for a call that only reads, nor for
    `warm_up`), and `idempotency_key` is the key the call sent: pass it again as
    ``idempotency_key=`` to retry the same logical call by hand where the deployment
    deduplicates by key.
    """

    retryable: bool = False
    """Whether the client's retry policy would retry this failure (set when it gives up)."""
    not_retried_because: str | None = None
    """Why a retryable failure was not retried (attempts or time used up, Retry-After too
    long, the retry budget, the client closed), or None."""

    def __init__(
        self,
        message: str,
        *,
        attempts: int = 1,
        outcome: Outcome = Outcome.UNKNOWN,
        idempotency_key: str | None = None,
        may_have_started: bool | None = None,
    ) -> None:
        self.message: str = message
        self.attempts: int = attempts
        self.outcome: Outcome = outcome
        self.idempotency_key: str | None = idempotency_key
        #: True when Avatario may have started the session despite this error.
        self.may_have_started: bool = (
            outcome in (Outcome.UNKNOWN, Outcome.STARTED)
            if may_have_started is None
            else may_have_started
        )
        super().__init__(message)

    def __str__(self) -> str:
        text = self.message
        if self.attempts > 1:
            text += f" (after {self.attempts} attempts)"
        if self.not_retried_because:
            text += f"; not retried: {self.not_retried_because}"
        return text


class APIConnectionError(APIError):
    """No response arrived: refused, reset, DNS failure, TLS failure or a protocol error.

    The transport's own exception is kept as ``__cause__``. `outcome` is `Outcome.NOT_SENT`
    when the request cannot have reached Avatario, else `Outcome.UNKNOWN`.
    """


class APITimeoutError(APIConnectionError):
    """No complete response arrived within the attempt's timeout (cut to the call's deadline)."""


class APIStatusError(APIError):
    """Avatario (or a proxy in front of it) answered with a non-2xx status.

    `body` holds at most 4096 characters of the response text; `retry_after` is the server's
    requested wait in seconds when it sent ``Retry-After`` or ``retry-after-ms``.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        body: str,
        request_id: str | None,
        headers: Mapping[str, str],
        retry_after: float | None = None,
        attempts: int = 1,
        outcome: Outcome = Outcome.REFUSED,
        idempotency_key: str | None = None,
        may_have_started: bool | None = None,
    ) -> None:
        super().__init__(
            message,
            attempts=attempts,
            outcome=outcome,
            idempotency_key=idempotency_key,
            may_have_started=may_have_started,
        )
        self.status_code: int = status_code
        self.body: str = body[:MAX_ERROR_BODY_CHARS]
        self.request_id: str | None = request_id
        self.headers: Mapping[str, str] = headers
        self.retry_after: float | None = retry_after


class BadRequestError(APIStatusError):
    """400: the request was malformed."""


class AuthenticationError(APIStatusError):
    """401: the API key is missing or not valid."""


class PermissionDeniedError(APIStatusError):
    """403: the key may not use this avatar or account."""


class NotFoundError(APIStatusError):
    """404: what the request names does not exist (for start-session, the avatar), or the
    endpoint itself does not (a wrong `base_url`)."""


class ConflictError(APIStatusError):
    """409: the idempotency key was already used for a different request."""


class UnprocessableEntityError(APIStatusError):
    """422: the body is JSON but does not match the request schema."""


class RateLimitError(APIStatusError):
    """429: too many requests. `retry_after` is the server's requested wait, or None."""


class InternalServerError(APIStatusError):
    """A 5xx status: Avatario or a proxy in front of it failed."""


class APIResponseValidationError(APIError):
    """A 2xx arrived but its body is not the documented JSON object.

    Never retried: the operation was carried out (`outcome` is `Outcome.STARTED`); for
    start-session the session may already have started and sending again could start a second
    avatar. `body` holds at most 4096 characters of what arrived.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        body: str,
        request_id: str | None,
        attempts: int = 1,
        idempotency_key: str | None = None,
        may_have_started: bool | None = None,
    ) -> None:
        super().__init__(
            message,
            attempts=attempts,
            outcome=Outcome.STARTED,
            idempotency_key=idempotency_key,
            may_have_started=may_have_started,
        )
        self.status_code: int = status_code
        self.body: str = body[:MAX_ERROR_BODY_CHARS]
        self.request_id: str | None = request_id


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}


def status_error_class(status_code: int) -> type[APIStatusError]:
    """The error class for a non-2xx status: its own class, or plain `APIStatusError`."""
    if 500 <= status_code <= 599:
        return InternalServerError
    return _BY_STATUS.get(status_code, APIStatusError)
