"""The value types of the public API: RetryPolicy, VideoOptions and StartSessionResult."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from ._config import check_background_url, check_seconds, check_video_size
from .errors import AvatarioConfigError

DEFAULT_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


def _seconds(*, allow_zero: bool = True) -> Any:
    def check(instance: object, attribute: attrs.Attribute[float], value: object) -> None:
        check_seconds(attribute.name, value, allow_zero=allow_zero)

    return check


def _positive_int(instance: object, attribute: attrs.Attribute[int], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{attribute.name} must be an int, not {type(value).__name__}")
    if value < 1:
        raise AvatarioConfigError(attribute.name, "must be at least 1")


def _statuses(value: Iterable[int]) -> frozenset[int]:
    statuses = frozenset(value)
    for status in statuses:
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            raise AvatarioConfigError("retry_statuses", "must hold HTTP status codes")
        if 200 <= status < 300:
            raise AvatarioConfigError(
                "retry_statuses", "must not hold a 2xx status: a success is never sent again"
            )
    return statuses


@attrs.frozen
class RetryPolicy:
    """When and how a failed call is tried again.

    Only connection errors, timeouts and the statuses in `retry_statuses` are retried.
    The delay before retry n is uniform(0, min(max_delay, initial_delay * 2 ** (n - 1)))
    (full jitter), unless the server sent Retry-After and `respect_retry_after` is set.
    `max_elapsed` bounds the whole call, attempts and sleeps included.
    """

    max_attempts: int = attrs.field(default=3, validator=_positive_int)
    initial_delay: float = attrs.field(default=0.5, validator=_seconds())
    max_delay: float = attrs.field(default=8.0, validator=_seconds())
    max_elapsed: float = attrs.field(default=30.0, validator=_seconds(allow_zero=False))
    respect_retry_after: bool = True
    max_retry_after: float = attrs.field(default=60.0, validator=_seconds())
    retry_statuses: frozenset[int] = attrs.field(
        default=DEFAULT_RETRY_STATUSES, converter=_statuses
    )

    @classmethod
    def no_retries(cls, *, max_elapsed: float = 30.0) -> RetryPolicy:
        """A policy that makes exactly one attempt."""
        return cls(max_attempts=1, max_elapsed=max_elapsed)


def _video_size(instance: object, attribute: attrs.Attribute[int], value: object) -> None:
    check_video_size(attribute.name, value)


def _background(instance: object, attribute: attrs.Attribute[str | None], value: object) -> None:
    check_background_url(value)


@attrs.frozen
class VideoOptions:
    """The rendered video: its size in pixels and an optional background image URL."""

    height: int = attrs.field(default=720, validator=_video_size)
    width: int = attrs.field(default=1280, validator=_video_size)
    background_url: str | None = attrs.field(default=None, validator=_background)


@attrs.frozen
class StartSessionResult:
    """An accepted start-session call.

    `data` is the whole JSON object Avatario returned, unknown keys included;
    `session_id` is its ``session_id`` when present; `request_id` comes from ``x-request-id``.
    """

    session_id: str | None
    data: Mapping[str, Any]
    request_id: str | None
    attempts: int
    status_code: int
