"""What the sync and async clients share: settings, repr, with_options and call preparation."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from . import _core
from ._clock import SYSTEM_CLOCK, Clock
from ._models import RetryPolicy, VideoOptions
from ._retry import CallState

HttpT = TypeVar("HttpT")
SenderT = TypeVar("SenderT")
ClientT = TypeVar("ClientT", bound="ClientBase[Any, Any]")


class ClientBase(Generic[HttpT, SenderT]):
    """Configuration and call preparation; subclasses add sending and sleeping.

    `HttpT` is the pool a user may pass as `http_client`; `SenderT` the sender built on it.
    """

    _settings: _core.Settings
    _sender: SenderT
    _owns_sender: bool

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        http_client: HttpT | None = None,
        allow_insecure_http: bool = False,
        clock: Clock | None = None,
    ) -> None:
        self._settings = _core.Settings.build(
            api_key,
            base_url=base_url,
            timeout=timeout,
            retry=retry,
            allow_insecure_http=allow_insecure_http,
            clock=clock if clock is not None else SYSTEM_CLOCK,
        )
        self._owns_sender = True
        self._sender = self._new_sender(http_client)

    def _new_sender(self, http_client: HttpT | None) -> SenderT:
        raise NotImplementedError

    @property
    def base_url(self) -> str:
        return self._settings.base_url

    @property
    def timeout(self) -> float:
        return self._settings.timeout

    @property
    def retry(self) -> RetryPolicy:
        return self._settings.retry

    def with_options(
        self: ClientT, *, timeout: float | None = None, retry: RetryPolicy | None = None
    ) -> ClientT:
        """A client with other settings that shares this one's connection pool.

        The copy never closes the pool; close the original when both are done.
        """
        clone = object.__new__(type(self))
        clone._settings = self._settings.with_options(timeout=timeout, retry=retry)
        clone._sender = self._sender
        clone._owns_sender = False
        return clone

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(base_url={self.base_url!r}, timeout={self.timeout!r}, "
            f"retry={self.retry!r}, api_key='***')"
        )

    def _prepare(
        self,
        avatar_id: str,
        agent_identity: str,
        livekit_url: str,
        livekit_token: str,
        video: VideoOptions | None,
        idempotency_key: str | None,
    ) -> tuple[_core.PreparedCall, CallState]:
        """The checked, serialised call (raising before any I/O) and its retry state."""
        call = _core.prepare_call(
            self._settings,
            avatar_id,
            agent_identity,
            livekit_url,
            livekit_token,
            video,
            idempotency_key,
        )
        state = CallState(
            policy=self._settings.retry, timeout=self._settings.timeout, clock=self._settings.clock
        )
        return call, state
