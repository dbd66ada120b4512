"""The decisions shared by the sync and async clients, free of I/O.

Building the request (from the generated model and request builder), reading a bounded body,
turning a reply into a `StartSessionResult` or an error, turning a transport's exception into
ours, and reading Retry-After all happen here. The senders only send and read chunks; the
clients only add the retry loop.
"""

from __future__ import annotations

import email.utils
import json
import math
import uuid
from collections.abc import Mapping

import attrs
from avatario_client.api.sessions import start_session as start_session_op
from avatario_client.models.live_kit_room import LiveKitRoom
from avatario_client.models.start_session_request import StartSessionRequest
from avatario_client.models.start_session_response import StartSessionResponse
from avatario_client.types import UNSET

from . import _config
from ._clock import Clock
from ._models import RetryPolicy, StartSessionResult, VideoOptions
from ._version import __version__
from .errors import (
    MAX_ERROR_BODY_CHARS,
    APIConnectionError,
    APIResponseValidationError,
    APITimeoutError,
    status_error_class,
)

USER_AGENT = f"avatario-wrapper/{__version__} (python)"
#: Success bodies larger than this are not read whole; the call fails without a resend.
MAX_SUCCESS_BODY_BYTES = 1024 * 1024
#: Enough bytes for MAX_ERROR_BODY_CHARS characters of UTF-8.
MAX_ERROR_BODY_BYTES = MAX_ERROR_BODY_CHARS * 4
REDACTED = "[redacted]"
DEFAULT_VIDEO = VideoOptions()
#: Shorter "secrets" are not real keys or tokens; replacing them would garble messages.
MIN_REDACTED_CHARS = 6


@attrs.frozen
class Settings:
    """One client's configuration. The key is kept out of the repr."""

    api_key: str = attrs.field(repr=False)
    base_url: str
    timeout: float
    retry: RetryPolicy
    clock: Clock = attrs.field(repr=False)

    @classmethod
    def build(
        cls,
        api_key: object,
        *,
        base_url: object,
        timeout: object,
        retry: RetryPolicy | None,
        allow_insecure_http: bool,
        clock: Clock,
    ) -> Settings:
        return cls(
            api_key=_config.resolve_api_key(api_key),
            base_url=_config.resolve_base_url(base_url, allow_insecure_http=allow_insecure_http),
            timeout=_config.check_seconds("timeout", timeout, allow_zero=False),
            retry=_check_retry(retry) if retry is not None else RetryPolicy(),
            clock=clock,
        )

    def with_options(self, *, timeout: object, retry: RetryPolicy | None) -> Settings:
        """These settings with another timeout and/or retry policy (checked like the originals)."""
        return attrs.evolve(
            self,
            timeout=self.timeout
            if timeout is None
            else _config.check_seconds("timeout", timeout, allow_zero=False),
            retry=self.retry if retry is None else _check_retry(retry),
        )


def _check_retry(retry: object) -> RetryPolicy:
    if not isinstance(retry, RetryPolicy):
        raise TypeError(f"retry must be a RetryPolicy, not {type(retry).__name__}")
    return retry


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """`text` with every secret replaced by a marker."""
    for secret in secrets:
        if len(secret) >= MIN_REDACTED_CHARS and secret in text:
            text = text.replace(secret, REDACTED)
    return text


@attrs.define(frozen=False, slots=True)
class PreparedCall:
    """One start-session call, validated and serialised once, sent the same on every attempt.

    Made on every call, so a plain slotted class (frozen attrs classes cost more to build).
    Headers, body and secrets are kept out of the repr.
    """

    method: str
    url: str
    headers: Mapping[str, str] = attrs.field(repr=False)
    content: bytes = attrs.field(repr=False)
    idempotency_key: str
    secrets: tuple[str, ...] = attrs.field(repr=False)
    retry_statuses: frozenset[int]

    def connection_error(
        self, exc: BaseException, attempts: int, *, timed_out: bool
    ) -> APIConnectionError:
        """The one place where a transport's exception becomes ours (raise it `from exc`).

        The senders say which of their exceptions are timeouts; the rest are connection errors.
        """
        cls = APITimeoutError if timed_out else APIConnectionError
        what = "timed out waiting for Avatario" if timed_out else "could not reach Avatario"
        detail = redact(str(exc), self.secrets)
        message = f"{what}: {type(exc).__name__}" + (f": {detail}" if detail else "")
        return cls(message, attempts=attempts)

    def outcome(self, reply: Reply, attempts: int, clock: Clock) -> StartSessionResult:
        """The result of a response, or the error to raise."""
        status, headers, body = reply.status, reply.headers, reply.body
        request_id = headers.get("x-request-id")
        if 200 <= status < 300:
            return self._success(status, request_id, body, attempts)
        text = redact(body.text(), self.secrets)
        retry_after = parse_retry_after(headers, now=clock.time())
        cls = status_error_class(status)
        reason = reply.reason or "error"
        summary = _error_summary(text)
        message = f"Avatario answered HTTP {status} {reason}"
        if summary:
            message += f": {summary}"
        if request_id:
            message += f" [request id {request_id}]"
        error = cls(
            message,
            status_code=status,
            body=text,
            request_id=request_id,
            headers=headers,
            retry_after=retry_after,
            retryable=status in self.retry_statuses,
            attempts=attempts,
        )
        raise error from body.failure

    def _success(
        self, status: int, request_id: str | None, body: BodyReader, attempts: int
    ) -> StartSessionResult:
        def invalid(problem: str) -> APIResponseValidationError:
            return APIResponseValidationError(
                f"Avatario answered HTTP {status} but {problem}; the session may have started, "
                "so the request is not sent again"
                + (f" [request id {request_id}]" if request_id else ""),
                status_code=status,
                body=redact(body.text(), self.secrets),
                request_id=request_id,
                attempts=attempts,
            )

        if body.failure is not None:
            raise invalid("the body was cut off") from body.failure
        if body.overflow:
            raise invalid(f"the body is larger than {MAX_SUCCESS_BODY_BYTES} bytes")
        try:
            data = json.loads(body.raw())
        except (ValueError, RecursionError) as exc:
            raise invalid("the body is not JSON") from exc
        if not isinstance(data, dict):
            raise invalid(f"the body is a JSON {type(data).__name__}, not an object")
        parsed = StartSessionResponse.from_dict(data)
        session_id = None if parsed.session_id is UNSET else parsed.session_id
        if session_id is not None and not isinstance(session_id, str):
            raise invalid("its session_id is not a string")
        return StartSessionResult(
            session_id=session_id,
            data=data,
            request_id=request_id,
            attempts=attempts,
            status_code=status,
        )


def _error_summary(text: str) -> str:
    """The `message` of a JSON error body (or its start), short enough for one line."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        data = None
    if isinstance(data, dict):
        message = data.get("message") or data.get("error") or data.get("detail")
        if isinstance(message, str):
            return message[:200]
    if text.lstrip().startswith("<"):  # an HTML page from a proxy says nothing useful
        return ""
    return " ".join(text.split())[:200]


def prepare_call(
    settings: Settings,
    avatar_id: object,
    agent_identity: object,
    livekit_url: object,
    livekit_token: object,
    video: VideoOptions | None,
    idempotency_key: object,
) -> PreparedCall:
    """Check every input (raising before any I/O) and serialise the request once."""
    agent = _config.check_agent_identity(agent_identity)
    avatar = _config.check_text_id("avatar_id", avatar_id)
    url = _config.check_livekit_url(livekit_url)
    token = _config.check_livekit_token(livekit_token)
    if video is None:
        video = DEFAULT_VIDEO
    elif not isinstance(video, VideoOptions):
        raise TypeError(f"video must be a VideoOptions, not {type(video).__name__}")
    key = _config.check_idempotency_key(idempotency_key) or str(uuid.uuid4())

    model = StartSessionRequest(
        avatario_face_id=avatar,
        agent_id=agent,
        livekit=LiveKitRoom(url=url, token=token),
        video_height=video.height,
        video_width=video.width,
        custom_background_url=video.background_url if video.background_url is not None else UNSET,
    )
    kwargs = start_session_op._get_kwargs(body=model, idempotency_key=key)
    headers = {
        **kwargs["headers"],
        "accept": "application/json",
        "user-agent": USER_AGENT,
        "x-api-key": settings.api_key,
    }
    content = json.dumps(kwargs["json"], ensure_ascii=False, separators=(",", ":")).encode()
    return PreparedCall(
        method=kwargs["method"].upper(),
        url=settings.base_url + kwargs["url"],
        headers=headers,
        content=content,
        idempotency_key=key,
        secrets=(settings.api_key, token),
        retry_statuses=settings.retry.retry_statuses,
    )


class BodyReader:
    """Collects a response body up to a limit that depends on the status, then stops."""

    def __init__(self, status_code: int) -> None:
        self.limit = MAX_SUCCESS_BODY_BYTES if 200 <= status_code < 300 else MAX_ERROR_BODY_BYTES
        self._chunks: list[bytes] = []
        self._size = 0
        self.overflow = False
        self.failure: Exception | None = None

    def feed(self, chunk: bytes) -> bool:
        """Keep `chunk`; True when the limit is passed and reading should stop."""
        room = self.limit - self._size
        self._chunks.append(chunk[:room])
        self._size += min(len(chunk), room)
        if len(chunk) > room:
            self.overflow = True
        return self.overflow

    def fail(self, exc: Exception) -> None:
        """The body broke off: keep what arrived and the reason."""
        self.failure = exc

    def raw(self) -> bytes:
        return b"".join(self._chunks)

    def text(self) -> str:
        return self.raw().decode("utf-8", errors="replace")[:MAX_ERROR_BODY_CHARS]


@attrs.define(slots=True)
class Reply:
    """What a sender got back: status line, headers and the (bounded) body."""

    status: int
    reason: str
    headers: Mapping[str, str]
    body: BodyReader


def parse_retry_after(headers: Mapping[str, str], *, now: float) -> float | None:
    """Seconds the server asked to wait: ``retry-after-ms``, else ``Retry-After`` as
    seconds or an HTTP-date. None when absent, negative, not finite or unreadable."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        seconds = _number(millis)
        if seconds is not None:
            return seconds / 1000.0
    value = headers.get("retry-after")
    if value is None:
        return None
    seconds = _number(value)
    if seconds is not None:
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # an HTTP-date is always GMT
        return None
    return max(0.0, when.timestamp() - now)


def _number(text: str) -> float | None:
    try:
        value = float(text.strip())
    except ValueError:
        return None
    if not math.isfinite(value) or value < 0:
        return None
    return value
