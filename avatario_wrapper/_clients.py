"""The public clients. Both share every decision; only sending and sleeping differ.

`_ClientBase` holds the settings, the transport and the retry budget (shared with
`with_options` copies) and `_call`'s first half: the request prepared by its operation
(`_request.prepare`: inputs checked, body serialised once) and the call handed to the one
call flow (`_flow`), which a sync or an async driver runs. Each public method is one
``self._call(OPERATION, ...)``.
"""

from __future__ import annotations

import importlib.util
import urllib.parse
from collections.abc import Coroutine
from types import EllipsisType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import httpx

from ._budget import BudgetScope, store_for
from ._clock import SYSTEM_CLOCK, Clock
from ._closing import AClosedOnExit, ClosedOnExit
from ._drivers import drive, drive_async
from ._environment import Environment
from ._operations import START_SESSION, StartSessionResult
from ._request import Operation, PreparedRequest, prepare, warm_up_request
from ._settings import RetryPolicy, Settings, VideoOptions
from ._steps import Call, RoomWatch
from ._telemetry import start_call
from ._transports.base import AsyncTransport, SyncTransport, closed_error
from ._transports.httpx import AsyncHttpxTransport, HttpxTransport

if TYPE_CHECKING:
    import aiohttp

    #: The pools an `AsyncAvatarioClient` sends over when given one.
    AsyncHttp = httpx.AsyncClient | aiohttp.ClientSession
else:
    AsyncHttp = Any  # aiohttp is optional: not imported for the class statement

HttpT = TypeVar("HttpT")
TransportT = TypeVar("TransportT", SyncTransport, AsyncTransport)
ClientT = TypeVar("ClientT", bound="_ClientBase[Any, Any]")
ResultT = TypeVar("ResultT")


class _ClientBase(Generic[HttpT, TransportT]):
    """Configuration and the start of every call; subclasses add the driver and closing.

    `HttpT` is the pool a user may pass as `http_client`; `TransportT` the transport over it.
    """

    _settings: Settings
    _transport: TransportT
    _owns_transport: bool
    _closed: bool
    _budget: BudgetScope

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        timeout: float = 10.0,
        connect_timeout: float | None = 1.0,
        retry: RetryPolicy | None = None,
        http_client: HttpT | None = None,
        allow_insecure_http: bool = False,
        clock: Clock | None = None,
        retry_budget_store: str | None = None,
    ) -> None:
        """A client; every setting is checked here, before any I/O.

        Args:
            api_key: The Avatario API key; default ``AVATARIO_API_KEY``. Never shown or logged.
            base_url: The API root; default ``AVATARIO_BASE_URL``, then
                ``https://avatario.ai/api/sdk``. Must be https, except for loopback hosts or
                with `allow_insecure_http`.
            timeout: Seconds each attempt may take, connect to last body byte (cut to what is
                left of the retry policy's `max_elapsed`).
            connect_timeout: Seconds opening a connection (TCP and TLS) may take within an
                attempt, so a lost SYN leaves time for a fresh attempt; None: only `timeout`
                bounds it. See [Retries](../retries.md#connecting).
            retry: The `RetryPolicy`; default ``RetryPolicy()``.
            http_client: A pool to send with, used as is (its TLS and proxy settings
                included; its redirects never followed) and never closed by the client: an
                `httpx.Client` for `AvatarioClient`; an `httpx.AsyncClient` or an
                `aiohttp.ClientSession` (a LiveKit worker's shared session, say) for
                `AsyncAvatarioClient`, which without one sends over aiohttp when it is
                installed (the ``aiohttp`` extra; much faster with many requests in flight,
                see [Benchmarks](../benchmarks.md)), else over an `httpx.AsyncClient`.
            allow_insecure_http: Allow a plain-http `base_url`, and plain ``ws://`` /
                ``http://`` LiveKit URLs, that are not loopback.
            clock: Time, sleeps and jitter (tests pass `avatario_wrapper.testing.FakeClock`).
            retry_budget_store: Where the retry budget, the server's shared cool-down and the
                trouble signal live, for this origin and key: ``"process"`` (this client and
                its `with_options` copies), ``"host"`` (every process of this user on this
                machine) or a ``redis://`` / ``rediss://`` / ``unix://`` URL (every process
                sharing that Redis; the ``redis`` extra). Default: ``AVATARIO_RETRY_BUDGET_URL``,
                else ``"process"``. See [Retries](../retries.md#where-the-budget-lives).
        """
        self._settings = Settings.build(
            api_key,
            base_url=base_url,
            timeout=timeout,
            connect_timeout=connect_timeout,
            retry=retry,
            allow_insecure_http=allow_insecure_http,
            clock=clock if clock is not None else SYSTEM_CLOCK,
        )
        self._owns_transport = True
        self._closed = False
        settings = self._settings
        parts = urllib.parse.urlsplit(settings.base_url)
        self._budget = BudgetScope(
            store_for(retry_budget_store, settings.clock),
            f"{parts.scheme}://{parts.netloc}",
            settings.api_key,
            settings.clock,
        )
        self._transport = self._new_transport(http_client)

    def _new_transport(self, http_client: HttpT | None) -> TransportT:
        raise NotImplementedError

    @property
    def base_url(self) -> str:
        return self._settings.base_url

    @property
    def timeout(self) -> float:
        return self._settings.timeout

    @property
    def connect_timeout(self) -> float | None:
        return self._settings.connect_timeout

    @property
    def retry(self) -> RetryPolicy:
        return self._settings.retry

    @property
    def closed(self) -> bool:
        """True once this client (or the pool it sends over) is closed; it then refuses to send."""
        return self._closed or self._transport.closed

    def with_options(
        self: ClientT,
        *,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
        connect_timeout: float | EllipsisType | None = ...,
    ) -> ClientT:
        """A client with other settings that shares this one's connection pool and retry budget.

        Settings left out are kept (``connect_timeout=None`` means connecting is bounded by
        the attempt's timeout alone). The copy never closes the pool; close the original when
        both are done.
        """
        clone = object.__new__(type(self))
        clone._settings = self._settings.with_options(
            timeout=timeout, retry=retry, connect_timeout=connect_timeout
        )
        clone._transport = self._transport
        clone._budget = self._budget
        clone._owns_transport = False
        clone._closed = self._closed
        return clone

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(base_url={self.base_url!r}, timeout={self.timeout!r}, "
            f"connect_timeout={self.connect_timeout!r}, retry={self.retry!r}, api_key='***')"
        )

    def _begin(
        self,
        operation: Operation[ResultT] | None,
        inputs: dict[str, Any],
        room: RoomWatch[ResultT] | None = None,
    ) -> Call[ResultT]:
        """One call, ready for its flow: the request checked and serialised (raising before
        any I/O). `operation` None is `warm_up`: one attempt, never retried, no budget."""
        if self.closed:
            raise closed_error()
        settings = self._settings
        request: PreparedRequest[Any]
        if operation is None:
            request, policy = warm_up_request(settings), _warm_up_policy(settings.timeout)
        else:
            request, policy = prepare(settings, operation, inputs), settings.retry
        return Call(
            request,
            policy=policy,
            timeout=settings.timeout,
            connect_timeout=settings.connect_timeout,
            clock=settings.clock,
            scope=None if operation is None else self._budget,
            is_closed=lambda: self.closed,
            trace=start_call(request),
            room=room,
        )


def _warm_up_policy(timeout: float) -> RetryPolicy:
    """warm_up's: one attempt, bounded by the client's timeout, outside the retry budget."""
    return RetryPolicy(max_attempts=1, max_elapsed=timeout, retry_budget=None)


class AvatarioClient(_ClientBase[httpx.Client, SyncTransport], ClosedOnExit):
    """A blocking Avatario client with one pooled `httpx.Client`, safe to share across threads.

    A client made before ``os.fork()`` never shares a pooled connection with its child: the
    child opens its own.
    """

    def _new_transport(self, http_client: httpx.Client | None) -> SyncTransport:
        if http_client is not None and not isinstance(http_client, httpx.Client):
            raise TypeError(
                f"http_client must be an httpx.Client, not {type(http_client).__name__}"
            )
        return HttpxTransport(http_client, environment=self._settings.environment)

    def _call(self, operation: Operation[ResultT] | None, **inputs: Any) -> ResultT:
        return drive(self._begin(operation, inputs), self._transport)

    def start_session(
        self,
        *,
        avatar_id: str,
        agent_identity: str,
        livekit_url: str,
        livekit_token: str,
        video: VideoOptions | None = None,
        idempotency_key: str | None = None,
    ) -> StartSessionResult:
        """Send the avatar `avatar_id` into the LiveKit room at `livekit_url`.

        Every input is checked before any I/O. A failure is retried only where Avatario cannot
        have started the session (see `RetryPolicy`), with one idempotency key for every
        attempt.

        Args:
            avatar_id: The avatar (face) to render, as in the Avatario console.
            agent_identity: The LiveKit participant identity of your agent; the avatar
                follows its audio. Missing or blank: `MissingAgentIdentityError`.
            livekit_url: The LiveKit server URL (``wss://`` or ``https://``; plain ``ws://``
                or ``http://`` only to a loopback host, or with the client's
                `allow_insecure_http`).
            livekit_token: A LiveKit token minted for the avatar's own identity (see
                `avatario_wrapper.livekit.mint_avatar_token`). Never logged or shown.
            video: Size and background of the video; default 1280 x 720.
            idempotency_key: The key every attempt carries; default a new UUID. Pass an
                error's `idempotency_key` to retry the same logical call by hand.

        Returns:
            The `StartSessionResult`.

        Raises:
            AvatarioConfigError: An input is not acceptable (nothing was sent).
            APIError: The call failed; its `outcome` and `may_have_started` say what
                Avatario may have done.
        """
        return self._call(
            START_SESSION,
            avatar_id=avatar_id,
            agent_identity=agent_identity,
            livekit_url=livekit_url,
            livekit_token=livekit_token,
            video=video,
            idempotency_key=idempotency_key,
        )

    def warm_up(self) -> None:
        """Open (and pool) a connection to the base URL's origin before the first call.

        Pays the TCP connect and TLS handshake (and a proxy's tunnel) ahead of time, e.g. in
        a LiveKit worker's prewarm, so the next `start_session` reuses the connection. No
        public API of httpx or aiohttp opens a pooled connection without a request, so this
        sends one ``HEAD {base_url}/`` with only ``user-agent`` and ``accept-encoding:
        identity`` (plus the transport's defaults, and a passed-in pool's own default
        headers): no API key, no body, no idempotency key, nothing that starts a session.
        Its status is ignored and it is never retried; it is bounded by the client's
        `timeout`. If the server answers with ``Connection: close`` nothing is pooled.
        Raises `APIConnectionError` (`APITimeoutError`) when the origin cannot be reached, and
        `ClientClosedError` once the client is closed.
        """
        self._call(None)

    def close(self) -> None:
        """Refuse to send from now on; close the connection pool if this client made it.

        A `with_options` copy closes only itself: the pool stays open for the original.
        """
        self._closed = True
        if self._owns_transport:
            self._transport.close()


def _is_aiohttp_session(value: object) -> bool:
    return any(
        c.__module__.startswith("aiohttp") and c.__name__ == "ClientSession"
        for c in type(value).__mro__
    )


class AsyncAvatarioClient(_ClientBase[AsyncHttp, AsyncTransport], AClosedOnExit):
    """An asyncio Avatario client with one connection pool, safe to share across tasks.

    The client belongs to one event loop: the loop it first sends on (or the loop of the
    aiohttp session it was given). Used on another loop it raises `WrongEventLoopError`
    before sending anything; make one client per event loop. Cancelling a task that is
    calling it ends the call with `asyncio.CancelledError` and sends nothing more.
    """

    def _new_transport(self, http_client: Any) -> AsyncTransport:
        environment = self._settings.environment
        if isinstance(http_client, httpx.AsyncClient):
            return AsyncHttpxTransport(http_client, environment=environment)
        if http_client is not None and not _is_aiohttp_session(http_client):
            raise TypeError(
                "http_client must be an httpx.AsyncClient or an aiohttp.ClientSession, "
                f"not {type(http_client).__name__}"
            )
        if http_client is not None or _aiohttp_fits(environment):
            from ._transports.aiohttp import AiohttpTransport  # noqa: PLC0415 - only when used

            return AiohttpTransport(http_client, environment=environment)
        return AsyncHttpxTransport(None, environment=environment)

    def _call(
        self,
        operation: Operation[ResultT] | None,
        room: RoomWatch[ResultT] | None = None,
        **inputs: Any,
    ) -> Coroutine[Any, Any, ResultT]:
        # Not a coroutine itself: the inputs are checked here and the driver is returned to
        # be awaited at once (one coroutine less per call).
        return drive_async(self._begin(operation, inputs, room), self._transport)

    async def start_session(
        self,
        *,
        avatar_id: str,
        agent_identity: str,
        livekit_url: str,
        livekit_token: str,
        video: VideoOptions | None = None,
        idempotency_key: str | None = None,
    ) -> StartSessionResult:
        """`AvatarioClient.start_session`, awaited: the same arguments, result and errors.

        Cancelling the task ends the call with `asyncio.CancelledError`; nothing more is sent.
        """
        return await self._call(
            START_SESSION,
            avatar_id=avatar_id,
            agent_identity=agent_identity,
            livekit_url=livekit_url,
            livekit_token=livekit_token,
            video=video,
            idempotency_key=idempotency_key,
        )

    async def warm_up(self) -> None:
        """`AvatarioClient.warm_up`, awaited: one ``HEAD {base_url}/`` that pools a connection
        (no key, no body, never retried, bounded by the client's `timeout`)."""
        await self._call(None)

    async def aclose(self) -> None:
        """Refuse to send from now on; close the connection pool if this client made it.

        A `with_options` copy closes only itself: the pool stays open for the original.
        """
        self._closed = True
        if self._owns_transport:
            await self._transport.aclose()

    def _close_from_sync(self) -> None:
        """`aclose()` from synchronous code with no running loop (the teardown of a sync pytest
        fixture): the pool is closed on its own event loop, or by its sockets if that loop is
        closed. Used by the pytest plugin; a coroutine should await `aclose()`."""
        self._closed = True
        if self._owns_transport:
            self._transport.close_from_sync()


def _aiohttp_fits(environment: Environment) -> bool:
    """aiohttp is installed and the environment's proxy is not SOCKS (aiohttp has none)."""
    if importlib.util.find_spec("aiohttp") is None:
        return False
    return environment.proxy is None or not environment.proxy.is_socks
