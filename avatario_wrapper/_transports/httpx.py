"""httpx transports, sync and async: one attempt each, held to its deadline, read raw and
bounded.

Every request carries httpcore's ``trace`` extension and every pool our network backend
(`_httpcore`): together they hold each socket operation to the attempt's deadline and tell how
far the attempt got, which is how a failure is classified as "not sent" or "unknown"
(`base.Wire`). Where a pool has no httpcore layer (a mock or custom transport passed in),
only the exception's type classifies a failure, and the async transport bounds the whole
attempt with the loop's attempt timer (`_timer`).

After each reply the connection it came on is looked at before it goes back to the pool:
bytes left over after a complete response make it unusable (an answer is never taken for a
request it does not answer), and it may idle only as long as the server's ``Keep-Alive:
timeout=N`` allows (`_keepalive`). A pool the client makes caps its connections at 100
(httpx's default), and waiting for one counts against the attempt.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, Generic, TypeVar

import httpx

from .._environment import Environment, Proxy
from .._reply import Body, Reply
from .._request import PreparedRequest
from .._steps import Attempt
from .._text import REDACTED
from ..errors import APIConnectionError
from . import _httpcore
from ._fork import close_inherited, fork_generation
from ._keepalive import KEEPALIVE_EXPIRY, MAX_KEEPALIVE_EXPIRY, keepalive_expiry
from ._loop import (
    ClosedWithItsLoop,
    LoopBinding,
    aclose_on_its_loop,
    asyncio_module,
    close_from_outside,
)
from ._timer import bounded
from .base import (
    WIRE_IN_PROGRESS,
    TooLateToSend,
    TransportBase,
    Wire,
    connection_error,
    is_timeout,
    too_late_error,
)

T = TypeVar("T")
HttpT = TypeVar("HttpT", httpx.Client, httpx.AsyncClient)

#: httpx exceptions after which the request cannot have reached the server whole.
_NOT_SENT = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.ProxyError,
    httpx.UnsupportedProtocol,
    httpx.LocalProtocolError,
)
#: A pool of ours holds at most this many connections (httpx's own default): above a few
#: hundred, httpcore's pool bookkeeping costs more than the event loop can give it.
MAX_CONNECTIONS = 100


def own_client(kind: type[T], environment: Environment, timeout: float | None = None) -> T:
    """A pool made by the client, from the environment as it was read when the client was made
    (`_environment`): its proxy (credentials given apart, as httpx's proxy auth), TLS verified
    against its CA locations; redirects off, ~/.netrc not read, at most `MAX_CONNECTIONS`;
    each connection's idle life is set by its replies (`_after_reply`). The clients give each
    request its own timeouts; `timeout` is for other users of a pool (the contract test)."""
    proxy = environment.proxy
    return kind(  # type: ignore[call-arg]
        timeout=timeout,
        follow_redirects=False,
        trust_env=False,
        proxy=None if proxy is None else _httpx_proxy(proxy),
        verify=environment.tls_context(),
        limits=httpx.Limits(
            max_connections=MAX_CONNECTIONS,
            max_keepalive_connections=MAX_CONNECTIONS,
            keepalive_expiry=MAX_KEEPALIVE_EXPIRY,
        ),
    )


def _httpx_proxy(proxy: Proxy) -> httpx.Proxy:
    auth = None if proxy.user is None else (proxy.user, proxy.password or "")
    return httpx.Proxy(proxy.url, auth=auth)


def _after_reply(response: httpx.Response, *, complete: bool, owned: bool) -> None:
    """Before the connection goes back to the pool: never reuse it if bytes no request asked
    for are waiting on it; let it idle as long as the server's ``Keep-Alive: timeout=N``
    allows (a pool of ours: else `KEEPALIVE_EXPIRY`) or no longer than that (a pool passed in,
    whose own expiry still applies)."""
    stream = response.extensions.get("network_stream")
    if not isinstance(stream, (_httpcore.Stream, _httpcore.AsyncStream)):
        return
    if complete and _httpcore.has_stray_bytes(response):
        stream.idle.unusable = True
        return
    expiry = keepalive_expiry(response.headers)
    if expiry is None and owned:
        expiry = KEEPALIVE_EXPIRY
    if expiry is not None:
        stream.idle.reusable_until = time.monotonic() + expiry


E = TypeVar("E", bound=BaseException)


def _scrub(exc: E) -> E:
    """`exc` with the credentials masked in the request it carries (an error of a body)."""
    try:
        sent = exc.request  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError):  # not an httpx error, or one without a request
        return exc
    if isinstance(sent, httpx.Request):
        for name in _CREDENTIALS:
            if name in sent.headers:
                sent.headers[name] = REDACTED
    return exc


def _cause(exc: Exception) -> Exception:
    """What our error keeps as its cause: an httpx error of the same type and message with no
    request attached (the request holds the body, and the body the LiveKit token)."""
    if not isinstance(exc, httpx.RequestError):
        return exc
    try:
        bare = type(exc)(str(exc))
    except TypeError:  # a subclass with another constructor: the request masked instead
        return _scrub(exc)
    bare.__traceback__ = exc.__traceback__
    return bare


#: Request headers that carry a credential.
_CREDENTIALS = ("x-api-key", "proxy-authorization", "authorization")


def _failure(request: PreparedRequest[Any], wire: Wire, exc: Exception) -> APIConnectionError:
    """The one place an httpx exception becomes ours; timeouts are classified here, once."""
    _scrub(exc)
    timed_out = isinstance(exc, httpx.TimeoutException) or is_timeout(exc)
    return connection_error(
        request,
        exc,
        timed_out=timed_out,
        outcome=wire.outcome(not_sent=isinstance(exc, _NOT_SENT) or wire.tunnelling),
        connecting=isinstance(exc, httpx.ConnectTimeout) or wire.tunnelling,
    )


#: Parsed URLs kept per pool of ours (one per operation path; ids in paths make more).
_MAX_URLS = 64


class _Builder:
    """Builds each attempt's `httpx.Request`.

    On a pool the client made, the request is built directly from the prepared one: its
    headers are complete, the pool has no defaults, cookies or parameters to merge, and the
    parsed URL is kept, so httpx's `build_request` (URL parsing and header merging on every
    call) is skipped; a pool of ours therefore sends no cookies a server set. A pool passed in
    goes through `build_request`, so its own default headers, cookies and parameters apply.
    """

    __slots__ = ("_trace", "_urls", "owned")

    def __init__(self, *, owned: bool, sync: bool) -> None:
        self.owned = owned
        self._urls: dict[str, httpx.URL] = {}
        self._trace = _httpcore.on_event if sync else _httpcore.on_event_async

    def __call__(
        self,
        http: httpx.Client | httpx.AsyncClient,
        request: PreparedRequest[Any],
        attempt: Attempt,
    ) -> httpx.Request:
        timeout, connect = attempt.timeout, attempt.connect_timeout
        if not self.owned:
            built = http.build_request(
                request.method,
                request.url,
                content=request.content,
                headers=request.headers,
                timeout=httpx.Timeout(timeout, connect=connect),
            )
            built.extensions["trace"] = self._trace
            return built
        url = self._urls.get(request.url)
        if url is None:
            if len(self._urls) >= _MAX_URLS:
                self._urls.clear()
            url = self._urls[request.url] = httpx.URL(request.url)
        return httpx.Request(
            request.method,
            url,
            content=request.content,
            headers=request.headers,
            extensions={
                "timeout": {"connect": connect, "read": timeout, "write": timeout, "pool": timeout},
                "trace": self._trace,
            },
        )


def _body(response: httpx.Response) -> Body:
    if response.is_stream_consumed:  # built in memory (a mock transport): already decoded
        return Body(response.status_code)
    return Body(response.status_code, response.headers.get("content-encoding"))


def _overdue(response: httpx.Response, wire: Wire) -> bool:
    """Whether a chunk arriving now comes too late. Only asked where the socket is not watched
    (a custom transport streaming its body); a body already in memory has all arrived, and a
    body whose last chunk came in time is whole, whatever the clock says after it."""
    return not wire.observed and not response.is_stream_consumed and wire.time_left() < 0


def _feed(body: Body, chunk: bytes, overdue: bool) -> bool:
    """Take a chunk; True when reading must stop (the limit passed, or the chunk came late)."""
    if overdue:
        body.fail(httpx.ReadTimeout("the attempt's time ran out during the body"))
        return True
    return body.feed(chunk)


class _HttpxPool(TransportBase, Generic[HttpT]):
    """An httpx pool with our network backend in it: made here, or passed in (never closed
    here). In a child process after ``fork``, the parent's connections are never reused and a
    pool of ours is made anew."""

    _kind: type[HttpT]

    def __init__(self, http: HttpT | None, *, environment: Environment) -> None:
        self.owns = http is None
        self._environment = environment
        self.http: HttpT = http if http is not None else own_client(self._kind, environment)
        self._backends = _httpcore.install(self.http, hedge=self._hedges)
        self._build = _Builder(owned=self.owns, sync=self._kind is httpx.Client)
        self._closed = False
        self._generation = fork_generation()

    @property
    def closed(self) -> bool:
        return self._closed or self.http.is_closed

    @property
    def _hedges(self) -> bool:
        """Whether connects are hedged (`_hedge`): a pool of ours, connecting directly (a
        caller's pool connects as its owner built it; a proxy is connected to once)."""
        return self.owns and self._environment.proxy is None

    def _after_fork(self) -> None:
        close_inherited(_httpcore.forget_inherited(self._backends))
        if self.owns:
            self.http = own_client(self._kind, self._environment)
            self._backends = _httpcore.install(self.http, hedge=self._hedges)


class HttpxTransport(_HttpxPool[httpx.Client]):
    """Sends with an `httpx.Client`: redirects never followed, bodies read raw and bounded."""

    _kind = httpx.Client

    def __init__(self, http: httpx.Client | None, *, environment: Environment) -> None:
        super().__init__(http, environment=environment)
        #: The requests let into httpcore's pool at once (see `AsyncHttpxTransport._slot`).
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def send(self, request: PreparedRequest[Any], attempt: Attempt) -> Reply:
        self._ready()
        http = self.http
        wire = Wire(attempt)
        slots = self._slots
        if not slots.acquire(blocking=False) and not slots.acquire(
            timeout=max(0.0, wire.send_by - time.monotonic())
        ):
            raise too_late_error(request, TooLateToSend(wire.time_left()))
        token = WIRE_IN_PROGRESS.set(wire)
        failure: APIConnectionError
        cause: Exception | None
        try:
            try:
                response = http.send(
                    self._build(http, request, attempt), stream=True, follow_redirects=False
                )
            except TooLateToSend as signal:
                failure, cause = too_late_error(request, signal), None
            except httpx.HTTPError as exc:
                failure, cause = _failure(request, wire, exc), _cause(exc)
            else:
                return self._read(response, wire)
        finally:
            WIRE_IN_PROGRESS.reset(token)
            slots.release()
        raise failure from cause  # outside the handler: no raw httpx error as its context

    def _read(self, response: httpx.Response, wire: Wire) -> Reply:
        body = _body(response)
        complete = False
        try:
            for chunk in _raw(response):
                if _feed(body, chunk, _overdue(response, wire)):
                    break
            else:
                complete = True
        except httpx.HTTPError as exc:
            body.fail(_cause(exc))
        finally:
            _after_reply(response, complete=complete, owned=self.owns)
            response.close()
        return Reply(response.status_code, response.reason_phrase, response.headers, body)

    def close(self) -> None:
        self._closed = True
        if self.owns:
            self.http.close()


def _raw(response: httpx.Response) -> Iterator[bytes]:
    """The body's raw bytes. Read from the stream itself, not `iter_raw`, which closes the
    response (handing its connection back to the pool) before `_after_reply` has looked."""
    if response.is_stream_consumed:
        return iter((response.content,))
    stream = response.stream
    if not isinstance(stream, httpx.SyncByteStream):
        raise TypeError("an async response on the sync client")
    return iter(stream)


class AsyncHttpxTransport(_HttpxPool[httpx.AsyncClient]):
    """Sends with an `httpx.AsyncClient`: the same as `HttpxTransport`, awaited. Where the
    network backend could not be installed (a custom transport), the whole attempt is bounded
    by its timeout instead."""

    _kind = httpx.AsyncClient

    def __init__(self, http: httpx.AsyncClient | None, *, environment: Environment) -> None:
        super().__init__(http, environment=environment)
        self._loop = LoopBinding()
        self._slots: Any = None  # an asyncio.Semaphore of MAX_CONNECTIONS, on the bound loop
        self._end = ClosedWithItsLoop()

    def _after_fork(self) -> None:
        super()._after_fork()
        if self.owns:  # a pool of ours starts afresh, and may serve the child's own loop
            self._loop = LoopBinding()
            self._slots = None
            self._end = ClosedWithItsLoop()

    async def _slot(self, wire: Wire) -> Any:
        """A place among the `MAX_CONNECTIONS` requests this transport lets into httpcore's
        pool at once, waited for only while the request could still be sent. httpcore looks
        over every queued request on each change of its pool, so thousands queued there would
        stall the event loop; they queue here instead, in order."""
        slots = self._slots
        if slots is None:
            slots = self._slots = asyncio_module().Semaphore(MAX_CONNECTIONS)
        if not slots.locked():
            await slots.acquire()  # free: no wait, no timer
            return slots
        waiting = wire.send_by - time.monotonic()
        try:
            if waiting <= 0:
                raise TimeoutError
            await asyncio_module().wait_for(slots.acquire(), waiting)
        except Exception as exc:
            if not is_timeout(exc):
                raise
            raise TooLateToSend(wire.time_left()) from None
        return slots

    async def send(self, request: PreparedRequest[Any], attempt: Attempt) -> Reply:
        self._ready()
        self._loop.check("AsyncAvatarioClient")
        if self.owns and not self._end.armed:
            await self._end.arm(self.http.aclose)
        wire = Wire(attempt)
        try:
            return await bounded(
                request,
                wire,
                lambda: self._exchange(request, attempt, wire),
                # The backend holds every phase to the deadline and httpx's pool timeout
                # bounds the wait for a connection (not sent); without it, bound it all here.
                bound=None if self._backends else attempt.timeout,
                caught=lambda exc: isinstance(exc, httpx.HTTPError) or is_timeout(exc),
                failure=_failure,
                scrub=_cause,
                deadlines=self._loop.deadlines(),
            )
        except TooLateToSend as signal:
            raise too_late_error(request, signal) from None

    async def _exchange(self, request: PreparedRequest[Any], attempt: Attempt, wire: Wire) -> Reply:
        slots = await self._slot(wire)
        try:
            return await self._send_in_slot(request, attempt, wire)
        finally:
            slots.release()

    async def _send_in_slot(
        self, request: PreparedRequest[Any], attempt: Attempt, wire: Wire
    ) -> Reply:
        http = self.http
        response = await http.send(
            self._build(http, request, attempt), stream=True, follow_redirects=False
        )
        body = _body(response)
        reply = wire.reply = Reply(
            response.status_code, response.reason_phrase, response.headers, body
        )
        complete = False
        try:
            async for chunk in _araw(response):
                if _feed(body, chunk, _overdue(response, wire)):
                    break
            else:
                complete = True
        except httpx.HTTPError as exc:
            body.fail(_cause(exc))
        finally:
            _after_reply(response, complete=complete, owned=self.owns)
            await response.aclose()
        return reply

    async def aclose(self) -> None:
        self._closed = True
        if self.owns:
            self._end.disarm()
            await aclose_on_its_loop(self._loop, self.http.aclose)

    def close_from_sync(self) -> None:
        """`aclose` for synchronous code (a sync fixture's teardown): no loop runs here."""
        self._closed = True
        if self.owns and self._loop.loop is not None:
            self._end.disarm()
            close_from_outside(self._loop.loop, self.http.aclose, in_a_coroutine=False)


async def _araw(response: httpx.Response) -> AsyncIterator[bytes]:
    """The body's raw bytes, read from the stream itself (see `_raw`)."""
    if response.is_stream_consumed:
        yield response.content
        return
    stream = response.stream
    if not isinstance(stream, httpx.AsyncByteStream):
        raise TypeError("a sync response on the async client")
    async for chunk in stream:
        yield chunk
