"""What a user configures, checked before any I/O: the key, the base URL, proxies from the
environment, the public settings types and one client's resolved `Settings`.

Each check raises `AvatarioConfigError` naming the argument (or environment variable), or
`TypeError` for a value of the wrong type, and never echoes a secret. `RetryPolicy` and
`VideoOptions` are the public settings types; `Settings` is one client's resolved
configuration, shared with its `with_options` copies. The checks of a call's own inputs are
in `_inputs`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import attrs
import httpx

from ._clock import Clock
from ._environment import Environment
from ._inputs import (
    check_background_url,
    check_seconds,
    check_video_size,
    is_loopback_host,
    is_visible_ascii,
    require_str,
)
from .errors import AvatarioConfigError

DEFAULT_BASE_URL = "https://avatario.ai/api/sdk"
API_KEY_ENV = "AVATARIO_API_KEY"
BASE_URL_ENV = "AVATARIO_BASE_URL"


def resolve_api_key(api_key: object) -> str:
    """The key from the argument, else from AVATARIO_API_KEY. Never echoed."""
    if api_key is None:
        api_key = os.environ.get(API_KEY_ENV)
    if api_key is None or api_key == "":
        raise AvatarioConfigError(
            "api_key", f"no Avatario API key: set {API_KEY_ENV} (or pass api_key=)"
        )
    key = require_str("api_key", api_key)
    if not is_visible_ascii(key):
        raise AvatarioConfigError(
            "api_key", "must be visible ASCII with no spaces or line breaks (check for a newline)"
        )
    return key


def resolve_base_url(base_url: object, *, allow_insecure_http: bool) -> str:
    """The API root from the argument, else AVATARIO_BASE_URL, else production.

    https is required, except for loopback hosts or with ``allow_insecure_http=True``.
    """
    if base_url is None:
        base_url = os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
    text = require_str("base_url", base_url)
    try:
        url = httpx.URL(text)
    except httpx.InvalidURL:
        raise AvatarioConfigError("base_url", "is not a valid URL") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise AvatarioConfigError("base_url", "must be an absolute http(s) URL with a host")
    if url.userinfo:
        raise AvatarioConfigError(
            "base_url", "must not carry credentials; the API key goes in api_key"
        )
    if url.query or url.fragment:
        raise AvatarioConfigError("base_url", "must not have a query or a fragment")
    if url.scheme == "http" and not allow_insecure_http and not is_loopback_host(url.host):
        raise AvatarioConfigError(
            "base_url",
            "must use https (plain http is allowed only for loopback hosts, or with "
            "allow_insecure_http=True; on the command line --allow-insecure-http)",
        )
    return str(url).rstrip("/")


# -- the public settings types ---------------------------------------------------------------

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


def _budget(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        check_seconds(attribute.name, value)  # a finite number >= 0; a share, not seconds


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
    """When and how a failed call is tried again (see [Retries](../retries.md)).

    A failure is retried only when sending again cannot do what the first attempt may have
    done: the request was not sent, or a status in `retry_statuses` refused it (408, 429,
    503). After an unknown outcome (a read timeout or reset after the request went out, 500,
    502, 504) an operation that only reads is sent again; one that starts a session only
    with ``retry_unknown_outcome=True``, for deployments known to deduplicate by
    ``Idempotency-Key``. A 2xx is never sent again.

    The delay before retry n is uniform(0, min(max_delay, initial_delay * 2 ** (n - 1)))
    (backoff's exponential schedule, full jitter), unless the server sent Retry-After and
    `respect_retry_after` is set. `max_elapsed` bounds the whole call, attempts and sleeps
    included; a retry is sent only if at least `min_attempt_time` of it is left after the wait
    (time to hear an answer), and any attempt's request only while that much of the attempt is
    left; else the call ends with the last error and `not_retried_because` says so.
    `retry_budget` caps retries at that share of the calls made recently in the budget's scope
    (None: no cap). While Avatario fails in that scope and the trouble is younger than
    `ride_out`, a call with time left does not send its retry into the trouble: it waits,
    sending nothing, until Avatario is seen answering again (another call's success, or its
    own probe), then retries; once the trouble is older, retries go by the budget alone and a
    refused one fails at once (see [Retries](../retries.md#a-blip-is-not-an-outage)).

    Attributes:
        max_attempts: Attempts in all, the first included (1: no retries).
        initial_delay: The first backoff ceiling, in seconds; it doubles per retry.
        max_delay: The largest backoff ceiling, in seconds.
        max_elapsed: The deadline of the whole call, in seconds.
        respect_retry_after: Wait as long as ``Retry-After`` / ``retry-after-ms`` say.
        max_retry_after: Give up at once when the server asks for a longer wait than this.
        retry_statuses: Statuses that may be retried (408, 429, 500, 502, 503, 504); 500,
            502 and 504, for a call that starts a session, only with `retry_unknown_outcome`.
        retry_unknown_outcome: Also resend a call that starts a session when its outcome is
            unknown (only for a deployment known to deduplicate by ``Idempotency-Key``).
        retry_budget: Retries allowed as a share of recent calls (None: no budget).
        min_attempt_time: The least time, in seconds, a retry must have left before
            `max_elapsed` to be sent at all, and an attempt's request of its attempt.
        ride_out: Seconds of trouble a call waits out for Avatario to answer again (0: no
            waiting; a refused retry fails at once).
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
    retry_unknown_outcome: bool = False
    retry_budget: float | None = attrs.field(default=0.2, validator=_budget)
    min_attempt_time: float = attrs.field(default=0.5, validator=_seconds())
    ride_out: float = attrs.field(default=15.0, validator=_seconds())

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
    """The rendered video: its size in pixels and an optional background image URL.

    Attributes:
        height: Height of the video in pixels (1 to 4096).
        width: Width of the video in pixels (1 to 4096).
        background_url: An http(s) URL of an image drawn behind the avatar, or None.
    """

    height: int = attrs.field(default=720, validator=_video_size)
    width: int = attrs.field(default=1280, validator=_video_size)
    background_url: str | None = attrs.field(default=None, validator=_background)


def check_retry(retry: object) -> RetryPolicy:
    if not isinstance(retry, RetryPolicy):
        raise TypeError(f"retry must be a RetryPolicy, not {type(retry).__name__}")
    return retry


def check_connect_timeout(value: object) -> float | None:
    """None (connecting is bounded by the attempt's timeout alone) or seconds > 0."""
    if value is None:
        return None
    return check_seconds("connect_timeout", value, allow_zero=False)


class Settings:
    """One client's configuration, resolved and checked. The key is kept out of the repr."""

    __slots__ = (
        "allow_insecure_http",
        "api_key",
        "base_url",
        "clock",
        "connect_timeout",
        "environment",
        "request_headers",
        "retry",
        "timeout",
    )

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str,
        timeout: float,
        connect_timeout: float | None,
        retry: RetryPolicy,
        clock: Clock,
        allow_insecure_http: bool = False,
        environment: Environment | None = None,
    ) -> None:
        self.api_key = api_key
        self.base_url = base_url
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.retry = retry
        self.clock = clock
        #: Plain http:// (and ws://) allowed beyond loopback: for the base URL, and for the
        #: LiveKit URL a call names.
        self.allow_insecure_http = allow_insecure_http
        #: Proxy and CA locations, read from the environment when the client was made.
        self.environment = environment if environment is not None else Environment.read(base_url)
        #: The headers every request carries (the key included), made by the request path on
        #: first use and kept with the client's settings, not in a module-wide cache.
        self.request_headers: dict[str, str] | None = None

    def __repr__(self) -> str:
        return (
            f"Settings(base_url={self.base_url!r}, timeout={self.timeout!r}, "
            f"connect_timeout={self.connect_timeout!r}, retry={self.retry!r})"
        )

    @classmethod
    def build(
        cls,
        api_key: object,
        *,
        base_url: object,
        timeout: object,
        connect_timeout: object,
        retry: RetryPolicy | None,
        allow_insecure_http: bool,
        clock: Clock,
    ) -> Settings:
        return cls(
            api_key=resolve_api_key(api_key),
            base_url=resolve_base_url(base_url, allow_insecure_http=allow_insecure_http),
            timeout=check_seconds("timeout", timeout, allow_zero=False),
            connect_timeout=check_connect_timeout(connect_timeout),
            retry=check_retry(retry) if retry is not None else RetryPolicy(),
            clock=clock,
            allow_insecure_http=bool(allow_insecure_http),
        )

    def with_options(
        self,
        *,
        timeout: object,
        retry: RetryPolicy | None,
        connect_timeout: object = ...,
    ) -> Settings:
        """These settings with another timeout, connect timeout and/or retry policy (checked
        like the originals); an argument left out (None for `timeout` and `retry`) is kept."""
        return Settings(
            api_key=self.api_key,
            base_url=self.base_url,
            timeout=self.timeout
            if timeout is None
            else check_seconds("timeout", timeout, allow_zero=False),
            connect_timeout=self.connect_timeout
            if connect_timeout is ...
            else check_connect_timeout(connect_timeout),
            retry=self.retry if retry is None else check_retry(retry),
            clock=self.clock,
            allow_insecure_http=self.allow_insecure_http,
            environment=self.environment,
        )
